// The memcached text-protocol front end of the kv app: a per-connection
// session that turns received bytes into replies. Keyed requests run on
// their owner shards through the forwarder (one submit_to per owner shard per
// batch); flush_all and stats go to every shard; replies keep request order.
//
// With --data-dir's disk full, every request that would log a change is
// refused with SERVER_ERROR out of disk, gat and gats included (they log a
// touch; refused for a missing key too, like touch): a gat that an owner
// shard of its keys refuses gets that one line instead of its VALUE lines
// and END, and that shard touches none of its keys. Not a transaction over
// shards: a shard that accepts touches its keys (as memcached, whose gat can
// fail midway), and a gat cut in batches (over max_batch keys) first refused
// in a later batch has had its earlier batches' VALUE lines sent already.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "db.hpp"
#include "forward.hpp"
#include "memcache/memcache_parser.hpp"

namespace percore::kv::memcache {

// The version this server announces (`version`, `stats`). Numeric first so
// that clients parsing "major.minor.patch" (libmemcached) accept it.
inline constexpr std::string_view server_version = "1.6.0-percore-kv-0.1.0";
inline constexpr std::string_view version_line = "VERSION 1.6.0-percore-kv-0.1.0\r\n";

// Converts a memcached exptime (0: never; < 0: already expired; up to 30
// days: relative seconds; larger: absolute unix time) to a store expiry.
time_point to_expiry(std::int64_t exptime, time_point now) noexcept;

// What process() did (shared by the front ends; see forward.hpp).
using process_result = kv::process_result;

class session {
  public:
    // Operations per batch (a long pipeline or multi-get is cut in batches of
    // this size, so a batch's replies stay bounded).
    static constexpr std::size_t max_batch = 256;

    session(db& database, const parser_limits& limits);

    // Handles the complete requests at the front of `input` (at most one
    // batch) and appends their replies to `out`. Call again with the
    // unconsumed rest when `more` is set, else after reading more input. The
    // input must start with the same unconsumed bytes on the next call.
    process_result process(std::string_view input, std::string& out);

    // Bytes a connection may have to buffer for one request.
    std::size_t max_request_size() const noexcept { return parser_.max_request_size(); }

  private:
    enum class op_kind : std::uint8_t { keyed, literal };
    static constexpr std::uint32_t no_request = UINT32_MAX;
    struct op {
        op_kind kind;
        // Index into requests_: of a keyed op, and of a retrieval's END
        // literal (whose reply belongs to the request); else no_request.
        std::uint32_t request;
        std::string_view key;   // keyed: the key
        std::string_view text;  // literal: the reply
    };

    // Runs one operation on its owner shard (the forwarder's exec). An
    // exception from one operation becomes its SERVER_ERROR reply, logged.
    struct executor {
        session* self;
        void operator()(db_shard& shard, std::uint32_t tag, std::string& out) const;
        void run(db_shard& shard, std::uint32_t tag, std::string& out) const;
        std::string_view key(std::uint32_t tag) const noexcept { return self->ops_[tag].key; }
        // Whether the operation is a get/gets, which read_shared() can answer.
        bool can_read_shared(std::uint32_t tag) const noexcept;
        // A get/gets of a key another shard owns, answered from that
        // shard's store in place (forwarder, store::read_shared); false
        // when writes kept racing the read (then `out` is as it was).
        bool read_shared(const store& owner, std::uint32_t tag, std::string& out) const;
    };
    process_result process_requests(std::string_view input, std::string& out);
    // Whether `more` reply bytes would take this shard's part of the batch
    // past --max-output-buffer; then marks the session overflowed.
    bool over_output_limit(const std::string& out, std::size_t more);
    // A shard refused to touch a key of gat/gats request `request` (its
    // disk is full): the whole request's reply becomes SERVER_ERROR.
    void refuse_touch(std::uint32_t request) noexcept;
    // Replaces the replies of the refused gat/gats of the batch just run
    // (from `mark` in `out`) with one SERVER_ERROR each.
    void reply_refused_touches(std::string& out, std::size_t mark);

    void add_keyed(std::uint32_t request, std::string_view key);
    void add_literal(std::string_view text, std::uint32_t request = no_request);
    void run_batch(std::string& out);
    void append_stats(std::string& out);

    db& db_;
    std::size_t max_output_;  // --max-output-buffer / shards: each owner shard's share
    // A retrieval's replies passed --max-output-buffer (set by owner shards).
    std::atomic<bool> overflowed_{false};
    parser parser_;
    forwarder forwarder_;
    std::vector<request> requests_;
    std::vector<op> ops_;
    std::vector<std::size_t> reply_ends_;  // where each op's reply ends (batches with a gat)
    bool batch_touches_ = false;           // the batch holds a gat/gats
    // Per request of the batch: a shard refused its touches (set by owner shards).
    std::vector<std::atomic<bool>> touch_refused_;
    std::atomic<bool> any_touch_refused_{false};
    // A retrieval request cut between batches: its keys from this offset of
    // the (unconsumed) input on, ending at keys_end_.
    bool resuming_ = false;
    request resume_request_;
    std::size_t resume_line_size_ = 0;
    std::size_t resume_offset_ = 0;
    std::size_t resume_end_ = 0;
    // The cut request is a gat refused in an earlier batch: its
    // SERVER_ERROR is sent, its remaining keys are skipped.
    bool resume_refused_ = false;
};

}  // namespace percore::kv::memcache
