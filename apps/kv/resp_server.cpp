// The Redis front end's listeners and connections: reading, parsing,
// batching per owner shard, connection-level commands, replies in order.
#include "resp_server.hpp"

#include <sys/time.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <exception>
#include <optional>

#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/runtime.hpp"
#include "percore/smp.hpp"
#include "resp_keyspace.hpp"
#include "resp_writer.hpp"

namespace percore::kv {

namespace {

constexpr std::size_t initial_buffer = 16 * 1024;
constexpr std::size_t max_pending_requests = 512;   // per batch round
constexpr std::size_t send_threshold = 256 * 1024;  // write replies out past this

// One command (or per-key step) for one owner shard.
struct batch_op {
    resp_cmd cmd;
    std::uint32_t arg_begin;
    std::uint32_t arg_count;
};

// What one owner shard runs for a connection in one round, and its replies.
struct shard_batch {
    std::vector<batch_op> ops;
    std::string out;                // the ops' replies back to back
    std::vector<std::size_t> ends;  // ends[i]: where op i's reply ends in out
};

// How one request's reply is put together once the batch ran.
struct reply_plan {
    enum class mode : std::uint8_t {
        local,   // bytes in `local`
        concat,  // `local` bytes (a header), then every step's reply
        sum,     // ":N" with N the sum of the steps' 0/1 results (DEL, EXISTS)
        ok,      // "+OK" unless a step failed (MSET)
    };
    mode how;
    std::size_t local_begin, local_end;
    std::uint32_t first_ref, ref_count;
};

// A connection's input and pipeline: shared with the owner shards while they
// run its batch (they read the arguments, which point into `input`), so it
// lives as long as the last of them, even if the connection's fiber unwinds.
struct connection_state {
    std::unique_ptr<char[]> input;
    std::size_t capacity = 0;
    std::size_t begin = 0;  // first byte not consumed
    std::size_t end = 0;    // end of the bytes read
    std::vector<std::string_view> args;
    std::vector<shard_batch> batches;
    std::vector<reply_plan> plans;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> refs;  // (shard, op index)
    std::string local;
};

void run_batch(shard_batch& batch, const std::vector<std::string_view>& args, store& st,
               const resp_settings& settings) {
    batch.out.clear();
    batch.ends.clear();
    for (const batch_op& op : batch.ops) {
        execute_keyed(op.cmd, std::span(args.data() + op.arg_begin, op.arg_count), st, settings,
                      batch.out);
        batch.ends.push_back(batch.out.size());
    }
}

std::string upper(std::string_view s) {
    std::string r(s);
    for (char& c : r) {
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    }
    return r;
}

// A C-string view of an argument (Redis formats errors with %s: a NUL ends it).
std::string_view c_str_view(std::string_view s) {
    return s.substr(0, s.find('\0'));
}

std::string unknown_command_error(const resp_args& args) {
    std::string tail;
    for (std::size_t i = 1; i < args.size() && tail.size() < 128; ++i) {
        tail += '\'';
        tail += c_str_view(args[i]).substr(0, 128 - tail.size() + 1);
        tail += "' ";
    }
    return "ERR unknown command '" + std::string(c_str_view(args[0]).substr(0, 128)) +
           "', with args beginning with: " + tail;
}

std::string arity_error(std::string_view name) {
    return "ERR wrong number of arguments for '" + std::string(name) + "' command";
}

bool arity_ok(int arity, std::size_t argc) noexcept {
    return arity > 0 ? argc == static_cast<std::size_t>(arity)
                     : argc >= static_cast<std::size_t>(-arity);
}

}  // namespace

resp_shared::resp_shared(resp_config c, db& d)
    : config(std::move(c)),
      database(&d),
      stores(shard_count(), nullptr),
      frontends(shard_count(), nullptr) {
    settings.proto_max_bulk_len = config.proto_max_bulk_len;
}

// One connection: its client state and the loop that serves it.
class resp_frontend::connection_handler {
  public:
    connection_handler(resp_frontend& fe, percore::connection& conn)
        : fe_(fe), shared_(fe.shared_), conn_(conn), state_(std::make_shared<connection_state>()) {
        resp_limits limits;
        limits.max_bulk_len = shared_.config.proto_max_bulk_len;
        parser_ = resp_parser(limits);
        authenticated_ = shared_.config.requirepass.empty();
        parser_.set_authenticated(authenticated_);
        id_ = shared_.next_client_id.fetch_add(1, std::memory_order_relaxed);
        state_->input = std::make_unique<char[]>(initial_buffer);
        state_->capacity = initial_buffer;
        state_->batches.resize(shard_count());
    }

