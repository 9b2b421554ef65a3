// Cross-shard Redis commands. Each asks every shard (submit_to) and combines
// the answers on the connection's shard.
//
// MSETNX is all-or-nothing across shards. When all its keys live on one
// shard it is one non-suspending step there (atomic, as everything a store
// does between two suspensions). Otherwise the connection's shard
// coordinates a short stop of the other owner shards:
//   1. take the process-wide MSETNX token (one such MSETNX at a time, so two
//      coordinators can never wait for each other);
//   2. start a participant on every other owner shard: it checks its keys,
//      reports, then holds its shard (spins, running nothing else) until the
//      decision;
//   3. once all participants hold, check the local keys, decide, set the
//      local keys at once if committing, publish the decision;
//   4. participants set their keys on commit and let their shard go.
// Guarantee: no client, over either protocol, can see some of the keys set
// and not the others, and the keys are set only if none existed at the
// decision. The decision is one atomic word that the coordinator moves from
// pending to commit and a participant held past 2 s moves to abort, so a
// stuck coordinator can hold a shard for 2 s at most and every side obeys
// the same outcome. The price is that the other owner shards pause for the
// round trip (microseconds when idle; the coordinator's own shard keeps
// running). Not covered: a set refused for lack of memory on one shard after
// commit leaves the others set (the store cannot undo).
#include "resp/resp_keyspace.hpp"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

#include "percore/fiber.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"
#include "persistence_setup.hpp"
#include "resp/resp_parser.hpp"
#include "resp/resp_server.hpp"
#include "resp/resp_writer.hpp"

namespace percore::kv {

namespace {

using argv_t = std::span<const std::string_view>;

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(a[i])) !=
            std::tolower(static_cast<unsigned char>(b[i]))) {
            return false;
        }
    }
    return true;
}

// Walks a shard's whole store in chunks, yielding in between so that a big
// keyspace does not stall the shard.
template <typename F>
void walk_store(store& st, F&& fn) {
    std::size_t cursor = 0;
    do {
        cursor = st.scan(cursor, 1024, fn);
        maybe_yield();
    } while (cursor != 0);
}

void cmd_dbsize(resp_shared& shared, resp_writer& w) {
    auto sizes = invoke_on_all([&shared] { return shared.stores[this_shard_id()]->size(); });
    std::size_t total = 0;
    for (auto n : sizes) total += n;
    w.integer(static_cast<long long>(total));
}

void cmd_flush(resp_shared& shared, argv_t argv, resp_writer& w) {
    if (argv.size() > 2 ||
        (argv.size() == 2 && !iequals(argv[1], "sync") && !iequals(argv[1], "async"))) {
        return w.error(resp_errors::syntax);
    }
    ++shared.database->local().connections().flush_commands;
    // Refused like every write that cannot be logged now (see flush_all()).
    if (!all_shards_accepting_writes(*shared.database)) return w.error(resp_errors::no_disk);
    invoke_on_all([&shared] { shared.stores[this_shard_id()]->flush(); });
    w.ok();
}

void cmd_keys(resp_shared& shared, argv_t argv, resp_writer& w) {
    const std::string pattern(argv[1]);
    const bool all = pattern == "*";
    auto per_shard = invoke_on_all([&shared, &pattern, all] {
        std::vector<std::string> keys;
        walk_store(*shared.stores[this_shard_id()], [&](const item_view& it) {
            if (all || resp_glob_match(pattern, it.key)) keys.emplace_back(it.key);
        });
        return keys;
    });
    std::size_t n = 0;
    for (const auto& keys : per_shard) n += keys.size();
    w.array(n);
    for (const auto& keys : per_shard) {
        for (const auto& k : keys) w.bulk(k);
    }
}

