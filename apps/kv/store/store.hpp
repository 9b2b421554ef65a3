// The kv app's protocol-neutral store: one `store` per shard holds the keys
// that shard owns (see owner_shard()). Both front ends (memcached text
// protocol, RESP2) run their commands against it on the owner shard, so a key
// set over one protocol is visible over the other.
//
// A store is single-threaded: use it only from its own shard's thread. No
// operation suspends, so a sequence of calls made by one fiber without
// suspending in between is atomic (e.g. RESP `SET k v GET` = get() then set()).
//
// Views returned by lookups (item_view) point into the store's memory and stay
// valid only until the next mutating call on the same store (set, remove,
// incr, touch, flush, expire_some, eviction caused by a set...). Copy or
// format them into a reply before doing anything else.
//
// Time: expiry is an absolute point on percore::clock (steady). Front ends
// convert their protocol's TTL forms (memcached relative seconds / absolute
// unix time, Redis EX/PX/EXAT/PXAT) with to_expiry() / from the unix helpers.
// Lazy expiry: every lookup of an expired key removes it. Active expiry:
// start_active_expiry() arms a periodic timer that samples keys with a TTL
// and removes the expired ones, so unread expired keys do not pile up.
//
// Shared reads (MICA's CREW mode: concurrent reads, exclusive writes): once
// enable_shared_reads() ran, other shards may look keys up in this store
// with read_shared() instead of sending the owner a cross-shard call. Only
// the owner writes. It makes every change inside a change_scope, which
// moves version_ to an odd value and back; a reader copies what it found
// and keeps the copy only if version_ was even and unchanged around it
// (else it retries or falls back to asking the owner). Memory a reader may
// still be walking (an unlinked item, an outgrown bucket array) is not freed
// at once but retired, and freed once every reader shard was seen outside a
// read or past the one it was in (reclaim()). Item sizes never change once
// an item is linked, so a reader's copy stays inside its allocation even
// when it races with a write, whose bytes the version check then discards.
//
// Growth: the table doubles when it holds as many items as buckets, and the
// items move to the new buckets a few at a time (incrementally, as Redis
// does): two old buckets per write, and up to a millisecond on each active
// expiry tick, so no single request pays for moving millions of items. While
// both tables exist, a key is in the old one if its old bucket has not moved
// yet (rehash_index_), else in the new one.
//
// Memory: every item is one allocation (header + key + value); its footprint
// plus the hash table is charged against store_config::max_memory. When a set
// does not fit, the least recently used items are evicted (CLOCK's
// approximation of LRU, like Redis's allkeys-lru is one), or with
// evict = false the set fails with store_result::no_memory.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "percore/clock.hpp"
#include "percore/timer.hpp"
#include "store/store_eviction.hpp"
#include "store/zeroed_array.hpp"