    void run() {
        connection_state& s = *state_;
        for (;;) {
            while (!closing_) {
                auto st = parser_.parse({s.input.get() + s.begin, s.end - s.begin});
                if (st == resp_parser::status::need_more) break;
                if (st == resp_parser::status::error) {
                    ++fe_.stats_.protocol_errors;
                    flush();
                    resp_writer(out_).error(parser_.error());
                    closing_ = true;
                    break;
                }
                s.begin += parser_.consumed();
                if (!parser_.args().empty()) handle(parser_.args());
                if (s.plans.size() >= max_pending_requests || out_.size() >= send_threshold) {
                    flush();
                    if (out_.size() >= send_threshold) send();
                }
            }
            flush();
            send();
            if (closing_) return;
            if (!read_more()) return;
        }
    }

  private:
    // Makes room for what the parser wants and reads; false at EOF or when
    // the request would pass the query buffer limit (Redis closes then too).
    bool read_more() {
        connection_state& s = *state_;
        const std::size_t have = s.end - s.begin;
        const std::size_t wanted = std::max(parser_.bytes_wanted(), have + 1);
        if (wanted > shared_.config.client_query_buffer_limit) {
            logger().warn(
                "resp: closing client id={} that reached max query buffer length ({} bytes)", id_,
                wanted);
            return false;
        }
        if (s.begin > 0) {
            std::memmove(s.input.get(), s.input.get() + s.begin, have);
            s.begin = 0;
            s.end = have;
        }
        std::size_t capacity = s.capacity;
        if (wanted > capacity) {
            capacity =
                std::min(std::max(wanted, capacity * 2), shared_.config.client_query_buffer_limit);
        } else if (capacity > 4 * initial_buffer && wanted <= initial_buffer) {
            capacity = initial_buffer;  // a big request is done: give the memory back
        }
        if (capacity != s.capacity) {
            auto bigger = std::make_unique<char[]>(capacity);
            std::memcpy(bigger.get(), s.input.get(), have);
            s.input = std::move(bigger);
            s.capacity = capacity;
        }
        const std::size_t n = conn_.read({s.input.get() + s.end, s.capacity - s.end});
        if (n == 0) return false;
        s.end += n;
        return true;
    }

    void send() {
        if (out_.empty()) return;
        conn_.write_all(std::string_view(out_));
        out_.clear();
        if (out_.capacity() > 4 * send_threshold) out_.shrink_to_fit();
    }

    // Writes a reply now when nothing is pending, else after the pending ones.
    template <typename F>
    void local_reply(F&& write) {
        connection_state& s = *state_;
        if (s.plans.empty()) {
            resp_writer w(out_);
            write(w);
            return;
        }
        const std::size_t begin = s.local.size();
        resp_writer w(s.local);
        write(w);
        s.plans.push_back({reply_plan::mode::local, begin, s.local.size(), 0, 0});
    }
    void local_error(std::string_view text) {
        local_reply([&](resp_writer& w) { w.error(text); });
    }

    // Queues one step on `key`'s owner; args [first, first + count) of argv.
    // The key is argv[first], or argv[1] for a whole keyed command (first 0).
    void add_step(resp_cmd cmd, const resp_args& argv, std::size_t first, std::size_t count) {
        connection_state& s = *state_;
        const unsigned owner = owner_shard(argv[first == 0 ? 1 : first], shard_count());
        auto& batch = s.batches[owner];
        s.refs.emplace_back(owner, static_cast<std::uint32_t>(batch.ops.size()));
        batch.ops.push_back(
            {cmd, static_cast<std::uint32_t>(s.args.size()), static_cast<std::uint32_t>(count)});
        for (std::size_t i = 0; i < count; ++i) s.args.push_back(argv[first + i]);
    }

