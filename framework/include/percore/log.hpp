// Logging: spdlog, with the shard id in every line ("[shard 1]", or "[main]"
// off the shards) so interleaved output from many shards stays readable.
#pragma once

#include <spdlog/spdlog.h>

#include <string_view>

namespace percore {

// The process-wide logger (stderr). Safe from any thread.
spdlog::logger& logger();

// Sets the level by name: trace, debug, info, warn, error, critical, off.
// Throws config_error for anything else.
void set_log_level(std::string_view level);

}  // namespace percore