namespace percore::kv {

// "No expiry": the largest time point.
inline constexpr time_point no_expiry = time_point::max();

// A fast 64-bit hash of a key (used for both shard choice and hash tables).
std::uint64_t key_hash(std::string_view key) noexcept;

// The shard that owns `key` among `shard_count` shards. Uses the high half of
// the hash so that a shard's own table (low bits) still spreads well.
inline unsigned owner_shard_of_hash(std::uint64_t hash, unsigned shard_count) noexcept {
    return static_cast<unsigned>(((hash >> 32) * shard_count) >> 32);
}
inline unsigned owner_shard(std::string_view key, unsigned shard_count) noexcept {
    return owner_shard_of_hash(key_hash(key), shard_count);
}

// Seconds since the Unix epoch now (system clock), for protocols that speak
// absolute unix times.
std::int64_t unix_now() noexcept;
// Converts an absolute unix time in seconds to a point on the steady clock.
time_point from_unix_seconds(std::int64_t unix_seconds) noexcept;
// Converts a point on the steady clock to an absolute unix time in milliseconds.
std::int64_t to_unix_millis(time_point when) noexcept;

// Tunables of one shard's store.
struct store_config {
    std::size_t max_memory = std::size_t{1} << 30;  // bytes for this shard's items + table
    bool evict = true;                              // false: refuse sets when full (no_memory)
    duration active_expiry_period = std::chrono::milliseconds(100);
    unsigned active_expiry_samples = 20;                             // keys sampled per round
    duration active_expiry_budget = std::chrono::microseconds(500);  // max time per tick
    time_point (*now)() = &clock::now;  // time source (tests inject a fake clock)
};

// Outcome of a store operation; front ends map it to their protocol's reply.
enum class store_result : std::uint8_t {
    stored,        // set/add/replace/append/prepend/cas succeeded
    not_stored,    // add: key exists; replace/append/prepend: key missing
    exists,        // cas: the key was modified since the client read it
    not_found,     // key missing (or expired)
    deleted,       // remove succeeded
    touched,       // touch/expire succeeded
    no_memory,     // the store is full and evict = false (or nothing evictable)
    too_large,     // the item alone is larger than the shard's memory
    non_numeric,   // incr/decr on a value that is not a decimal integer
    out_of_range,  // incr_by: the result would overflow a signed 64-bit
    no_disk,       // the change cannot be logged (--data-dir's disk is full): nothing changed
};

// How set() treats an existing / missing key.
enum class set_mode : std::uint8_t {
    set,      // store unconditionally
    add,      // only if missing
    replace,  // only if present
    append,   // value := old + new (keeps old flags and expiry); only if present
    prepend,  // value := new + old; only if present
    cas,      // only if present and its cas equals set_options::cas
};

// Arguments of set() beyond key and value.
struct set_options {
    set_mode mode = set_mode::set;
    std::uint32_t flags = 0;        // opaque client flags (memcached)
    time_point expiry = no_expiry;  // absolute; a past point stores nothing (expired at once)
    bool keep_ttl = false;          // keep the old item's expiry (Redis KEEPTTL)
    std::uint64_t cas = 0;          // expected cas unique for set_mode::cas
};

// A read-only look at a stored item (see the lifetime rule at the top).
struct item_view {
    std::string_view key;
    std::string_view value;
    std::uint32_t flags = 0;
    std::uint64_t cas = 0;  // unique per modification within this store
    time_point expiry = no_expiry;
};

// Result of incr/decr: on success `value` is the new value.
struct incr_result {
    store_result status;  // stored, not_found, non_numeric or out_of_range
    std::uint64_t value = 0;
};
// Result of incr_by (signed, Redis semantics).
struct incr_by_result {
    store_result status;  // stored, non_numeric or out_of_range
    std::int64_t value = 0;
};

// Counters of one shard's store; the front ends sum them over shards for
// memcached `stats` / Redis `INFO`.
struct store_stats {
    std::uint64_t curr_items = 0;
    std::uint64_t total_items = 0;  // items ever stored
    std::uint64_t bytes = 0;        // footprint of live items
    std::uint64_t cmd_get = 0;      // keys looked up by get()
    std::uint64_t get_hits = 0;
    std::uint64_t get_misses = 0;
    std::uint64_t shared_gets = 0;  // of cmd_get: read from another shard's store in place
    std::uint64_t get_expired = 0;  // get() found the key expired
    std::uint64_t cmd_set = 0;      // set() calls (all modes)
    std::uint64_t cmd_touch = 0;
    std::uint64_t touch_hits = 0;
    std::uint64_t touch_misses = 0;
    std::uint64_t delete_hits = 0;
    std::uint64_t delete_misses = 0;
    std::uint64_t incr_hits = 0;
    std::uint64_t incr_misses = 0;
    std::uint64_t decr_hits = 0;
    std::uint64_t decr_misses = 0;
    std::uint64_t cas_hits = 0;
    std::uint64_t cas_misses = 0;
    std::uint64_t cas_badval = 0;
    std::uint64_t cmd_flush = 0;
    std::uint64_t evictions = 0;       // items dropped to make room
    std::uint64_t expired = 0;         // items removed because their TTL passed (lazy + active)
    std::uint64_t active_expired = 0;  // of which by active expiry
    std::uint64_t out_of_memory = 0;   // sets refused with no_memory

    // Adds another shard's counters (for totals).
    store_stats& operator+=(const store_stats& o) noexcept;
};

// Told of every change a store makes for its clients (the kv persistence
// logs them; see log/persistence.hpp). Evictions and expiry removals are not
// reported: a log replays to the same state minus what expired.
class store_observer {
  public:
    virtual ~store_observer() = default;
    // False: refuse client writes with store_result::no_disk.
    virtual bool accepting() const noexcept = 0;
    virtual void on_set(const item_view& item) = 0;  // the key's whole new state
    virtual void on_remove(std::string_view key) = 0;
    virtual void on_expire(std::string_view key, time_point expiry) = 0;
    virtual void on_flush() = 0;
};

class store {
  public:
    explicit store(const store_config& config = {});
    ~store();
    store(const store&) = delete;
    store& operator=(const store&) = delete;