    void plan(reply_plan::mode how, std::size_t header_begin, std::size_t steps) {
        connection_state& s = *state_;
        s.plans.push_back({how, header_begin, s.local.size(),
                           static_cast<std::uint32_t>(s.refs.size() - steps),
                           static_cast<std::uint32_t>(steps)});
    }

    void handle(const resp_args& argv) {
        ++fe_.stats_.commands_processed;
        const resp_command_info* info = find_resp_command(argv[0]);
        if (!info) return local_error(unknown_command_error(argv));
        if (!arity_ok(info->arity, argv.size())) return local_error(arity_error(info->name));
        if (!authenticated_ && !info->no_auth) return local_error(resp_errors::no_auth);
        connection_state& s = *state_;
        switch (info->kind) {
            case resp_kind::keyed: {
                const unsigned owner = owner_shard(argv[1], shard_count());
                if (s.plans.empty() && owner == this_shard_id()) {
                    // Nothing pending: run it now, no batch needed.
                    s.args.assign(argv.size(), {});
                    for (std::size_t i = 0; i < argv.size(); ++i) s.args[i] = argv[i];
                    execute_keyed(info->cmd, s.args, *shared_.stores[owner], shared_.settings,
                                  out_);
                    s.args.clear();
                    return;
                }
                add_step(info->cmd, argv, 0, argv.size());
                return plan(reply_plan::mode::concat, s.local.size(), 1);
            }
            case resp_kind::multi_key:
                return handle_multi_key(*info, argv);
            case resp_kind::keyspace: {
                flush();
                std::vector<std::string_view> copy(argv.size());
                for (std::size_t i = 0; i < argv.size(); ++i) copy[i] = argv[i];
                return run_keyspace_command(shared_, info->cmd, copy, out_);
            }
            case resp_kind::connection:
                return handle_connection_command(*info, argv);
        }
    }

    void handle_multi_key(const resp_command_info& info, const resp_args& argv) {
        connection_state& s = *state_;
        const std::size_t keys = argv.size() - 1;
        switch (info.cmd) {
            case resp_cmd::mget: {
                const std::size_t header = s.local.size();
                resp_writer(s.local).array(keys);
                for (std::size_t i = 1; i < argv.size(); ++i)
                    add_step(resp_cmd::step_mget, argv, i, 1);
                return plan(reply_plan::mode::concat, header, keys);
            }
            case resp_cmd::mset: {
                if (keys % 2 != 0) return local_error(arity_error(info.name));
                for (std::size_t i = 1; i < argv.size(); i += 2)
                    add_step(resp_cmd::step_mset, argv, i, 2);
                return plan(reply_plan::mode::ok, s.local.size(), keys / 2);
            }
            default: {  // del, unlink, exists
                const resp_cmd step =
                    info.cmd == resp_cmd::exists ? resp_cmd::step_exists : resp_cmd::step_del;
                for (std::size_t i = 1; i < argv.size(); ++i) add_step(step, argv, i, 1);
                return plan(reply_plan::mode::sum, s.local.size(), keys);
            }
        }
    }

    // Runs the pending batch on every owner shard (this one inline, the others
    // through submit_to, all at once) and appends the replies in order.
    void flush() {
        connection_state& s = *state_;
        if (s.plans.empty()) return;
        const unsigned self = this_shard_id();
        std::vector<future<void>> calls;
        for (unsigned shard = 0; shard < s.batches.size(); ++shard) {
            if (shard == self || s.batches[shard].ops.empty()) continue;
            calls.push_back(submit_to(shard, [state = state_, shard, shared = &shared_] {
                run_batch(state->batches[shard], state->args, *shared->stores[shard],
                          shared->settings);
            }));
        }
        if (!s.batches[self].ops.empty()) {
            run_batch(s.batches[self], s.args, *shared_.stores[self], shared_.settings);
        }
        std::exception_ptr failure;
        for (auto& call : calls) {
            try {
                call.get();
            } catch (...) {
                if (!failure) failure = std::current_exception();
            }
        }
        if (failure) std::rethrow_exception(failure);
        assemble();
    }

