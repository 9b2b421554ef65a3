// One Redis client connection: the loop that reads and parses its requests,
// batches keyed ones per owner shard and writes the replies in order.
#include "resp/resp_session.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>

#include "client_log.hpp"
#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"
#include "persistence_setup.hpp"
#include "resp/resp_keyspace.hpp"
#include "resp/resp_server.hpp"
#include "server.hpp"

namespace percore::kv {

namespace {

constexpr std::size_t initial_buffer = 16 * 1024;
constexpr std::size_t max_pending_requests = 512;   // per batch round
constexpr std::size_t send_threshold = 256 * 1024;  // write replies out past this

// execute_keyed, but a fault in the command (e.g. bad_alloc) becomes its
// error reply, logged, instead of ending the connection or the process.
void run_keyed(resp_cmd cmd, std::span<const std::string_view> argv, store& st,
               const resp_settings& settings, std::string& out) {
    const std::size_t mark = out.size();
    try {
        execute_keyed(cmd, argv, st, settings, out);
    } catch (const std::exception& e) {
        client_log::failed_requests().error("resp: {} failed on shard {}: {}",
                                            c_str_view(argv[0]).substr(0, 64), this_shard_id(),
                                            e.what());
        out.resize(mark);
        resp_writer(out).error(std::string("ERR internal error: ") + e.what());
    }
}

void run_batch(shard_batch& batch, const std::vector<std::string_view>& args, store& st,
               const resp_settings& settings) {
    batch.out.clear();
    batch.ends.clear();
    batch.overflow = false;
    // --max-output-buffer, split between the shards that build the replies:
    // the first reply always fits (bounded by the value size); a batch whose
    // replies pile up past its share stops here.
    const std::size_t share = settings.max_output_buffer / shard_count();
    st.prefetch_keys(batch.ops.size(), [&](std::size_t i) {
        const batch_op& op = batch.ops[i];
        return keyed_key(op.cmd, std::span(args.data() + op.arg_begin, op.arg_count));
    });
    for (const batch_op& op : batch.ops) {
        if (!batch.out.empty() && batch.out.size() > share) {
            batch.overflow = true;
            return;
        }
        run_keyed(op.cmd, std::span(args.data() + op.arg_begin, op.arg_count), st, settings,
                  batch.out);
        batch.ends.push_back(batch.out.size());
    }
}

}  // namespace

resp_session::resp_session(resp_frontend& fe, percore::connection& conn)
    : fe_(&fe), shared_(fe.shared()), conn_(&conn), state_(std::make_shared<connection_state>()) {
    resp_limits limits;
    limits.max_bulk_len = shared_.config.proto_max_bulk_len;
    parser_ = resp_parser(limits);
    authenticated_ = shared_.config.requirepass.empty();
    parser_.set_authenticated(authenticated_);
    id_ = shared_.next_client_id.fetch_add(1, std::memory_order_relaxed);
    state_->input = std::make_unique<char[]>(initial_buffer);
    state_->capacity = initial_buffer;
    state_->batches.resize(shard_count());
    idle_ = shared_.database->local().config().idle_timeout;
}

void resp_session::rebind(resp_frontend& fe, percore::connection& conn) noexcept {
    fe_ = &fe;
    conn_ = &conn;
}

std::optional<unsigned> resp_session::run() {
    connection_state& s = *state_;
    for (;;) {
        s.looked_ahead_to = s.begin;  // new bytes: look at them
        while (!closing_) {
            auto st = parser_.parse({s.input.get() + s.begin, s.end - s.begin});
            if (st == resp_parser::status::need_more) break;
            if (st == resp_parser::status::error) {
                ++fe_->stats().protocol_errors;
                flush();
                resp_writer(out_).error(parser_.error());
                closing_ = true;
                break;
            }
            s.begin += parser_.consumed();
            partial_since_.reset();  // progress: a whole request came
            // More came with it (a pipeline): prefetch their keys together.
            if (s.begin < s.end && s.begin >= s.looked_ahead_to) look_ahead(parser_.args());
            if (!parser_.args().empty()) handle(parser_.args());
            if (s.plans.size() >= max_pending_requests || out_.size() >= send_threshold) {
                flush();
                if (out_.size() >= send_threshold) send();
            }
        }
        flush();
        send();
        if (closing_) return std::nullopt;
        if (s.end == s.begin) {
            if (auto target = move_target()) return target;
        }
        if (s.end > s.begin) {
            if (!partial_since_) partial_since_ = clock::now();
        } else {
            partial_since_.reset();
        }
        if (!read_more()) return std::nullopt;
    }
}

bool resp_session::get_shared(unsigned owner, std::string_view key, std::uint64_t hash) {
    const store& theirs = *shared_.stores[owner];
    if (!theirs.shared_reads_enabled()) return false;
    const unsigned self = this_shard_id();
    const auto found = theirs.read_shared_into(
        out_, key, hash, self, [&](const item_view& item) { resp_writer(out_).bulk(item.value); });
    if (found == store::shared_read::retry) return false;
    if (found == store::shared_read::miss) resp_writer(out_).null_bulk();
    shared_.stores[self]->count_shared_get(found == store::shared_read::hit);
    // Still a request for that shard: a client reading one key there moves
    // there too, where the key's lines stay in one core's cache.
    note_owner(owner);
    return true;
}

void resp_session::note_owner(unsigned shard) noexcept {
    if (shard == this_shard_id()) {
        affine_streak_ = 0;
    } else if (shard == affine_shard_) {
        ++affine_streak_;
    } else {
        affine_shard_ = shard;
        affine_streak_ = 1;
    }
}

std::optional<unsigned> resp_session::move_target() noexcept {
    if (affine_streak_ < move_after_) return std::nullopt;
    affine_streak_ = 0;
    move_after_ = std::min<std::uint32_t>(move_after_ * 2, 1u << 30);
    return affine_shard_;
}

// Prefetches the key of `current` (the request about to run) and of up to
// store::max_prefetch - 1 requests after it, those this shard owns, so that
// the lookups of a pipeline overlap their cache misses (store::prefetch).
// Only called when more bytes follow `current`: at pipeline 1 it costs
// nothing. Parsing ahead only reads the bytes (the requests are parsed again
// to run them), so this changes nothing but timing; it stops at an inline
// request, which parsing unescapes in place, and does nothing before AUTH
// (other parser limits).
void resp_session::look_ahead(const resp_args& current) {
    connection_state& s = *state_;
    s.looked_ahead_to = s.end;  // unless the window fills up below
    if (!authenticated_) return;
    std::array<std::uint64_t, store::max_prefetch> hashes;
    std::size_t owned = 0;
    const unsigned self = this_shard_id();
    auto add = [&](const resp_args& argv) {
        if (argv.size() < 2) return;
        const std::uint64_t hash = key_hash(argv[1]);
        if (owner_shard_of_hash(hash, shard_count()) == self) hashes[owned++] = hash;
    };
    add(current);
    resp_parser ahead(parser_.limits());
    std::size_t at = s.begin;
    for (std::size_t parsed = 1; parsed < hashes.size(); ++parsed) {
        if (at == s.end || s.input[at] != '*') break;
        if (ahead.parse({s.input.get() + at, s.end - at}) != resp_parser::status::complete) break;
        at += ahead.consumed();
        if (parsed + 1 == hashes.size()) s.looked_ahead_to = at;  // more may follow
        add(ahead.args());
    }
    shared_.stores[self]->prefetch(std::span(hashes.data(), owned));
}

// Makes room for what the parser wants and reads; false at EOF or when
// the request would pass the query buffer limit (Redis closes then too).
bool resp_session::read_more() {
    connection_state& s = *state_;
    const std::size_t have = s.end - s.begin;
    const std::size_t wanted = std::max(parser_.bytes_wanted(), have + 1);
    if (wanted > shared_.config.client_query_buffer_limit) {
        client_log::closed_connections().warn(
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
    std::size_t n = 0;
    try {
        n = conn_->read({s.input.get() + s.end, s.capacity - s.end},
                        idle_deadline(idle_, partial_since_));
    } catch (const timeout_error&) {
        if (!partial_since_) {
            log_idle_timeout("idle for");  // Redis closes idle clients silently too
            return false;
        }
        log_idle_timeout("sent an incomplete request for");
        write_with_timeout(*conn_, "-ERR request incomplete at --idle-timeout: closing\r\n",
                           std::chrono::seconds(1));
        return false;
    }
    if (n == 0) return false;
    s.end += n;
    return true;
}

void resp_session::send() {
    if (out_.empty()) return;
    shared_.database->local().sync();  // --fsync always: replies only once durable
    try {
        write_with_timeout(*conn_, out_, idle_);
    } catch (const timeout_error&) {
        log_idle_timeout("did not read its replies for");
        throw;
    }
    out_.clear();
    if (out_.capacity() > 4 * send_threshold) out_.shrink_to_fit();
}

// Queues one step on `key`'s owner; args [first, first + count) of argv.
// The key is argv[first], or argv[1] for a whole keyed command (first 0).
void resp_session::add_step(resp_cmd cmd, const resp_args& argv, std::size_t first,
                            std::size_t count) {
    connection_state& s = *state_;
    const unsigned owner = owner_shard(argv[first == 0 ? 1 : first], shard_count());
    auto& batch = s.batches[owner];
    s.refs.emplace_back(owner, static_cast<std::uint32_t>(batch.ops.size()));
    batch.ops.push_back(
        {cmd, static_cast<std::uint32_t>(s.args.size()), static_cast<std::uint32_t>(count)});
    for (std::size_t i = 0; i < count; ++i) s.args.push_back(argv[first + i]);
}

void resp_session::plan(reply_plan::mode how, std::size_t header_begin, std::size_t steps) {
    connection_state& s = *state_;
    s.plans.push_back({how, header_begin, s.local.size(),
                       static_cast<std::uint32_t>(s.refs.size() - steps),
                       static_cast<std::uint32_t>(steps)});
}

void resp_session::handle(const resp_args& argv) {
    ++fe_->stats().commands_processed;
    const resp_command_info* info = find_resp_command(argv[0]);
    if (!info) return local_error(unknown_command_error(argv));
    if (!arity_ok(info->arity, argv.size())) return local_error(arity_error(info->name));
    if (!authenticated_ && !info->no_auth) return local_error(resp_errors::no_auth);
    connection_state& s = *state_;
    switch (info->kind) {
        case resp_kind::keyed: {
            const std::uint64_t hash = key_hash(argv[1]);
            const unsigned owner = owner_shard_of_hash(hash, shard_count());
            if (s.plans.empty() && owner != this_shard_id() && info->cmd == resp_cmd::get &&
                get_shared(owner, argv[1], hash)) {
                return;
            }
            if (s.plans.empty() && owner == this_shard_id()) {
                // Nothing pending: run it now, no batch needed.
                note_owner(owner);
                for (std::size_t i = 0; i < argv.size(); ++i) s.args.push_back(argv[i]);
                run_keyed(info->cmd, s.args, *shared_.stores[owner], shared_.settings, out_);
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
            run_keyspace_command(shared_, info->cmd, copy, out_);
            return sync_all_shards(*shared_.database);  // --fsync always
        }
        case resp_kind::connection:
            return handle_connection_command(*info, argv);
    }
}

void resp_session::handle_multi_key(const resp_command_info& info, const resp_args& argv) {
    connection_state& s = *state_;
    const std::size_t keys = argv.size() - 1;
    switch (info.cmd) {
        case resp_cmd::mget: {
            const std::size_t header = s.local.size();
            resp_writer(s.local).array(keys);
            for (std::size_t i = 1; i < argv.size(); ++i) add_step(resp_cmd::step_mget, argv, i, 1);
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
void resp_session::flush() {
    connection_state& s = *state_;
    if (s.plans.empty()) return;
    const unsigned self = this_shard_id();
    unsigned owners = 0;
    unsigned owner = self;
    for (unsigned shard = 0; shard < s.batches.size(); ++shard) {
        if (!s.batches[shard].ops.empty()) ++owners, owner = shard;
    }
    note_owner(owners == 1 ? owner : self);  // a batch over several shards: no move
    std::vector<future<void>> calls;
    for (unsigned shard = 0; shard < s.batches.size(); ++shard) {
        if (shard == self || s.batches[shard].ops.empty()) continue;
        calls.push_back(submit_to(shard, [state = state_, shard, shared = &shared_] {
            run_batch(state->batches[shard], state->args, *shared->stores[shard], shared->settings);
            shared->database->local().sync();
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
    if (std::any_of(s.batches.begin(), s.batches.end(), [](auto& b) { return b.overflow; })) {
        return output_overflow();
    }
    assemble();
}

void resp_session::log_idle_timeout(std::string_view what) const {
    std::string addr = "?";
    try {
        addr = conn_->peer_address().to_string();
    } catch (const io_error&) {
        // Reset meanwhile: the id still names the client.
    }
    client_log::idle_timeouts().info("resp: closing client id={} addr={}: {} {} s (--idle-timeout)",
                                     id_, addr, what, idle_.count());
}

void resp_session::output_overflow() {
    connection_state& s = *state_;
    client_log::closed_connections().warn(
        "resp: closing client id={} whose pending replies passed --max-output-buffer ({} "
        "bytes)",
        id_, shared_.settings.max_output_buffer);
    ++shared_.database->local().connections().output_buffer_disconnections;
    // None of the batch's replies: a client must not take a partial pipeline
    // for a complete one.
    s.plans.clear();
    s.refs.clear();
    s.args.clear();
    s.local.clear();
    for (auto& b : s.batches) b.ops.clear();
    resp_writer(out_).error("ERR output buffer limit reached (--max-output-buffer): closing");
    closing_ = true;
}

std::string_view resp_session::fragment(std::pair<std::uint32_t, std::uint32_t> ref) const {
    const shard_batch& b = state_->batches[ref.first];
    const std::size_t begin = ref.second == 0 ? 0 : b.ends[ref.second - 1];
    return std::string_view(b.out).substr(begin, b.ends[ref.second] - begin);
}

void resp_session::assemble() {
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
                // A step's error (a refused DEL: out of disk) is the reply,
                // not a count that would claim the keys were absent.
                long long total = 0;
                std::string_view failed;
                for (std::uint32_t i = 0; i < p.ref_count && failed.empty(); ++i) {
                    const std::string_view f = fragment(ref[i]);
                    if (f.starts_with('-')) failed = f;
                    total += f == "1";
                }
                failed.empty() ? w.integer(total) : (void)out_.append(failed);
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

}  // namespace percore::kv