// SCAN's cursor: position in one shard's table times the shard count, plus
// the shard. 0 starts at shard 0 and, returned, means the walk is over.
void cmd_scan(resp_shared& shared, argv_t argv, resp_writer& w) {
    const std::string cursor_text(argv[1]);
    char* end = nullptr;
    errno = 0;
    const unsigned long long cursor = std::strtoull(cursor_text.c_str(), &end, 10);
    if (cursor_text.empty() || std::isspace(static_cast<unsigned char>(cursor_text[0])) ||
        *end != '\0' || errno == ERANGE) {
        return w.error("ERR invalid cursor");
    }
    long long count = 10;
    std::string pattern;
    bool has_pattern = false;
    bool type_none = false;
    for (std::size_t j = 2; j < argv.size(); j += 2) {
        if (j + 1 >= argv.size()) return w.error(resp_errors::syntax);
        if (iequals(argv[j], "count")) {
            if (!parse_strict_int(argv[j + 1], count)) return w.error(resp_errors::not_integer);
            if (count < 1) return w.error(resp_errors::syntax);
        } else if (iequals(argv[j], "match")) {
            pattern.assign(argv[j + 1]);
            has_pattern = !(pattern == "*");
        } else if (iequals(argv[j], "type")) {
            type_none = !iequals(argv[j + 1], "string");  // every key here is a string
        } else {
            return w.error(resp_errors::syntax);
        }
    }
    const unsigned shards = shard_count();
    unsigned shard = static_cast<unsigned>(cursor % shards);
    std::size_t position = static_cast<std::size_t>(cursor / shards);
    struct page {
        std::size_t next;
        std::vector<std::string> keys;
    };
    const auto count_n = static_cast<std::size_t>(count);
    page p = submit_to(shard, [&shared, &pattern, has_pattern, type_none, position, count_n] {
                 page r;
                 r.next = shared.stores[this_shard_id()]->scan(
                     position, count_n, [&](const item_view& it) {
                         if (!type_none && (!has_pattern || resp_glob_match(pattern, it.key))) {
                             r.keys.emplace_back(it.key);
                         }
                     });
                 return r;
             }).get();
    unsigned long long next = 0;
    if (p.next != 0) {
        next = static_cast<unsigned long long>(p.next) * shards + shard;
    } else if (shard + 1 < shards) {
        next = shard + 1;  // position 0 of the next shard
    }
    w.array(2);
    w.bulk(std::to_string(next));
    w.array(p.keys.size());
    for (const auto& k : p.keys) w.bulk(k);
}

void cmd_randomkey(resp_shared& shared, resp_writer& w) {
    const unsigned shards = shard_count();
    static thread_local std::minstd_rand rng(static_cast<unsigned>(::getpid()) ^ this_shard_id());
    const unsigned first = static_cast<unsigned>(rng() % shards);
    for (unsigned i = 0; i < shards; ++i) {
        const unsigned shard = (first + i) % shards;
        auto key = submit_to(shard, [&shared] {
                       std::optional<std::string> found;
                       store& st = *shared.stores[this_shard_id()];
                       std::size_t cursor = 0;
                       do {
                           cursor = st.scan(cursor, 1, [&](const item_view& it) {
                               if (!found) found.emplace(it.key);
                           });
                       } while (!found && cursor != 0);
                       return found;
                   }).get();
        if (key) return w.bulk(*key);
    }
    w.null_bulk();
}

// --- MSETNX (see the top of this file) ---------------------------------------

enum decision : int { pending = 0, commit = 1, abort_txn = 2 };

struct msetnx_txn {
    std::atomic<int> decision{pending};
    std::atomic<unsigned> holding{0};    // participants that checked and now hold their shard
    std::atomic<unsigned> conflicts{0};  // participants that found a key
    std::atomic<unsigned> refused{0};    // participants whose log cannot take writes (disk full)
};

// Pairs (key, value) of one shard.
using pairs_t = std::vector<std::pair<std::string_view, std::string_view>>;

bool all_absent(store& st, const pairs_t& pairs) {
    return std::all_of(pairs.begin(), pairs.end(),
                       [&](const auto& kv) { return !st.peek(kv.first); });
}

void set_all(store& st, const pairs_t& pairs) {
    for (const auto& [k, v] : pairs) st.set(k, v);
}