    std::string_view fragment(std::pair<std::uint32_t, std::uint32_t> ref) const {
        const shard_batch& b = state_->batches[ref.first];
        const std::size_t begin = ref.second == 0 ? 0 : b.ends[ref.second - 1];
        return std::string_view(b.out).substr(begin, b.ends[ref.second] - begin);
    }

    void assemble() {
        connection_state& s = *state_;
        resp_writer w(out_);
        for (const reply_plan& p : s.plans) {
            out_.append(s.local, p.local_begin, p.local_end - p.local_begin);
            const auto* ref = s.refs.data() + p.first_ref;
            switch (p.how) {
                case reply_plan::mode::local:
                    break;
                case reply_plan::mode::concat:
                    for (std::uint32_t i = 0; i < p.ref_count; ++i) out_.append(fragment(ref[i]));
                    break;
                case reply_plan::mode::sum: {
                    long long total = 0;
                    for (std::uint32_t i = 0; i < p.ref_count; ++i)
                        total += fragment(ref[i]) == "1";
                    w.integer(total);
                    break;
                }
                case reply_plan::mode::ok: {
                    std::string_view failed;
                    for (std::uint32_t i = 0; i < p.ref_count && failed.empty(); ++i)
                        failed = fragment(ref[i]);
                    failed.empty() ? w.ok() : (void)out_.append(failed);
                    break;
                }
            }
        }
        s.plans.clear();
        s.refs.clear();
        s.args.clear();
        s.local.clear();
        for (auto& b : s.batches) b.ops.clear();
    }

    void handle_connection_command(const resp_command_info& info, const resp_args& argv) {
        switch (info.cmd) {
            case resp_cmd::ping:
                if (argv.size() > 2) return local_error(arity_error("ping"));
                return local_reply(
                    [&](resp_writer& w) { argv.size() == 2 ? w.bulk(argv[1]) : w.simple("PONG"); });
            case resp_cmd::echo:
                return local_reply([&](resp_writer& w) { w.bulk(argv[1]); });
            case resp_cmd::auth:
                return cmd_auth(argv);
            case resp_cmd::hello:
                return cmd_hello(argv);
            case resp_cmd::select: {
                long long db = 0;
                if (!parse_strict_int(argv[1], db) || db < INT32_MIN || db > INT32_MAX) {
                    return local_error(resp_errors::not_integer);
                }
                if (db != 0) return local_error("ERR DB index is out of range");
                return local_reply([](resp_writer& w) { w.ok(); });
            }
            case resp_cmd::client:
                return cmd_client(argv);
            case resp_cmd::command:
                return cmd_command(argv);
            case resp_cmd::config:
                return cmd_config(argv);
            case resp_cmd::quit:
                closing_ = true;
                return local_reply([](resp_writer& w) { w.ok(); });
            case resp_cmd::shutdown:
                logger().warn("resp: SHUTDOWN from client id={}", id_);
                closing_ = true;
                request_app_stop();
                return;  // Redis closes without a reply
            case resp_cmd::time: {
                timeval tv{};
                gettimeofday(&tv, nullptr);
                return local_reply([&](resp_writer& w) {
                    w.array(2);
                    w.bulk(std::to_string(tv.tv_sec));
                    w.bulk(std::to_string(tv.tv_usec));
                });
            }
            default:
                return local_error("ERR internal: not a connection command");
        }
    }

    // Checks a password as Redis's default user does; false after replying.
    bool check_credentials(std::string_view user, std::string_view pass) {
        const auto& required = shared_.config.requirepass;
        if (user == "default" && (required.empty() || pass == required)) {
            authenticated_ = true;
            parser_.set_authenticated(true);
            return true;
        }
        local_error("WRONGPASS invalid username-password pair or user is disabled.");
        return false;
    }

    void cmd_auth(const resp_args& argv) {
        if (argv.size() > 3) return local_error(resp_errors::syntax);
        if (argv.size() == 2 && shared_.config.requirepass.empty()) {
            return local_error(
                "ERR AUTH <password> called without any password configured for the default user. "
                "Are you sure your configuration is correct?");
        }
        const bool ok = argv.size() == 2 ? check_credentials("default", argv[1])
                                         : check_credentials(argv[1], argv[2]);
        if (ok) local_reply([](resp_writer& w) { w.ok(); });
    }

