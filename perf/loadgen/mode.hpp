// A load generator protocol ("mode"): how to build request number `seq` of a
// connection and how to read and check its reply. Each mode lives in its own
// file (mode_echo.cpp; the kv app adds memcache and resp) and registers in
// make_mode().
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "percore/stream.hpp"

namespace loadgen {

struct mode_options {
    std::size_t size = 64;        // payload bytes per request
    std::uint64_t keys = 100000;  // key space (kv modes)
    unsigned set_ratio = 1;       // kv modes: sets per (set_ratio + get_ratio) requests
    unsigned get_ratio = 9;
};

class mode {
  public:
    virtual ~mode() = default;
    // Appends request `seq` of connection `conn_id` to out.
    virtual void make_request(unsigned conn_id, std::uint64_t seq, std::string& out) = 0;
    // Reads the reply to request `seq`; false if any byte differs from what
    // was expected (or the peer closed mid-reply).
    virtual bool check_reply(unsigned conn_id, std::uint64_t seq, percore::input_stream& in) = 0;
};

// The mode called `name`; throws percore::config_error for an unknown one.
std::unique_ptr<mode> make_mode(const std::string& name, const mode_options& options);

std::unique_ptr<mode> make_echo_mode(const mode_options& options);
std::unique_ptr<mode> make_memcache_mode(const mode_options& options);
std::unique_ptr<mode> make_resp_mode(const mode_options& options);

}  // namespace loadgen