    // --- lookups -----------------------------------------------------------

    // Looks a key up for a client read: counts cmd_get and a hit or miss,
    // marks the item recently used. nullopt if missing or expired.
    std::optional<item_view> get(std::string_view key);
    // get() that also sets the expiry (memcached gat/gats, Redis GETEX).
    // It cannot say no_disk: callers check accepting_writes() first.
    std::optional<item_view> get_and_touch(std::string_view key, time_point expiry);
    // Looks a key up without counting or touching the LRU (EXISTS, TTL, TYPE...).
    // Still removes the key if it expired.
    std::optional<item_view> peek(std::string_view key);
    // Starts loading into the cache the buckets, the items and the values
    // of a batch of keys about to be looked up in turn (a pipelined read's
    // requests), so the batch's cache misses overlap instead of adding up.
    // Each hash is key_hash() of a key; only the first 32 are used (their
    // lines stay well inside L2).
    void prefetch(std::span<const std::uint64_t> hashes) const noexcept;
    // prefetch() of the keys key_at(0) ... key_at(count - 1), skipping empty
    // ones: a batch's operations without a key (a memcached GET's "END")
    // name none, and a lone real key has nothing to overlap with.
    template <typename KeyAt>
    void prefetch_keys(std::size_t count, KeyAt key_at) const noexcept {
        if (count < 2) return;
        std::array<std::uint64_t, max_prefetch> hashes;
        std::size_t keys = 0;
        for (std::size_t i = 0; i < count && keys < max_prefetch; ++i) {
            const std::string_view key = key_at(i);
            if (!key.empty()) hashes[keys++] = key_hash(key);
        }
        prefetch(std::span(hashes.data(), keys));
    }
    static constexpr std::size_t max_prefetch = 32;

    // --- reads from other shards (see "Shared reads" above) -----------------

    // What read_shared() found.
    enum class shared_read : std::uint8_t {
        hit,    // copy() ran on the live item and the copy is consistent
        miss,   // no live item under the key
        retry,  // a write raced the read: drop what copy() appended
    };
    // Lets the shards 0 .. shard_count - 1 call read_shared() on this store.
    // Call on the owner shard before any other shard reads.
    void enable_shared_reads(unsigned shard_count);
    bool shared_reads_enabled() const noexcept { return readers_ != nullptr; }
    // From shard `reader` (not the owner): looks `key` (hash: key_hash(key))
    // up and, if it is live, calls copy(item_view) to copy what the reply
    // needs. The view is only valid inside copy(), which must not throw
    // past appending to a buffer (then the read is abandoned) nor suspend.
    // The item is marked recently used; no statistic is counted (the
    // reader counts in its own store: count_shared_get()).
    template <typename Copy>
    shared_read read_shared(std::string_view key, std::uint64_t hash, unsigned reader,
                            Copy&& copy) const;
    // read_shared() for a reply: copy() appends to `out`; what a read that a
    // write raced appended is cut off again and the read retried, three
    // times at most. hit or miss; retry if writes kept racing (then `out`
    // is as it was and the caller asks the owner instead).
    template <typename Copy>
    shared_read read_shared_into(std::string& out, std::string_view key, std::uint64_t hash,
                                 unsigned reader, Copy&& copy) const {
        for (int attempt = 0; attempt < 3; ++attempt) {
            const std::size_t mark = out.size();
            const shared_read found = read_shared(key, hash, reader, copy);
            if (found != shared_read::retry) return found;
            out.resize(mark);
        }
        return shared_read::retry;
    }
    // Counts a read_shared() GET in this (the reader's) store's statistics.
    void count_shared_get(bool hit) noexcept {
        ++stats_.cmd_get;
        ++stats_.shared_gets;
        ++(hit ? stats_.get_hits : stats_.get_misses);
    }

    // --- writes ------------------------------------------------------------

