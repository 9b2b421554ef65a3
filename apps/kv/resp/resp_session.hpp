// One Redis client connection of the kv app's RESP front end: its client
// state (auth, name, id), the loop that reads and parses its requests,
// batches keyed ones per owner shard (submit_to) and writes the replies in
// request order. The connection-level commands live in
// resp_connection_commands.cpp, the loop in resp_session.cpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "percore/clock.hpp"
#include "percore/net.hpp"
#include "resp/resp_commands.hpp"
#include "resp/resp_parser.hpp"
#include "resp/resp_writer.hpp"

namespace percore::kv {

class resp_frontend;
struct resp_shared;

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
    bool overflow = false;          // stopped: out passed --max-output-buffer
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
    std::size_t begin = 0;            // first byte not consumed
    std::size_t end = 0;              // end of the bytes read
    std::size_t looked_ahead_to = 0;  // look_ahead() saw the requests before this offset
    std::vector<std::string_view> args;
    std::vector<shard_batch> batches;
    std::vector<reply_plan> plans;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> refs;  // (shard, op index)
    std::string local;
};

// Small text helpers shared by the session and its connection commands.
// Upper-cased copy of an ASCII string (for "Try CLIENT HELP." errors).
inline std::string upper(std::string_view s) {
    std::string r(s);
    for (char& c : r) {
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    }
    return r;
}

// A C-string view of an argument (Redis formats errors with %s: a NUL ends it).
inline std::string_view c_str_view(std::string_view s) {
    return s.substr(0, s.find('\0'));
}

// Redis's "unknown command" error text, with the first arguments quoted.
inline std::string unknown_command_error(const resp_args& args) {
    std::string tail;
    for (std::size_t i = 1; i < args.size() && tail.size() < 128; ++i) {
        tail += '\'';
        tail += c_str_view(args[i]).substr(0, 128 - tail.size() + 1);
        tail += "' ";
    }
    return "ERR unknown command '" + std::string(c_str_view(args[0]).substr(0, 128)) +
           "', with args beginning with: " + tail;
}

// Redis's wrong-arity error text for `name`.
inline std::string arity_error(std::string_view name) {
    return "ERR wrong number of arguments for '" + std::string(name) + "' command";
}

// Whether argc fits a Redis arity (n exact, -n at least n).
inline bool arity_ok(int arity, std::size_t argc) noexcept {
    return arity > 0 ? argc == static_cast<std::size_t>(arity)
                     : argc >= static_cast<std::size_t>(-arity);
}

// One connection: its client state and the loop that serves it. Built and
// run by resp_frontend::serve on the connection's shard.
class resp_session {
  public:
    resp_session(resp_frontend& fe, percore::connection& conn);

    // Serves the connection until EOF, QUIT, a protocol error or an I/O
    // error (thrown): then nullopt. Or until the client has sent
    // `move_after` requests in a row that all ran on one other shard (a
    // hot key, a client working on one key or hash tag): then that shard,
    // to which the caller hands the connection and this session (rebind())
    // so that its requests stop paying a cross-shard hop each. The bar
    // doubles at each move, so a client whose keys drift cannot ping-pong.
    std::optional<unsigned> run();
    // Binds the session to the connection and front end of the shard it
    // moved to (after run() named that shard).
    void rebind(resp_frontend& fe, percore::connection& conn) noexcept;

    static constexpr std::string_view redis_version = "7.0.0";

  private:
    // Makes room for what the parser wants and reads; false at EOF or when
    // the request would pass the query buffer limit (Redis closes then too).
    bool read_more();
    void look_ahead(const resp_args& current);
    void send();

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
    void add_step(resp_cmd cmd, const resp_args& argv, std::size_t first, std::size_t count);
    void plan(reply_plan::mode how, std::size_t header_begin, std::size_t steps);
    void handle(const resp_args& argv);
    void handle_multi_key(const resp_command_info& info, const resp_args& argv);
    // Runs the pending batch on every owner shard (this one inline, the others
    // through submit_to, all at once) and appends the replies in order.
    void flush();
    std::string_view fragment(std::pair<std::uint32_t, std::uint32_t> ref) const;
    void assemble();
    // Drops the pending batch's replies, answers an error and closes: the
    // replies passed --max-output-buffer.
    void output_overflow();
    // Logs a connection closed by --idle-timeout; `what` says what it was
    // waiting for ("idle for", ...).
    void log_idle_timeout(std::string_view what) const;

    // Connection-level commands (resp_connection_commands.cpp).
    void handle_connection_command(const resp_command_info& info, const resp_args& argv);
    // Checks a password as Redis's default user does; false after replying.
    bool check_credentials(std::string_view user, std::string_view pass);
    void cmd_auth(const resp_args& argv);
    static bool valid_client_name(std::string_view name);
    void cmd_hello(const resp_args& argv);
    std::string client_info_line() const;
    void cmd_client(const resp_args& argv);
    static void command_info(resp_writer& w, const resp_command_info& c);
    void cmd_command(const resp_args& argv);
    void cmd_config(const resp_args& argv);

    // Counts a batch (or a request run at once) toward moving the client:
    // `shard` ran all of its keyed steps, or none when it was this one.
    void note_owner(unsigned shard) noexcept;
    // Answers GET `key` (hash: key_hash(key)) from the store of `owner`,
    // another shard, without a cross-shard call (store::read_shared); false
    // when that store takes no shared reads or writes kept racing the read.
    bool get_shared(unsigned owner, std::string_view key, std::uint64_t hash);
    // The shard to move to, when the client qualifies now (see run()).
    std::optional<unsigned> move_target() noexcept;

    resp_frontend* fe_;
    resp_shared& shared_;
    percore::connection* conn_;
    std::shared_ptr<connection_state> state_;
    resp_parser parser_;
    std::string out_;
    std::string name_;
    std::chrono::seconds idle_{0};             // --idle-timeout (0: none)
    std::optional<time_point> partial_since_;  // when the incomplete request began
    std::uint64_t id_ = 0;
    bool authenticated_ = true;
    bool closing_ = false;
    // Moving to the owner shard (run()): the shard the recent requests all
    // ran on, how many in a row did, and how many must.
    unsigned affine_shard_ = 0;
    std::uint32_t affine_streak_ = 0;
    std::uint32_t move_after_ = 16;
};

}  // namespace percore::kv