void participate(msetnx_txn& txn, store& st, const pairs_t& pairs) {
    // Checked while holding: accepting_writes() cannot change until the
    // decision, since the shard runs nothing else meanwhile.
    if (!st.accepting_writes()) txn.refused.fetch_add(1, std::memory_order_relaxed);
    if (!all_absent(st, pairs)) txn.conflicts.fetch_add(1, std::memory_order_relaxed);
    txn.holding.fetch_add(1, std::memory_order_release);
    // Hold the shard: nothing else may touch this store until the decision.
    const auto give_up = clock::now() + std::chrono::seconds(2);
    int d = txn.decision.load(std::memory_order_acquire);
    for (unsigned spins = 0; d == pending; ++spins) {
        if ((spins & 1023) == 1023) {
            if (clock::now() >= give_up) {
                int expected = pending;
                txn.decision.compare_exchange_strong(expected, abort_txn,
                                                     std::memory_order_acq_rel);
                d = txn.decision.load(std::memory_order_acquire);
                break;
            }
            std::this_thread::yield();
        }
        d = txn.decision.load(std::memory_order_acquire);
    }
    if (d == commit) set_all(st, pairs);
}

void cmd_msetnx(resp_shared& shared, argv_t argv, resp_writer& w) {
    if ((argv.size() - 1) % 2 != 0)
        return w.error("ERR wrong number of arguments for 'msetnx' command");
    const unsigned shards = shard_count();
    const unsigned self = this_shard_id();
    std::vector<pairs_t> by_shard(shards);
    for (std::size_t i = 1; i < argv.size(); i += 2) {
        by_shard[owner_shard(argv[i], shards)].emplace_back(argv[i], argv[i + 1]);
    }
    std::vector<unsigned> remote;
    for (unsigned s = 0; s < shards; ++s) {
        if (s != self && !by_shard[s].empty()) remote.push_back(s);
    }
    if (remote.empty() || (remote.size() == 1 && by_shard[self].empty())) {
        // One owner: check and set in one step there.
        const unsigned owner = remote.empty() ? self : remote[0];
        enum outcome { exists, done, no_disk };
        const outcome r = submit_to(owner, [&shared, &pairs = by_shard[owner]] {
                              store& st = *shared.stores[this_shard_id()];
                              if (!st.accepting_writes()) return no_disk;
                              if (!all_absent(st, pairs)) return exists;
                              set_all(st, pairs);
                              return done;
                          }).get();
        if (r == no_disk) return w.error(resp_errors::no_disk);
        return w.integer(r == done ? 1 : 0);
    }

    while (shared.msetnx_token.exchange(true, std::memory_order_acquire)) yield();
    struct token_release {
        std::atomic<bool>& token;
        ~token_release() { token.store(false, std::memory_order_release); }
    } release{shared.msetnx_token};

    auto txn = std::make_shared<msetnx_txn>();
    // Whatever happens to this fiber, participants must not hold forever.
    struct abort_guard {
        msetnx_txn& txn;
        ~abort_guard() {
            int expected = pending;
            txn.decision.compare_exchange_strong(expected, abort_txn, std::memory_order_acq_rel);
        }
    } guard{*txn};

    std::vector<future<void>> calls;
    for (unsigned s : remote) {
        calls.push_back(submit_to(s, [txn, &shared, &pairs = by_shard[s]] {
            participate(*txn, *shared.stores[this_shard_id()], pairs);
        }));
    }
    const auto all_holding = static_cast<unsigned>(remote.size());
    while (txn->holding.load(std::memory_order_acquire) < all_holding) {
        // A participant that failed to start never holds: give up then.
        if (std::any_of(calls.begin(), calls.end(), [](auto& f) { return f.available(); })) break;
        yield();
    }
    bool committed = false;
    store& local = *shared.stores[self];
    const bool all_held = txn->holding.load(std::memory_order_acquire) == all_holding;
    const bool refused = all_held && (txn->refused.load(std::memory_order_relaxed) != 0 ||
                                      (!by_shard[self].empty() && !local.accepting_writes()));
    if (all_held && !refused && txn->conflicts.load(std::memory_order_relaxed) == 0) {
        if (all_absent(local, by_shard[self])) {
            int expected = pending;
            committed =
                txn->decision.compare_exchange_strong(expected, commit, std::memory_order_acq_rel);
            if (committed) set_all(local, by_shard[self]);  // no suspension since the check
        }
    }
    int expected = pending;
    txn->decision.compare_exchange_strong(expected, abort_txn, std::memory_order_acq_rel);
    for (auto& call : calls) call.get();
    if (refused) return w.error(resp_errors::no_disk);
    w.integer(committed ? 1 : 0);
}

