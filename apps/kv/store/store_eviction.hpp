// Eviction and expiry bookkeeping of the kv store (store.hpp): the recency
// list whose tail is evicted first when a set does not fit (LRU), and the
// index of the items that have an expiry, which active expiry samples. Both
// are intrusive (the links live in the items: lru_prev, lru_next, ttl_index),
// so neither allocates per item. The store's policies built on them (making
// room, active expiry) are in store_eviction.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace percore::kv::detail {

// Items in order of last use, approximately: CLOCK (second chance). A hit
// only marks the item used (`Item::recently_used`); the list is reordered
// when eviction reaches a marked item at the tail, which goes back to the
// head unmarked. A strict LRU moves the item on every hit and so touches its
// two neighbours, two cache misses per GET on a table larger than the caches
// (perf/micro_store.cpp). Item has `Item* lru_prev, *lru_next; bool recently_used`.
template <typename Item>
class lru_list {
  public:
    Item* head() const noexcept { return head_; }  // most recently linked or given a second chance
    Item* tail() const noexcept { return tail_; }

    // Links a new item at the head, unmarked.
    void push_front(Item* it) noexcept {
        it->recently_used = false;
        it->lru_prev = nullptr;
        it->lru_next = head_;
        if (head_) head_->lru_prev = it;
        head_ = it;
        if (!tail_) tail_ = it;
    }
    void remove(Item* it) noexcept {
        if (it->lru_prev)
            it->lru_prev->lru_next = it->lru_next;
        else
            head_ = it->lru_next;
        if (it->lru_next)
            it->lru_next->lru_prev = it->lru_prev;
        else
            tail_ = it->lru_prev;
    }
    // Marks a linked item as used; the write is skipped when already marked
    // so a hot item's cache line stays clean.
    static void mark_used(Item* it) noexcept {
        if (!it->recently_used) it->recently_used = true;
    }
    // The next item to evict: the tail, after giving every marked item met
    // on the way (and `keep`) a second chance at the head. nullptr if `keep`
    // is the only item. Each step clears a mark set by a hit, so the work
    // is paid for by earlier hits.
    Item* victim(const Item* keep) noexcept {
        while (Item* it = tail_) {
            if (it != keep && !it->recently_used) return it;
            if (it == head_) return it == keep ? nullptr : it;
            it->recently_used = false;
            remove(it);
            push_front(it);
        }
        return nullptr;
    }
    // Forgets every item (the caller frees them).
    void clear() noexcept { head_ = tail_ = nullptr; }

  private:
    Item* head_ = nullptr;
    Item* tail_ = nullptr;
};

// The items that have an expiry, in no order, for sampling in O(1). Item has
// `std::uint32_t ttl_index`, its position here while it is a member.
template <typename Item>
class ttl_index {
  public:
    bool empty() const noexcept { return items_.empty(); }
    std::size_t size() const noexcept { return items_.size(); }

    void add(Item* it) {
        it->ttl_index = static_cast<std::uint32_t>(items_.size());
        items_.push_back(it);
    }
    // Removes a member (the last one takes its place).
    void remove(Item* it) noexcept {
        Item* last = items_.back();
        items_[it->ttl_index] = last;
        last->ttl_index = it->ttl_index;
        items_.pop_back();
    }
    // A pseudo-random member (xorshift64: cheap, good enough for sampling).
    // The index must not be empty.
    Item* sample() noexcept {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 7;
        state_ ^= state_ << 17;
        return items_[state_ % items_.size()];
    }
    void clear() noexcept { items_.clear(); }

  private:
    std::vector<Item*> items_;
    std::uint64_t state_ = 0x9e3779b97f4a7c15ull;
};

}  // namespace percore::kv::detail
