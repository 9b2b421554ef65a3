// The owner's side of shared reads (store.hpp, "Shared reads"): publishing
// the bucket array to readers on other shards, and freeing what they may
// still be walking only once they cannot be.
//
// Why this is safe. A reader marks itself inside a read (an odd count in its
// reader_slot), then a seq_cst fence, then loads the table. The owner unlinks
// an item (or replaces the array), retires it, and later, in reclaim(), runs
// a seq_cst fence and then loads every reader's count. By the fences, either
// the owner sees the reader's odd count (and keeps what it retired before
// then until that count moves on), or the reader's loads see the unlink and
// never reach the item. A count that moved on (even, or another odd value)
// means the read that could hold the item is over. Readers never write the
// store except one relaxed byte store to `recently_used` of an item that
// this rule keeps allocated.
#include <cstdlib>

#include "store/store.hpp"

namespace percore::kv {

void store::enable_shared_reads(unsigned shard_count) {
    if (readers_) return;
    readers_ = std::make_unique<reader_slot[]>(shard_count);
    reader_count_ = shard_count;
    grace_seen_.assign(shard_count, 0);
    limbo_.reserve(4 * reclaim_batch);
    publish_tables(prepare_publish(), {});
}

void store::retire(void* p, void (*release)(void*)) noexcept {
    if (!readers_) return release(p);
    limbo_.push_back({p, release});
}

void store::reclaim() noexcept {
    if (grace_end_ > 0) {
        // Waiting for the reads seen in progress when limbo_[0, grace_end_)
        // was complete: each must have ended (its count moved on).
        for (unsigned r = 0; r < reader_count_; ++r) {
            const std::uint64_t now = readers_[r].reads.load(std::memory_order_acquire);
            if ((grace_seen_[r] & 1) && now == grace_seen_[r]) return;
        }
        for (std::size_t i = 0; i < grace_end_; ++i) limbo_[i].release(limbo_[i].ptr);
        limbo_.erase(limbo_.begin(), limbo_.begin() + static_cast<std::ptrdiff_t>(grace_end_));
        grace_end_ = 0;
    }
    if (limbo_.empty()) return;
    // Pairs with the reader's fence (see the top of the file).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    bool reading = false;
    for (unsigned r = 0; r < reader_count_; ++r) {
        grace_seen_[r] = readers_[r].reads.load(std::memory_order_acquire);
        reading |= (grace_seen_[r] & 1) != 0;
    }
    if (!reading) {
        for (const retired& r : limbo_) r.release(r.ptr);
        limbo_.clear();
        return;
    }
    grace_end_ = limbo_.size();
}

}  // namespace percore::kv