    static bool valid_client_name(std::string_view name) {
        return std::all_of(name.begin(), name.end(), [](char c) { return c >= '!' && c <= '~'; });
    }

    void cmd_hello(const resp_args& argv) {
        if (argv.size() >= 2) {
            long long version = 0;
            if (!parse_strict_int(argv[1], version)) {
                return local_error("ERR Protocol version is not an integer or out of range");
            }
            // Only RESP2 here: RESP3 is not implemented.
            if (version != 2) return local_error("NOPROTO unsupported protocol version");
        }
        std::optional<std::string_view> user, pass, name;
        for (std::size_t j = 2; j < argv.size(); ++j) {
            const std::size_t more = argv.size() - 1 - j;
            if (iequals(argv[j], "auth") && more >= 2) {
                user = argv[j + 1];
                pass = argv[j + 2];
                j += 2;
            } else if (iequals(argv[j], "setname") && more >= 1) {
                name = argv[j + 1];
                if (!valid_client_name(*name)) {
                    return local_error(
                        "ERR Client names cannot contain spaces, newlines or special characters.");
                }
                ++j;
            } else {
                return local_error("ERR Syntax error in HELLO option '" +
                                   std::string(c_str_view(argv[j])) + "'");
            }
        }
        if (user && !check_credentials(*user, *pass)) return;
        if (!authenticated_) {
            return local_error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
                "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client "
                "and "
                "select the RESP protocol version at the same time");
        }
        if (name) name_.assign(*name);
        local_reply([&](resp_writer& w) {
            w.array(14);
            w.bulk("server");
            w.bulk("redis");
            w.bulk("version");
            w.bulk(redis_version);
            w.bulk("proto");
            w.integer(2);
            w.bulk("id");
            w.integer(static_cast<long long>(id_));
            w.bulk("mode");
            w.bulk("standalone");
            w.bulk("role");
            w.bulk("master");
            w.bulk("modules");
            w.array(0);
        });
    }

    std::string client_info_line() const {
        std::string addr = "?";
        try {
            addr = conn_.peer_address().to_string();
        } catch (const std::exception& e) {
            addr = std::string("? (") + e.what() + ")";
        }
        return "id=" + std::to_string(id_) + " addr=" + addr + " name=" + name_ + " db=0 resp=2\n";
    }

    void cmd_client(const resp_args& argv) {
        const std::string_view sub = argv[1];
        auto arity = [&](std::string_view name, std::size_t n) {
            if (argv.size() == n) return true;
            local_error(arity_error("client|" + std::string(name)));
            return false;
        };
        if (iequals(sub, "id")) {
            if (arity("id", 2))
                local_reply([&](resp_writer& w) { w.integer(static_cast<long long>(id_)); });
        } else if (iequals(sub, "setname")) {
            if (!arity("setname", 3)) return;
            if (!valid_client_name(argv[2])) {
                return local_error(
                    "ERR Client names cannot contain spaces, newlines or special characters.");
            }
            name_.assign(argv[2]);
            local_reply([](resp_writer& w) { w.ok(); });
        } else if (iequals(sub, "getname")) {
            if (arity("getname", 2)) {
                local_reply([&](resp_writer& w) { name_.empty() ? w.null_bulk() : w.bulk(name_); });
            }
        } else if (iequals(sub, "info")) {
            if (arity("info", 2)) local_reply([&](resp_writer& w) { w.bulk(client_info_line()); });
        } else if (iequals(sub, "help")) {
            local_reply([](resp_writer& w) {
                w.array(5);
                w.simple("CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:");
                w.simple("ID: Return the ID of the current connection.");
                w.simple("GETNAME: Return the name of the current connection.");
                w.simple("SETNAME <name>: Assign the name <name> to the current connection.");
                w.simple("INFO: Return information about the current client connection.");
            });
        } else {
            local_error("ERR unknown subcommand '" + std::string(c_str_view(sub).substr(0, 128)) +
                        "'. Try " + upper(argv[0]) + " HELP.");
        }
    }