// --- INFO --------------------------------------------------------------------

std::string human_bytes(std::size_t n) {
    char buf[32];
    if (n < 1024) {
        std::snprintf(buf, sizeof buf, "%zuB", n);
    } else if (n < 1024 * 1024) {
        std::snprintf(buf, sizeof buf, "%.2fK", static_cast<double>(n) / 1024);
    } else if (n < std::size_t{1} << 30) {
        std::snprintf(buf, sizeof buf, "%.2fM", static_cast<double>(n) / (1024 * 1024));
    } else {
        std::snprintf(buf, sizeof buf, "%.2fG", static_cast<double>(n) / (1 << 30));
    }
    return buf;
}

// INFO keyspace's expires and avg_ttl: the store keeps no count of keys with
// a TTL, so every shard's table is scanned (keys already expired but not yet
// removed are skipped). O(keys), in steps that yield, so a big table slows
// INFO, not the other clients of its shard.
struct expiry_census {
    std::uint64_t expires = 0;
    double ttl_ms_sum = 0;  // remaining TTLs of those keys
};

expiry_census count_expiring_keys(db& database) {
    return database.map_reduce(
        [](db_shard& shard) {
            expiry_census c;
            const time_point now = clock::now();
            std::size_t cursor = 0;
            do {
                cursor = shard.store().scan(cursor, 1024, [&](const item_view& v) {
                    if (v.expiry == no_expiry || v.expiry <= now) return;
                    ++c.expires;
                    c.ttl_ms_sum +=
                        std::chrono::duration<double, std::milli>(v.expiry - now).count();
                });
                maybe_yield();
            } while (cursor != 0);
            return c;
        },
        expiry_census{},
        [](expiry_census a, const expiry_census& b) {
            a.expires += b.expires;
            a.ttl_ms_sum += b.ttl_ms_sum;
            return a;
        });
}

