// The store's hash table and its growth (store.hpp, "Growth"): which bucket
// holds a key while two tables exist, moving old buckets a few at a time,
// and publishing the tables to shared readers on other shards.
#include <array>
#include <chrono>

#include "store/store.hpp"

namespace percore::kv {

void store::start_growth() {
    change_scope change(*this);
    detail::zeroed_array<item*> bigger(buckets_.size() * 2);
    table_swap swap = prepare_publish();
    old_buckets_.swap(buckets_);  // old_buckets_ was empty: not growing
    buckets_.swap(bigger);
    rehash_index_.store(0, std::memory_order_relaxed);
    publish_tables(std::move(swap), std::move(bigger));
}

void store::rehash_step(std::size_t buckets) {
    change_scope change(*this);
    std::size_t empty_left = buckets * 10;
    std::size_t next = rehash_index_.load(std::memory_order_relaxed);
    const std::size_t mask = buckets_.size() - 1;
    while (buckets > 0 && next < old_buckets_.size()) {
        item* head = old_buckets_[next];
        if (!head) {
            ++next;
            if (--empty_left == 0) break;
            continue;
        }
        while (head) {
            item* following = head->hash_next;
            item*& slot = buckets_[head->hash & mask];
            head->hash_next = slot;
            slot = head;
            head = following;
        }
        old_buckets_[next++] = nullptr;
        --buckets;
    }
    rehash_index_.store(next, std::memory_order_relaxed);
    if (next == old_buckets_.size()) end_growth();
}

void store::end_growth() {
    // If this throws, every old bucket has moved and bucket_of() already
    // answers from the new table alone: the next step tries again.
    table_swap swap = prepare_publish();
    detail::zeroed_array<item*> emptied;
    emptied.swap(old_buckets_);
    publish_tables(std::move(swap), std::move(emptied));
}

void store::rehash_for(duration budget) {
    const time_point start = clock::now();
    while (rehashing()) {
        rehash_step(64);
        if (budget != duration::zero() && clock::now() - start >= budget) break;
    }
}

void store::reset_tables(std::size_t size) {
    change_scope change(*this);
    detail::zeroed_array<item*> fresh(size);
    table_swap swap = prepare_publish();
    detail::zeroed_array<item*> emptied;
    emptied.swap(old_buckets_);
    buckets_.swap(fresh);
    rehash_index_.store(0, std::memory_order_relaxed);
    publish_tables(std::move(swap), std::move(fresh), std::move(emptied));
}

store::table_swap store::prepare_publish() {
    table_swap swap;
    if (!readers_) return swap;
    swap.view = std::make_unique<table_view>();
    swap.outgrown = std::make_unique<std::array<detail::zeroed_array<item*>, 2>>();
    limbo_.reserve(limbo_.size() + 2);
    return swap;
}

void store::publish_tables(table_swap swap, detail::zeroed_array<item*> outgrown,
                           detail::zeroed_array<item*> outgrown_too) noexcept {
    if (!swap.view) return;  // no shared readers: the arrays go with this call
    *swap.view = table_view{buckets_.data(), buckets_.size() - 1,
                            rehashing() ? old_buckets_.data() : nullptr,
                            rehashing() ? old_buckets_.size() - 1 : 0};
    (*swap.outgrown)[0] = std::move(outgrown);
    (*swap.outgrown)[1] = std::move(outgrown_too);
    const table_view* previous = view_.exchange(swap.view.release(), std::memory_order_release);
    retire(swap.outgrown.release(),
           [](void* p) { delete static_cast<std::array<detail::zeroed_array<item*>, 2>*>(p); });
    if (previous)
        retire(const_cast<table_view*>(previous),
               [](void* p) { delete static_cast<table_view*>(p); });
}

}  // namespace percore::kv