    static void command_info(resp_writer& w, const resp_command_info& c) {
        w.array(10);
        w.bulk(c.name);
        w.integer(c.arity);
        const bool data = c.kind != resp_kind::connection;
        w.array((data ? 1 : 0) + (c.no_auth ? 1 : 0));
        if (data) w.simple(c.write ? "write" : "readonly");
        if (c.no_auth) w.simple("no_auth");
        w.integer(c.first_key);
        w.integer(c.last_key);
        w.integer(c.key_step);
        w.array(1);
        w.simple("@" + std::string(c.group));
        w.array(0);  // tips
        w.array(0);  // key specs
        w.array(0);  // subcommands
    }

    void cmd_command(const resp_args& argv) {
        const auto all = resp_command_table();
        if (argv.size() == 1) {
            return local_reply([&](resp_writer& w) {
                w.array(all.size());
                for (const auto& c : all) command_info(w, c);
            });
        }
        const std::string_view sub = argv[1];
        if (iequals(sub, "count")) {
            if (argv.size() != 2) return local_error(arity_error("command|count"));
            return local_reply(
                [&](resp_writer& w) { w.integer(static_cast<long long>(all.size())); });
        }
        if (iequals(sub, "list")) {
            return local_reply([&](resp_writer& w) {
                w.array(all.size());
                for (const auto& c : all) w.bulk(c.name);
            });
        }
        if (iequals(sub, "info")) {
            return local_reply([&](resp_writer& w) {
                if (argv.size() == 2) {
                    w.array(all.size());
                    for (const auto& c : all) command_info(w, c);
                    return;
                }
                w.array(argv.size() - 2);
                for (std::size_t i = 2; i < argv.size(); ++i) {
                    const auto* c = find_resp_command(argv[i]);
                    c ? command_info(w, *c) : w.null_bulk();
                }
            });
        }
        if (iequals(sub, "docs")) {
            std::vector<const resp_command_info*> wanted;
            if (argv.size() == 2) {
                for (const auto& c : all) wanted.push_back(&c);
            } else {
                for (std::size_t i = 2; i < argv.size(); ++i) {
                    if (const auto* c = find_resp_command(argv[i])) wanted.push_back(c);
                }
            }
            return local_reply([&](resp_writer& w) {
                w.array(wanted.size() * 2);
                for (const auto* c : wanted) {
                    w.bulk(c->name);
                    w.array(6);
                    w.bulk("summary");
                    w.bulk(c->summary);
                    w.bulk("since");
                    w.bulk("1.0.0");
                    w.bulk("group");
                    w.bulk(c->group);
                }
            });
        }
        local_error("ERR unknown subcommand '" + std::string(c_str_view(sub).substr(0, 128)) +
                    "'. Try " + upper(argv[0]) + " HELP.");
    }

    void cmd_config(const resp_args& argv) {
        const std::string_view sub = argv[1];
        if (!iequals(sub, "get")) {
            return local_error("ERR unknown subcommand '" +
                               std::string(c_str_view(sub).substr(0, 128)) + "'. Try " +
                               upper(argv[0]) + " HELP.");
        }
        if (argv.size() < 3) return local_error(arity_error("config|get"));
        // What clients such as redis-benchmark ask for; the rest is not configurable at run time.
        const std::pair<std::string_view, std::string> params[] = {
            {"save", ""},
            {"appendonly", "no"},
            {"databases", "1"},
            {"requirepass", shared_.config.requirepass},
            {"proto-max-bulk-len", std::to_string(shared_.config.proto_max_bulk_len)},
            {"client-query-buffer-limit", std::to_string(shared_.config.client_query_buffer_limit)},
            {"maxclients", std::to_string(shared_.database->local().config().max_connections)},
            {"port", std::to_string(fe_.port_)},
        };
        std::vector<const std::pair<std::string_view, std::string>*> hits;
        for (const auto& p : params) {
            for (std::size_t i = 2; i < argv.size(); ++i) {
                std::string lower(argv[i]);
                for (char& c : lower)
                    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                if (resp_glob_match(lower, p.first)) {
                    hits.push_back(&p);
                    break;
                }
            }
        }
        local_reply([&](resp_writer& w) {
            w.array(hits.size() * 2);
            for (const auto* p : hits) {
                w.bulk(p->first);
                w.bulk(p->second);
            }
        });
    }

  public:
    static constexpr std::string_view redis_version = "7.0.0";

