// Redis commands that span every shard, run from the connection's shard
// after the requests before them completed: DBSIZE, FLUSHDB/FLUSHALL, KEYS,
// SCAN, RANDOMKEY, INFO and the all-or-nothing MSETNX. Internal to the RESP
// front end (resp_server.cpp).
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "resp/resp_commands.hpp"

namespace percore::kv {

struct resp_shared;

// Runs a resp_kind::keyspace command (arity and AUTH already checked) and
// appends its reply to `out`. May suspend the calling fiber.
void run_keyspace_command(resp_shared& shared, resp_cmd cmd, std::span<const std::string_view> argv,
                          std::string& out);

}  // namespace percore::kv