    // Stores `value` under `key` as options.mode says. Returns stored,
    // not_stored, exists, not_found (cas on a missing key), no_memory or too_large.
    store_result set(std::string_view key, std::string_view value, const set_options& options = {});
    // Removes a key: deleted or not_found.
    store_result remove(std::string_view key);
    // memcached incr/decr: the value must be a decimal unsigned 64-bit number
    // (length <= 20 digits); incr wraps around 2^64, decr stops at 0. Keeps
    // flags and expiry. not_found if missing.
    incr_result incr(std::string_view key, std::uint64_t delta);
    incr_result decr(std::string_view key, std::uint64_t delta);
    // Redis INCRBY/DECRBY: a missing key counts as 0; the value must be a
    // signed 64-bit decimal; overflow is out_of_range (nothing changes).
    incr_by_result incr_by(std::string_view key, std::int64_t delta);
    // Sets a key's expiry: touched or not_found. no_expiry makes it persistent.
    store_result touch(std::string_view key, time_point expiry);
    // Removes every item now (memcached flush_all, Redis FLUSHDB/FLUSHALL).
    void flush();
    // Removes every item once `when` has passed (memcached `flush_all N`):
    // a timer on this shard; a later flush_at replaces it. Needs a reactor.
    void flush_at(time_point when);

    // --- iteration and housekeeping -----------------------------------------

    // Calls fn(item_view) for up to about `count` live items starting at
    // `cursor`, returns the cursor for the next call (0 when the walk is
    // complete). Like Redis SCAN: items present for the whole walk are seen
    // at least once; a resize in between may repeat some. fn must not modify
    // the store.
    template <typename F>
    std::size_t scan(std::size_t cursor, std::size_t count, F&& fn);

    // Arms the periodic active-expiry timer on the calling shard (needs a
    // reactor); stop_active_expiry() or the destructor disarms it.
    void start_active_expiry();
    void stop_active_expiry() noexcept;
    // One active-expiry round: samples keys with a TTL and removes expired
    // ones, repeating while more than a quarter of a sample was expired and
    // the time budget lasts. Returns how many keys it removed.
    std::size_t expire_some();

    // Whether the table is growing (items still moving to the doubled one;
    // see "Growth"), and moving the rest now (benchmarks and tests that
    // measure a settled table; a server leaves it to writes and the tick).
    bool growing() const noexcept { return rehashing(); }
    void finish_growth() { rehash_for(duration::zero()); }

    // Live items (expired-but-not-yet-removed ones included).
    std::size_t size() const noexcept { return count_; }
    // Bytes charged against max_memory (items + hash table).
    std::size_t memory_used() const noexcept { return items_bytes_ + table_bytes(); }
    // Key plus value bytes of the live items (what a snapshot of them holds
    // besides fixed per-item fields; the log sizes its compaction by it).
    std::size_t payload_bytes() const noexcept { return payload_bytes_; }
    const store_config& config() const noexcept { return config_; }
    const store_stats& stats() const noexcept;
    // Reports every later change to `observer` (nullptr: none, the default).
    void set_observer(store_observer* observer) noexcept { observer_ = observer; }
    // False while writes are refused with no_disk (front ends check it first
    // for commands whose reply does not carry a store_result).
    bool accepting_writes() const noexcept { return !observer_ || observer_->accepting(); }

    // Bytes an item of this key and value size is charged.
    static std::size_t footprint(std::size_t key_size, std::size_t value_size) noexcept;

  private:
    struct item;

    // Every change a shared reader could see runs inside one of these; the
    // outermost moves version_ odd, then even again (see "Shared reads").
    class change_scope {
      public:
        explicit change_scope(store& s) noexcept : s_(s) {
            if (s_.change_depth_++ == 0) s_.begin_change();
        }
        ~change_scope() {
            if (--s_.change_depth_ == 0) s_.end_change();
        }
        change_scope(const change_scope&) = delete;
        change_scope& operator=(const change_scope&) = delete;

