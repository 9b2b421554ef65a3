// The store's eviction and expiry policies (store.hpp): making room for a set
// by evicting the least recently used items, and active expiry, which samples
// the items that have an expiry and removes the expired ones. The structures
// they work on are in store_eviction.hpp.
#include "store/store_eviction.hpp"

#include <chrono>

#include "store/store.hpp"

namespace percore::kv {

// --- eviction ----------------------------------------------------------------

bool store::make_room(std::size_t bytes, const item* keep) {
    while (memory_used() + bytes > config_.max_memory) {
        if (!config_.evict) return false;
        item* victim = lru_.victim(keep);
        if (!victim) return false;
        unlink_and_free(victim);
        ++stats_.evictions;
    }
    return true;
}

void store::lru_bump(item* it) noexcept {
    detail::lru_list<item>::mark_used(it);
}

// --- expiry ------------------------------------------------------------------

void store::set_expiry(item* it, time_point expiry) {
    const bool had = it->expiry != no_expiry;
    const bool has = expiry != no_expiry;
    if (!had && has) {
        with_ttl_.add(it);
    } else if (had && !has) {
        with_ttl_.remove(it);
    }
    it->expiry = expiry;
}

void store::start_active_expiry() {
    expiry_timer_.arm_periodic(config_.active_expiry_period);
}

void store::stop_active_expiry() noexcept {
    expiry_timer_.cancel();
}

std::size_t store::expire_some() {
    change_scope change(*this);
    reclaim();  // the timer also frees what writes retired before going quiet
    // And moves the growing table on when writes, which move it, are rare
    // (Redis gives its incremental rehash a millisecond per cron tick too).
    if (rehashing()) rehash_for(std::chrono::milliseconds(1));
    const time_point start = clock::now();
    const time_point now = config_.now();
    std::size_t removed = 0;
    for (;;) {
        if (with_ttl_.empty()) break;
        unsigned expired_in_round = 0;
        const unsigned samples = config_.active_expiry_samples;
        for (unsigned i = 0; i < samples && !with_ttl_.empty(); ++i) {
            item* it = with_ttl_.sample();
            if (it->expiry <= now) {
                unlink_and_free(it);
                ++expired_in_round;
            }
        }
        removed += expired_in_round;
        if (expired_in_round * 4 <= samples) break;
        if (clock::now() - start >= config_.active_expiry_budget) break;
    }
    stats_.expired += removed;
    stats_.active_expired += removed;
    return removed;
}

}  // namespace percore::kv
