// The registry of modes: one line per mode.
#include "mode.hpp"
#include "percore/errors.hpp"

namespace loadgen {

std::unique_ptr<mode> make_mode(const std::string& name, const mode_options& options) {
    if (name == "echo") return make_echo_mode(options);
    if (name == "memcache") return make_memcache_mode(options);
    if (name == "resp") return make_resp_mode(options);
    throw percore::config_error("unknown --mode '" + name + "' (known: echo, memcache, resp)");
}

}  // namespace loadgen