      private:
        store& s_;
    };
    void begin_change() noexcept {
        version_.store(version_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_release);
    }
    void end_change() noexcept {
        version_.store(version_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
        if (limbo_.size() >= reclaim_batch) reclaim();
    }
    // Frees `p` with `release` now, or once no shared reader can hold it.
    void retire(void* p, void (*release)(void*)) noexcept;
    // Frees what was retired before every reader was seen outside a read.
    void reclaim() noexcept;
    // The table growth (store_table.cpp; see "Growth" above).
    bool rehashing() const noexcept { return !old_buckets_.empty(); }
    // The bucket that holds, or would hold, an item with this hash (inline:
    // every lookup starts here).
    item** bucket_of(std::uint64_t hash) noexcept {
        if (!old_buckets_.empty()) [[unlikely]] {
            const std::size_t old = hash & (old_buckets_.size() - 1);
            if (old >= rehash_index_.load(std::memory_order_relaxed)) return &old_buckets_[old];
        }
        return &buckets_[hash & (buckets_.size() - 1)];
    }
    item* const* bucket_of(std::uint64_t hash) const noexcept {
        return const_cast<store*>(this)->bucket_of(hash);
    }
    // Doubles the table; the items move over in rehash_step()s.
    void start_growth();
    // Moves up to `buckets` non-empty old buckets (visiting at most ten
    // times as many empty ones); ends the growth when none is left.
    void rehash_step(std::size_t buckets);
    // Moves old buckets for up to `budget`; all of them if budget is zero.
    void rehash_for(duration budget);
    // Empties both tables, leaving a new one of `size` buckets (flush()).
    void reset_tables(std::size_t size);
    // Replacing the tables under shared readers: what may throw is
    // allocated first (prepare_publish), before the tables change; then
    // publish_tables() installs a view of them (retiring the previous one)
    // and retires the arrays no longer in use, without failing.
    struct table_view {  // what a shared reader walks
        item* const* slots;
        std::size_t mask;
        item* const* old_slots;  // while growing, else nullptr
        std::size_t old_mask;
    };
    struct table_swap {
        std::unique_ptr<table_view> view;
        std::unique_ptr<std::array<detail::zeroed_array<item*>, 2>> outgrown;
    };
    table_swap prepare_publish();
    void publish_tables(table_swap swap, detail::zeroed_array<item*> outgrown,
                        detail::zeroed_array<item*> outgrown_too = {}) noexcept;
    void end_growth();
    static constexpr std::size_t rehash_steps_per_write = 2;
    static constexpr std::size_t reclaim_batch = 64;

    incr_result add_to_number(std::string_view key, std::uint64_t delta, bool increment);

    item* find(std::string_view key, std::uint64_t hash) noexcept;
    item* find_live(std::string_view key, std::uint64_t hash, time_point now) noexcept;
    item* allocate(std::string_view key, std::uint64_t hash, std::size_t value_size);
    bool make_room(std::size_t bytes, const item* keep);
    void link(item* it);
    void unlink_and_free(item* it) noexcept;
    void replace_item(item* old_item, item* new_item) noexcept;
    void set_expiry(item* it, time_point expiry);
    void lru_bump(item* it) noexcept;
    std::size_t table_bytes() const noexcept {
        return (buckets_.size() + old_buckets_.size()) * sizeof(item*);
    }
    item_view view(const item* it) const noexcept;
    std::uint64_t next_cas() noexcept { return ++cas_counter_; }

    store_config config_;
    store_observer* observer_ = nullptr;       // the shard's log with --data-dir
    detail::zeroed_array<item*> buckets_;      // chained hash table, power-of-two size
    detail::zeroed_array<item*> old_buckets_;  // while growing: the table being emptied
    // Old buckets below this index have moved (atomic: shared readers read it).
    std::atomic<std::size_t> rehash_index_{0};
    std::size_t count_ = 0;
    std::size_t items_bytes_ = 0;
    std::size_t payload_bytes_ = 0;     // sum of key_size + value_size of linked items
    detail::lru_list<item> lru_;        // eviction order
    detail::ttl_index<item> with_ttl_;  // items with an expiry, for sampling
    std::uint64_t cas_counter_ = 0;
    mutable store_stats stats_;
    timer expiry_timer_;
    timer flush_timer_;

    // Shared reads (see the top). The owner's side: the table as readers
    // see it, its change counter, and what waits for the readers to move on.
    struct retired {
        void* ptr;
        void (*release)(void*);
    };
    // One reader shard's read count, odd while it reads; on its own line.
    struct alignas(64) reader_slot {
        std::atomic<std::uint64_t> reads{0};
    };
    unsigned change_depth_ = 0;
    std::vector<retired> limbo_;
    std::size_t grace_end_ = 0;  // limbo_[0, grace_end_) waits for grace_seen_ to change
    std::vector<std::uint64_t> grace_seen_;
    std::unique_ptr<reader_slot[]> readers_;  // by shard; null: shared reads off
    unsigned reader_count_ = 0;
    std::atomic<const table_view*> view_{nullptr};
    alignas(64) std::atomic<std::uint64_t> version_{0};
};

// --- implementation of the scan template ----------------------------------

namespace detail {
// Reverse-binary cursor increment (Redis' dictScan) so a resize between calls
// does not skip buckets.
std::size_t scan_next_cursor(std::size_t cursor, std::size_t mask) noexcept;
}  // namespace detail

struct store::item {
    item* hash_next;
    item* lru_prev;
    item* lru_next;
    std::uint64_t hash;
    std::uint64_t cas;
    time_point expiry;
    std::uint32_t ttl_index;  // position in with_ttl_ (if expiry != no_expiry)
    std::uint32_t flags;
    std::uint32_t key_size;
    std::uint32_t value_size;
    bool recently_used;  // hit since eviction last passed it (lru_list)
    char* data() noexcept { return reinterpret_cast<char*>(this + 1); }
    const char* data() const noexcept { return reinterpret_cast<const char*>(this + 1); }
    std::string_view key() const noexcept { return {data(), key_size}; }
    std::string_view value() const noexcept { return {data() + key_size, value_size}; }
};

template <typename Copy>
store::shared_read store::read_shared(std::string_view key, std::uint64_t hash, unsigned reader,
                                      Copy&& copy) const {
    std::atomic<std::uint64_t>& reads = readers_[reader].reads;
    const std::uint64_t mine = reads.load(std::memory_order_relaxed);
    reads.store(mine + 1, std::memory_order_relaxed);
    // The odd count before any load of the table: pairs with the fence in
    // reclaim(), so either the owner sees this read or it sees the unlink.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    struct leave {
        std::atomic<std::uint64_t>& reads;
        std::uint64_t done;
        ~leave() { reads.store(done, std::memory_order_release); }
    } guard{reads, mine + 2};
    const std::uint64_t before = version_.load(std::memory_order_acquire);
    if (before & 1) return shared_read::retry;
    auto unchanged = [&] {
        std::atomic_thread_fence(std::memory_order_acquire);
        return version_.load(std::memory_order_relaxed) == before;
    };
    const table_view* table = view_.load(std::memory_order_acquire);
    item* const* slot = &table->slots[hash & table->mask];
    if (table->old_slots &&
        (hash & table->old_mask) >= rehash_index_.load(std::memory_order_relaxed)) {
        slot = &table->old_slots[hash & table->old_mask];
    }
    const item* it = __atomic_load_n(slot, __ATOMIC_RELAXED);
    // A chain torn by a racing write ends (items are never freed under a
    // reader) but may be long: give up early and retry.
    for (unsigned steps = 0; it; ++steps) {
        if (steps == 64) return shared_read::retry;
        if (it->hash == hash && it->key_size == key.size() &&
            std::memcmp(it->data(), key.data(), key.size()) == 0) {
            break;
        }
        it = __atomic_load_n(&it->hash_next, __ATOMIC_RELAXED);
    }
    if (!it || (it->expiry != no_expiry && it->expiry <= config_.now())) {
        return unchanged() ? shared_read::miss : shared_read::retry;
    }
    copy(item_view{it->key(), it->value(), it->flags, it->cas, it->expiry});
    if (!unchanged()) return shared_read::retry;
    if (!__atomic_load_n(&it->recently_used, __ATOMIC_RELAXED))
        __atomic_store_n(&const_cast<item*>(it)->recently_used, true, __ATOMIC_RELAXED);
    return shared_read::hit;
}

template <typename F>
std::size_t store::scan(std::size_t cursor, std::size_t count, F&& fn) {
    if (buckets_.empty()) return 0;
    const time_point now = config_.now();
    std::size_t seen = 0;
    auto visit = [&](const item* it) {
        for (; it; it = it->hash_next) {
            if (it->expiry <= now) continue;
            fn(view(it));
            ++seen;
        }
    };
    if (!rehashing()) {
        const std::size_t mask = buckets_.size() - 1;
        do {
            visit(buckets_[cursor & mask]);
            cursor = detail::scan_next_cursor(cursor, mask);
        } while (cursor != 0 && seen < count);
        return cursor;
    }
    // Growing: step the cursor over the old (half-size) table; old bucket b
    // holds what has not moved yet, and new buckets b and b + old size what
    // has (Redis's dictScan over two tables).
    const std::size_t mask = old_buckets_.size() - 1;
    do {
        const std::size_t b = cursor & mask;
        visit(old_buckets_[b]);
        visit(buckets_[b]);
        visit(buckets_[b | old_buckets_.size()]);
        cursor = detail::scan_next_cursor(cursor, mask);
    } while (cursor != 0 && seen < count);
    return cursor;
}

}  // namespace percore::kv
