// Sharded forwarding, shared by the kv front ends (memcached text, RESP2).
//
// A connection's shard parses a whole read's worth of requests (a pipeline)
// and turns them into operations, each bound to the shard that must run it
// (the owner of its key, or the local shard for replies that need no data).
// The forwarder groups a batch's operations by shard, sends ONE submit_to per
// remote shard (its fiber runs that shard's group in order), runs the local
// group inline meanwhile, and then appends every operation's reply to the
// output in the order the operations were added.
//
// Operations are opaque to it: the front end identifies each with a 32-bit
// tag (e.g. an index into its per-connection table of parsed requests) and
// supplies `exec(db_shard&, std::uint32_t tag, std::string& out)`, which runs
// on the owner shard and appends the reply bytes to `out`. exec may read the
// connection's buffers (the connection's fiber waits for the whole batch);
// it must not suspend (the store is then consistent per shard, and requests
// of one key keep their order). `exec.key(tag)` names the key the operation
// looks up (empty if none), so a group's store lookups are prefetched
// together before they run.
//
// Nothing is allocated per operation once a connection's vectors and reply
// buffers have grown to its usual batch size; they are reused batch after batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "db.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"

namespace percore::kv {

// What a front end's session did with a connection's buffered input (the
// contract between a protocol session and the connection loop in server.hpp).
struct process_result {
    std::size_t consumed = 0;  // bytes of input fully handled: drop them
    bool more = false;         // stopped at the batch limit: call again before reading
    bool close = false;        // quit or a fatal protocol error: send `out`, then close
    // A request is under way although its bytes were consumed (a refused
    // memcached value swallowed as it arrives): for --idle-timeout it is still
    // unfinished, so trickling its body does not renew the deadline.
    bool in_request = false;
};

class forwarder {
  public:
    explicit forwarder(db& database)
        : db_(database),
          shards_(shard_count()),
          local_(this_shard_id()),
          groups_(shards_),
          replies_(shards_),
          reply_ends_(shards_) {}

    // Adds an operation to run on `shard` (owner_shard(key, shard_count())
    // or local_shard()).
    void add(unsigned shard, std::uint32_t tag) {
        order_.push_back(static_cast<std::uint16_t>(shard));
        groups_[shard].push_back(tag);
    }
    std::size_t size() const noexcept { return order_.size(); }
    bool empty() const noexcept { return order_.empty(); }
    unsigned local_shard() const noexcept { return local_; }
    unsigned shards() const noexcept { return shards_; }

    // Runs the batch (see the top of the file), appends the replies to `out`
    // in order, and clears the batch. If some shard's exec threw, the first
    // error is rethrown after every shard finished (the batch is cleared).
    // With `ends`, appends to it where each operation's reply ends in `out`,
    // in the order the operations were added (so that a front end can
    // rewrite the replies of a whole request).
    template <typename Exec>
    void run(Exec& exec, std::string& out, std::vector<std::size_t>* ends = nullptr) {
        if (order_.empty()) return;
        if (groups_[local_].size() == order_.size()) {
            // Everything is local: write straight to the output.
            db_shard& shard = db_.local();
            prefetch(exec, shard, groups_[local_]);
            for (std::uint32_t tag : groups_[local_]) {
                exec(shard, tag, out);
                if (ends) ends->push_back(out.size());
            }
            clear();
            return;
        }
        futures_.clear();
        for (unsigned s = 0; s < shards_; ++s) {
            if (s == local_ || groups_[s].empty()) continue;
            if (read_in_place(exec, s)) continue;
            futures_.push_back(submit_to(s, [this, s, &exec]() noexcept(false) {
                run_group(exec, s);
                db_.local().sync();  // --fsync always: durable before the reply
            }));
        }
        std::exception_ptr error;
        try {
            run_group(exec, local_);
        } catch (...) {
            error = std::current_exception();
        }
        for (auto& f : futures_) {
            try {
                f.get();
            } catch (...) {
                if (!error) error = std::current_exception();
            }
        }
        futures_.clear();
        if (error) {
            clear();
            std::rethrow_exception(error);
        }
        merge(out, ends);
        clear();
    }

  private:
    // Answers shard s's group here, without a call, when every operation in
    // it is a read that s's store lets other shards make (store/store.hpp, "Shared
    // reads"; Exec::can_read_shared / read_shared). False: send it.
    template <typename Exec>
    bool read_in_place(Exec& exec, unsigned s) {
        if constexpr (requires(const Exec& e, const store& st, std::string& o) {
                          e.read_shared(st, std::uint32_t{}, o);
                      }) {
            const store* owner = db_.local().peer_store(s);
            if (!owner || !owner->shared_reads_enabled()) return false;
            for (std::uint32_t tag : groups_[s]) {
                if (!exec.can_read_shared(tag)) return false;
            }
            std::string& out = replies_[s];
            auto& ends = reply_ends_[s];
            for (std::uint32_t tag : groups_[s]) {
                if (!exec.read_shared(*owner, tag, out)) {
                    out.clear();  // a write kept racing: the owner answers all
                    ends.clear();
                    return false;
                }
                ends.push_back(static_cast<std::uint32_t>(out.size()));
            }
            return true;
        } else {
            return false;
        }
    }

    template <typename Exec>
    void run_group(Exec& exec, unsigned s) {
        db_shard& shard = db_.local();
        std::string& out = replies_[s];
        auto& ends = reply_ends_[s];
        prefetch(exec, shard, groups_[s]);
        for (std::uint32_t tag : groups_[s]) {
            exec(shard, tag, out);
            ends.push_back(static_cast<std::uint32_t>(out.size()));
        }
    }

    template <typename Exec>
    static void prefetch(const Exec& exec, db_shard& shard,
                         const std::vector<std::uint32_t>& tags) {
        shard.store().prefetch_keys(tags.size(), [&](std::size_t i) { return exec.key(tags[i]); });
    }

    void merge(std::string& out, std::vector<std::size_t>* ends) {
        cursors_.assign(shards_, 0);
        begins_.assign(shards_, 0);
        for (std::uint16_t s : order_) {
            const std::uint32_t end = reply_ends_[s][cursors_[s]++];
            out.append(replies_[s], begins_[s], end - begins_[s]);
            begins_[s] = end;
            if (ends) ends->push_back(out.size());
        }
    }

    void clear() noexcept {
        order_.clear();
        for (unsigned s = 0; s < shards_; ++s) {
            groups_[s].clear();
            replies_[s].clear();
            reply_ends_[s].clear();
        }
    }

    db& db_;
    unsigned shards_;
    unsigned local_;
    std::vector<std::uint16_t> order_;                    // shard of each operation, in order
    std::vector<std::vector<std::uint32_t>> groups_;      // tags per shard
    std::vector<std::string> replies_;                    // reply bytes per shard
    std::vector<std::vector<std::uint32_t>> reply_ends_;  // end offset of each reply per shard
    std::vector<std::uint32_t> cursors_;
    std::vector<std::uint32_t> begins_;
    std::vector<future<void>> futures_;
};

}  // namespace percore::kv
