// The Redis commands of the kv app: the command table (names, arities, how a
// command reaches its keys) and the single-key commands, which run on the
// key's owner shard against its store and append their RESP reply. The
// connection side (batching, multi-shard commands, connection state) is in
// resp_server.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "store/store.hpp"

namespace percore::kv {

// Every command (and internal per-key step of a multi-key command) the RESP
// front end knows.
enum class resp_cmd : std::uint8_t {
    // Single key, run on the owner shard (argv[1] is the key).
    get,
    set,
    getdel,
    getex,
    setnx,
    setex,
    psetex,
    incr,
    decr,
    incrby,
    decrby,
    incrbyfloat,
    append,
    strlen,
    getrange,
    setrange,
    expire,
    pexpire,
    expireat,
    pexpireat,
    ttl,
    pttl,
    persist,
    type,
    // Multi-key: split per key and combined on the connection's shard.
    mget,
    mset,
    del,
    unlink,
    exists,
    // Whole-keyspace or cross-shard, run by the connection's shard.
    msetnx,
    dbsize,
    flushdb,
    flushall,
    keys,
    scan,
    randomkey,
    info,
    bgrewriteaof,
    // Connection and server, no key.
    ping,
    echo,
    auth,
    hello,
    select,
    client,
    command,
    config,
    quit,
    shutdown,
    time,
    lastsave,
    // Internal steps of multi-key commands (argv holds just the key [value]).
    // They come last: keyed_key() tells them apart by that.
    step_mget,
    step_mset,
    step_del,
    step_exists,
};

// How a command reaches the store.
enum class resp_kind : std::uint8_t {
    keyed,       // one key at argv[1]: run on its owner shard
    multi_key,   // keys (or key/value pairs) from argv[1]: one step per key on its owner
    keyspace,    // every shard (or a cross-shard protocol): after the pipeline so far
    connection,  // no key: answered on the connection's shard
};

// One row of the command table (Redis 7's COMMAND INFO, in short).
struct resp_command_info {
    std::string_view name;  // lower case, as Redis names it in errors
    resp_cmd cmd;
    resp_kind kind;
    int arity;                          // Redis style: n exact, -n at least n (name included)
    bool write;                         // modifies the keyspace
    bool no_auth;                       // allowed before AUTH
    int first_key, last_key, key_step;  // COMMAND's key positions
    std::string_view group;             // COMMAND DOCS group
    std::string_view summary;           // COMMAND DOCS summary
};

// Looks a command up by name, any case; nullptr if unknown. No allocation.
const resp_command_info* find_resp_command(std::string_view name) noexcept;
// The whole table, for COMMAND, COMMAND COUNT and COMMAND DOCS.
std::span<const resp_command_info> resp_command_table() noexcept;

// Settings the commands need wherever they run (read-only after start).
struct resp_settings {
    std::size_t proto_max_bulk_len = 512 * 1024 * 1024;     // also caps APPEND/SETRANGE results
    std::size_t max_output_buffer = std::size_t{64} << 20;  // --max-output-buffer
};

// Runs one keyed command or per-key step on the calling (owner) shard's
// store and appends its complete reply to `out`. argv is the request as
// sent (for steps: key [value]). The arity was checked by the caller.
void execute_keyed(resp_cmd cmd, std::span<const std::string_view> argv, store& st,
                   const resp_settings& settings, std::string& out);
// The key execute_keyed works on: argv[0] for a step, argv[1] otherwise.
inline std::string_view keyed_key(resp_cmd cmd, std::span<const std::string_view> argv) noexcept {
    return cmd >= resp_cmd::step_mget ? argv[0] : argv[1];
}

// ASCII case-insensitive equality: command names and options.
bool iequals(std::string_view a, std::string_view b) noexcept;

// Redis's glob matching (stringmatchlen): *, ?, [a-z], [^x], backslash escapes.
bool resp_glob_match(std::string_view pattern, std::string_view text) noexcept;

// Formats a long double as Redis's INCRBYFLOAT does ("%.17Lf" without
// trailing zeros).
std::string format_resp_float(long double value);
// Parses a float as Redis's string2ld; false if not a valid float.
bool parse_resp_float(std::string_view text, long double& value) noexcept;

// Error texts shared by both sides (without '-' and CRLF).
namespace resp_errors {
inline constexpr std::string_view not_integer = "ERR value is not an integer or out of range";
inline constexpr std::string_view syntax = "ERR syntax error";
inline constexpr std::string_view no_auth = "NOAUTH Authentication required.";
inline constexpr std::string_view no_disk =
    "ERR out of disk: the change cannot be logged in --data-dir, write refused";
inline constexpr std::string_view out_of_memory =
    "OOM command not allowed when used memory > 'maxmemory'.";
}  // namespace resp_errors

}  // namespace percore::kv
