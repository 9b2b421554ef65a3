// The Redis command table (names, arities, key positions, COMMAND DOCS text),
// its lookup, and the name and glob matching the commands share.
#include "resp/resp_commands.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <iterator>

namespace percore::kv {

namespace {

using K = resp_kind;
using C = resp_cmd;

// name, cmd, kind, arity, write, no_auth, first key, last key, step, group, summary
constexpr resp_command_info table[] = {
    {"get", C::get, K::keyed, 2, false, false, 1, 1, 1, "string", "Get the value of a key"},
    {"set", C::set, K::keyed, -3, true, false, 1, 1, 1, "string", "Set the string value of a key"},
    {"getdel", C::getdel, K::keyed, 2, true, false, 1, 1, 1, "string",
     "Get the value of a key and delete the key"},
    {"getex", C::getex, K::keyed, -2, true, false, 1, 1, 1, "string",
     "Get the value of a key and optionally set its expiration"},
    {"setnx", C::setnx, K::keyed, 3, true, false, 1, 1, 1, "string",
     "Set the value of a key, only if the key does not exist"},
    {"setex", C::setex, K::keyed, 4, true, false, 1, 1, 1, "string",
     "Set the value and expiration of a key"},
    {"psetex", C::psetex, K::keyed, 4, true, false, 1, 1, 1, "string",
     "Set the value and expiration in milliseconds of a key"},
    {"incr", C::incr, K::keyed, 2, true, false, 1, 1, 1, "string",
     "Increment the integer value of a key by one"},
    {"decr", C::decr, K::keyed, 2, true, false, 1, 1, 1, "string",
     "Decrement the integer value of a key by one"},
    {"incrby", C::incrby, K::keyed, 3, true, false, 1, 1, 1, "string",
     "Increment the integer value of a key by the given amount"},
    {"decrby", C::decrby, K::keyed, 3, true, false, 1, 1, 1, "string",
     "Decrement the integer value of a key by the given number"},
    {"incrbyfloat", C::incrbyfloat, K::keyed, 3, true, false, 1, 1, 1, "string",
     "Increment the float value of a key by the given amount"},
    {"append", C::append, K::keyed, 3, true, false, 1, 1, 1, "string", "Append a value to a key"},
    {"strlen", C::strlen, K::keyed, 2, false, false, 1, 1, 1, "string",
     "Get the length of the value stored in a key"},
    {"getrange", C::getrange, K::keyed, 4, false, false, 1, 1, 1, "string",
     "Get a substring of the string stored at a key"},
    {"setrange", C::setrange, K::keyed, 4, true, false, 1, 1, 1, "string",
     "Overwrite part of a string at key starting at the specified offset"},
    {"expire", C::expire, K::keyed, -3, true, false, 1, 1, 1, "generic",
     "Set a key's time to live in seconds"},
    {"pexpire", C::pexpire, K::keyed, -3, true, false, 1, 1, 1, "generic",
     "Set a key's time to live in milliseconds"},
    {"expireat", C::expireat, K::keyed, -3, true, false, 1, 1, 1, "generic",
     "Set the expiration for a key as a UNIX timestamp"},
    {"pexpireat", C::pexpireat, K::keyed, -3, true, false, 1, 1, 1, "generic",
     "Set the expiration for a key as a UNIX timestamp specified in milliseconds"},
    {"ttl", C::ttl, K::keyed, 2, false, false, 1, 1, 1, "generic",
     "Get the time to live for a key in seconds"},
    {"pttl", C::pttl, K::keyed, 2, false, false, 1, 1, 1, "generic",
     "Get the time to live for a key in milliseconds"},
    {"persist", C::persist, K::keyed, 2, true, false, 1, 1, 1, "generic",
     "Remove the expiration from a key"},
    {"type", C::type, K::keyed, 2, false, false, 1, 1, 1, "generic",
     "Determine the type stored at key"},
    {"mget", C::mget, K::multi_key, -2, false, false, 1, -1, 1, "string",
     "Get the values of all the given keys"},
    {"mset", C::mset, K::multi_key, -3, true, false, 1, -1, 2, "string",
     "Set multiple keys to multiple values"},
    {"del", C::del, K::multi_key, -2, true, false, 1, -1, 1, "generic", "Delete a key"},
    {"unlink", C::unlink, K::multi_key, -2, true, false, 1, -1, 1, "generic",
     "Delete a key asynchronously in another thread"},
    {"exists", C::exists, K::multi_key, -2, false, false, 1, -1, 1, "generic",
     "Determine if a key exists"},
    {"msetnx", C::msetnx, K::keyspace, -3, true, false, 1, -1, 2, "string",
     "Set multiple keys to multiple values, only if none of the keys exist"},
    {"dbsize", C::dbsize, K::keyspace, 1, false, false, 0, 0, 0, "server",
     "Return the number of keys in the selected database"},
    {"flushdb", C::flushdb, K::keyspace, -1, true, false, 0, 0, 0, "server",
     "Remove all keys from the current database"},
    {"flushall", C::flushall, K::keyspace, -1, true, false, 0, 0, 0, "server",
     "Remove all keys from all databases"},
    {"keys", C::keys, K::keyspace, 2, false, false, 0, 0, 0, "generic",
     "Find all keys matching the given pattern"},
    {"scan", C::scan, K::keyspace, -2, false, false, 0, 0, 0, "generic",
     "Incrementally iterate the keys space"},
    {"randomkey", C::randomkey, K::keyspace, 1, false, false, 0, 0, 0, "generic",
     "Return a random key from the keyspace"},
    {"info", C::info, K::keyspace, -1, false, false, 0, 0, 0, "server",
     "Get information and statistics about the server"},
    {"bgrewriteaof", C::bgrewriteaof, K::keyspace, 1, false, false, 0, 0, 0, "server",
     "Asynchronously rewrite the append-only file"},
    {"ping", C::ping, K::connection, -1, false, false, 0, 0, 0, "connection", "Ping the server"},
    {"echo", C::echo, K::connection, 2, false, false, 0, 0, 0, "connection",
     "Echo the given string"},
    {"auth", C::auth, K::connection, -2, false, true, 0, 0, 0, "connection",
     "Authenticate to the server"},
    {"hello", C::hello, K::connection, -1, false, true, 0, 0, 0, "connection",
     "Handshake with Redis"},
    {"select", C::select, K::connection, 2, false, false, 0, 0, 0, "connection",
     "Change the selected database for the current connection"},
    {"client", C::client, K::connection, -2, false, false, 0, 0, 0, "connection",
     "A container for client connection commands"},
    {"command", C::command, K::connection, -1, false, false, 0, 0, 0, "server",
     "Get array of Redis command details"},
    {"config", C::config, K::connection, -2, false, false, 0, 0, 0, "server",
     "A container for server configuration commands"},
    {"quit", C::quit, K::connection, -1, false, true, 0, 0, 0, "connection",
     "Close the connection"},
    {"shutdown", C::shutdown, K::connection, -1, false, false, 0, 0, 0, "server",
     "Synchronously save the dataset to disk and then shut down the server"},
    {"time", C::time, K::connection, 1, false, false, 0, 0, 0, "server",
     "Return the current server time"},
};

// ASCII only, as Redis compares command names (no locale).
char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
    }
    return true;
}