  private:
    resp_frontend& fe_;
    resp_shared& shared_;
    percore::connection& conn_;
    std::shared_ptr<connection_state> state_;
    resp_parser parser_;
    std::string out_;
    std::string name_;
    std::uint64_t id_ = 0;
    bool authenticated_ = true;
    bool closing_ = false;
};

resp_frontend::resp_frontend(resp_shared& shared) : shared_(shared) {}

resp_frontend::~resp_frontend() = default;

void resp_frontend::start(std::uint16_t port) {
    const std::uint16_t wanted = port != 0 ? port : shared_.config.port;
    listener_ = listen(socket_address::inet(shared_.config.host, wanted));
    port_ = listener_.local_address().port();
    shared_.frontends[this_shard_id()] = this;
    acceptor_ = spawn({.name = "resp-accept"}, [this] { accept_loop(); });
}

void resp_frontend::accept_loop() {
    for (;;) {
        percore::connection conn;
        try {
            conn = listener_.accept();
        } catch (const io_error& e) {
            if (!listener_.is_open()) return;  // stop() closed it
            logger().warn("resp: accept on port {} failed: {}", port_, e.what());
            continue;
        } catch (const shutdown_error&) {
            return;
        }
        ++stats_.connections_received;
        // --max-connections counts both protocols' connections.
        if (!shared_.database->local().admit_connection()) {
            ++stats_.rejected_connections;
            try {
                conn.write_all(std::string_view("-ERR max number of clients reached\r\n"));
            } catch (const std::exception& e) {
                logger().debug("resp: refusing a client: {}", e.what());
            }
            continue;
        }
        gate::holder hold(gate_);
        spawn({.name = "resp-conn"},
              [this, c = std::move(conn), h = std::move(hold)]() mutable { serve(std::move(c)); });
    }
}

void resp_frontend::serve(percore::connection conn) {
    live_.push_back(&conn);
    try {
        connection_handler handler(*this, conn);
        handler.run();
    } catch (const io_error& e) {
        // A peer that reset or went away, or stop() closing the socket.
        logger().debug("resp: connection ended: {}", e.what());
    } catch (const shutdown_error&) {
        // The shard is stopping.
    } catch (const std::exception& e) {
        logger().error("resp: connection failed: {}", e.what());
    }
    live_.erase(std::find(live_.begin(), live_.end(), &conn));
    shared_.database->local().release_connection();
}

void resp_frontend::stop() {
    listener_.close();
    if (acceptor_.valid()) {
        try {
            acceptor_.get();
        } catch (const std::exception& e) {
            logger().warn("resp: acceptor ended with: {}", e.what());
        }
    }
    // shutdown() does not suspend: each connection's fiber then sees EOF or
    // an error and ends (close() would wait on each in turn).
    for (auto* c : live_) {
        try {
            if (c->is_open()) c->shutdown(SHUT_RDWR);
        } catch (const io_error& e) {
            logger().debug("resp: shutdown at stop: {}", e.what());
        }
    }
    gate_.close();
    shared_.frontends[this_shard_id()] = nullptr;
}

std::vector<std::unique_ptr<resp_frontend>> start_resp_frontends(resp_shared& shared) {
    std::vector<std::unique_ptr<resp_frontend>> frontends(shard_count());
    std::uint16_t port = 0;
    try {
        for (unsigned s = 0; s < shard_count(); ++s) {
            port = submit_to(s, [&shared, &frontends, s, port] {
                       shared.stores[s] = &shared.database->local().store();
                       auto fe = std::make_unique<resp_frontend>(shared);
                       fe->start(port);
                       frontends[s] = std::move(fe);
                       return frontends[s]->port();
                   }).get();
        }
    } catch (...) {
        // Each front end must be stopped and destroyed on its own shard.
        stop_resp_frontends(frontends);
        throw;
    }
    return frontends;
}

void stop_resp_frontends(std::vector<std::unique_ptr<resp_frontend>>& frontends) {
    for (unsigned s = 0; s < frontends.size(); ++s) {
        if (!frontends[s]) continue;
        submit_to(s, [&frontends, s] {
            frontends[s]->stop();
            frontends[s].reset();
        }).get();
    }
}

}  // namespace percore::kv