void cmd_info(resp_shared& shared, argv_t argv, resp_writer& w) {
    // Both protocols' counters (db) and this front end's own, over all shards.
    const db_stats total = collect_stats(*shared.database);
    auto fronts = invoke_on_all([&shared] {
        auto* fe = shared.frontends[this_shard_id()];
        return fe ? fe->stats() : resp_stats{};
    });
    resp_stats front;
    for (const auto& f : fronts) {
        front.commands_processed += f.commands_processed;
        front.protocol_errors += f.protocol_errors;
        front.clients_moved += f.clients_moved;
    }
    std::uint64_t keys = 0;
    for (auto n : total.items_per_shard) keys += n;
    const db_config& config = shared.database->local().config();
    auto wanted = [&](std::string_view section, bool in_default) {
        if (argv.size() == 1) return in_default;
        for (std::size_t i = 1; i < argv.size(); ++i) {
            if (iequals(argv[i], section) || iequals(argv[i], "all") ||
                iequals(argv[i], "everything") || (in_default && iequals(argv[i], "default"))) {
                return true;
            }
        }
        return false;
    };
    const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::steady_clock::now() - shared.started)
                            .count();
    std::string out;
    auto line = [&](std::string_view k, const auto& v) {
        out += k;
        out += ':';
        if constexpr (std::is_arithmetic_v<std::decay_t<decltype(v)>>) {
            out += std::to_string(v);
        } else {
            out += v;
        }
        out += "\r\n";
    };
    auto section = [&](std::string_view title) {
        if (!out.empty()) out += "\r\n";
        out += "# ";
        out += title;
        out += "\r\n";
    };
    if (wanted("server", true)) {
        section("Server");
        line("redis_version", "7.0.0");
        line("redis_mode", "standalone");
        line("server_name", "percore-kv");
        line("multiplexing_api", "io_uring");
        line("arch_bits", 64);
        line("process_id", static_cast<long long>(::getpid()));
        line("shards", shard_count());
        line("tcp_port", shared.frontends[0] ? shared.frontends[0]->port() : shared.config.port);
        line("uptime_in_seconds", static_cast<long long>(uptime));
        line("uptime_in_days", static_cast<long long>(uptime / 86400));
    }
    if (wanted("clients", true)) {
        section("Clients");
        line("connected_clients", total.connections.curr_connections);  // both protocols
        line("maxclients", config.max_connections);
        line("blocked_clients", 0);
    }
    if (wanted("memory", true)) {
        section("Memory");
        line("used_memory", total.memory_used);
        line("used_memory_human", human_bytes(total.memory_used));
        line("maxmemory", config.max_memory);
        line("maxmemory_human", human_bytes(config.max_memory));
        line("maxmemory_policy", config.evict ? "allkeys-lru" : "noeviction");
    }
    if (wanted("stats", true)) {
        section("Stats");
        line("total_connections_received", total.connections.total_connections);
        line("total_commands_processed", front.commands_processed);
        line("total_error_replies_protocol", front.protocol_errors);
        line("rejected_connections", total.connections.rejected_connections);
        // Redis 7.2's name; both protocols' clients, like rejected_connections.
        line("client_output_buffer_limit_disconnections",
             total.connections.output_buffer_disconnections);
        line("expired_keys", total.store.expired);
        line("evicted_keys", total.store.evictions);
        line("keyspace_hits", total.store.get_hits);
        line("keyspace_misses", total.store.get_misses);
        // Clients moved to the shard their keys live on (resp_session::run).
        line("percore_clients_moved", front.clients_moved);
        // GETs answered from another shard's store without a hop (store/store.hpp).
        line("percore_shared_gets", total.store.shared_gets);
    }
    if (wanted("persistence", true)) {
        section("Persistence");
        const log_stats logs = collect_log_stats(*shared.database);
        line("aof_enabled", shared.database->local().log() ? 1 : 0);
        line("aof_rewrite_in_progress", logs.rewriting ? 1 : 0);
        line("aof_rewrites", logs.rewrites);
        line("aof_current_size", logs.log_bytes);
        line("percore_log_live_bytes", logs.live_bytes);  // a rewrite's size now
        line("aof_last_write_status", logs.disk_full || logs.failed ? "err" : "ok");
        // 1 once a write or fdatasync failed: writes are refused until a restart.
        line("percore_log_failed", logs.failed ? 1 : 0);
        line("aof_buffer_length", logs.buffered);  // unwritten records (--log-buffer-limit)
        line("percore_log_buffer_waits", logs.buffer_waits);
        line("percore_log_records", logs.records);
        line("percore_log_fsyncs", logs.syncs);
        line("percore_log_replayed", logs.replayed);
    }
    if (wanted("keyspace", true)) {
        section("Keyspace");
        if (keys > 0) {
            const expiry_census c = count_expiring_keys(*shared.database);
            const auto avg_ttl =
                c.expires == 0
                    ? std::uint64_t{0}
                    : static_cast<std::uint64_t>(c.ttl_ms_sum / static_cast<double>(c.expires));
            line("db0", "keys=" + std::to_string(keys) + ",expires=" + std::to_string(c.expires) +
                            ",avg_ttl=" + std::to_string(avg_ttl));
        }
    }
    w.bulk(out);
}

}  // namespace

void run_keyspace_command(resp_shared& shared, resp_cmd cmd, argv_t argv, std::string& out) {
    resp_writer w(out);
    switch (cmd) {
        case resp_cmd::dbsize:
            return cmd_dbsize(shared, w);
        case resp_cmd::flushdb:
        case resp_cmd::flushall:
            return cmd_flush(shared, argv, w);
        case resp_cmd::keys:
            return cmd_keys(shared, argv, w);
        case resp_cmd::scan:
            return cmd_scan(shared, argv, w);
        case resp_cmd::randomkey:
            return cmd_randomkey(shared, w);
        case resp_cmd::msetnx:
            return cmd_msetnx(shared, argv, w);
        case resp_cmd::info:
            return cmd_info(shared, argv, w);
        case resp_cmd::bgrewriteaof:  // compacts every shard's log (persistence_setup.hpp)
            if (!shared.database->local().log())
                return w.error("ERR no --data-dir: no log to rewrite");
            if (start_log_rewrites(*shared.database) == 0)
                return w.error("ERR Background append only file rewriting already in progress");
            return w.simple("Background append only file rewriting started");
        default:
            return w.error("ERR internal: not a keyspace command");
    }
}

}  // namespace percore::kv