namespace {

// Command names hashed, case folded, into an open-addressing table four
// times the size of the command table. Every request looks its name up: at
// pipeline 16, std::unordered_map's murmur hash and modulo were 2.5 % of
// kv's CPU; this is a multiply per byte and a mask.
class command_index {
  public:
    command_index() {
        static_assert(std::size(table) * 4 <= slots);
        for (const resp_command_info& c : table) {
            std::size_t i = hash(c.name) & (slots - 1);
            while (slot_[i]) i = (i + 1) & (slots - 1);
            slot_[i] = &c;
            longest_ = std::max(longest_, c.name.size());
        }
    }

    const resp_command_info* find(std::string_view name) const noexcept {
        if (name.size() > longest_) return nullptr;  // do not hash a huge argument
        for (std::size_t i = hash(name) & (slots - 1); slot_[i]; i = (i + 1) & (slots - 1)) {
            if (iequals(slot_[i]->name, name)) return slot_[i];
        }
        return nullptr;
    }

  private:
    static constexpr std::size_t slots = 256;

    static std::uint32_t hash(std::string_view name) noexcept {  // FNV-1a of the lower case
        std::uint32_t h = 2166136261u;
        for (char c : name) h = (h ^ static_cast<unsigned char>(ascii_lower(c))) * 16777619u;
        return h;
    }

    std::array<const resp_command_info*, slots> slot_{};
    std::size_t longest_ = 0;
};

}  // namespace

const resp_command_info* find_resp_command(std::string_view name) noexcept {
    static const command_index index;
    return index.find(name);
}

std::span<const resp_command_info> resp_command_table() noexcept {
    return table;
}

bool resp_glob_match(std::string_view pattern, std::string_view text) noexcept {
    // Redis's stringmatchlen, with a flag that stops retrying longer matches
    // once a '*' tail failed everywhere (keeps bad patterns linear-ish).
    struct matcher {
        static bool run(const char* p, std::size_t plen, const char* s, std::size_t slen,
                        bool& skip, int depth) {
            if (depth > 1000) return false;  // Redis's nesting guard
            while (plen && slen) {
                switch (p[0]) {
                    case '*':
                        while (plen > 1 && p[1] == '*') ++p, --plen;
                        if (plen == 1) return true;
                        while (slen) {
                            if (run(p + 1, plen - 1, s, slen, skip, depth + 1)) return true;
                            if (skip) return false;
                            ++s, --slen;
                        }
                        skip = true;
                        return false;
                    case '?':
                        ++s, --slen;
                        break;
                    case '[': {
                        ++p, --plen;
                        const bool negate = plen && p[0] == '^';
                        if (negate) ++p, --plen;
                        bool match = false;
                        for (;;) {
                            if (plen == 0) {
                                --p, ++plen;
                                break;
                            }
                            if (p[0] == '\\' && plen >= 2) {
                                ++p, --plen;
                                if (p[0] == s[0]) match = true;
                            } else if (p[0] == ']') {
                                break;
                            } else if (plen >= 3 && p[1] == '-') {
                                int lo = p[0], hi = p[2];
                                if (lo > hi) std::swap(lo, hi);
                                p += 2, plen -= 2;
                                if (s[0] >= lo && s[0] <= hi) match = true;
                            } else if (p[0] == s[0]) {
                                match = true;
                            }
                            ++p, --plen;
                        }
                        if (negate) match = !match;
                        if (!match) return false;
                        ++s, --slen;
                        break;
                    }
                    case '\\':
                        if (plen >= 2) ++p, --plen;
                        [[fallthrough]];
                    default:
                        if (p[0] != s[0]) return false;
                        ++s, --slen;
                        break;
                }
                ++p, --plen;
                if (slen == 0) {
                    while (plen && p[0] == '*') ++p, --plen;
                    break;
                }
            }
            return plen == 0 && slen == 0;
        }
    };
    bool skip = false;
    return matcher::run(pattern.data(), pattern.size(), text.data(), text.size(), skip, 0);
}

}  // namespace percore::kv
