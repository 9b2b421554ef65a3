#include "store/store.hpp"

#include <bit>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

namespace percore::kv {

namespace {

constexpr std::size_t initial_buckets = 16;

inline std::uint64_t read64(const char* p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}
inline std::uint64_t read32(const char* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
inline std::uint64_t mix(std::uint64_t a, std::uint64_t b) noexcept {
    __uint128_t r = static_cast<__uint128_t>(a) * b;
    return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
}

// Parses memcached's idea of a number in a value (safe_strtoull): optional
// leading spaces, digits, then end or a space. False if not a number or > 2^64-1.
bool parse_memcached_number(std::string_view text, std::uint64_t& out) noexcept {
    std::size_t i = 0;
    while (i < text.size() && text[i] == ' ') ++i;
    const char* begin = text.data() + i;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(begin, end, out);
    if (ec != std::errc() || ptr == begin) return false;
    return ptr == end || std::isspace(static_cast<unsigned char>(*ptr));
}

// Parses a strict signed 64-bit decimal (Redis string2ll: no spaces, no '+').
bool parse_strict_int64(std::string_view text, std::int64_t& out) noexcept {
    if (text.empty() || text.size() > 20) return false;
    if (text.size() > 1 && (text[0] == '0' || (text[0] == '-' && text[1] == '0'))) return false;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
    return ec == std::errc() && ptr == text.data() + text.size();
}

}  // namespace

std::uint64_t key_hash(std::string_view key) noexcept {
    // A wyhash-style mix: 8 bytes at a time through a 64x64->128 multiply.
    constexpr std::uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull,
                            k2 = 0x8ebc6af09c88c6e3ull;
    const char* p = key.data();
    std::size_t n = key.size();
    std::uint64_t h = k0 ^ (n * k1);
    while (n >= 8) {
        h = mix(h ^ read64(p), k1);
        p += 8;
        n -= 8;
    }
    std::uint64_t tail = 0;
    if (n >= 4) {
        tail = (read32(p) << 32) | read32(p + n - 4);
    } else if (n > 0) {
        tail = (static_cast<std::uint64_t>(static_cast<unsigned char>(p[0])) << 16) |
               (static_cast<std::uint64_t>(static_cast<unsigned char>(p[n >> 1])) << 8) |
               static_cast<unsigned char>(p[n - 1]);
    }
    return mix(h ^ tail ^ k2, k1 ^ key.size());
}

std::int64_t unix_now() noexcept {
    using namespace std::chrono;
    return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

time_point from_unix_seconds(std::int64_t unix_seconds) noexcept {
    using namespace std::chrono;
    const auto sys_now = system_clock::now();
    const auto steady_now = clock::now();
    const auto target = system_clock::time_point(seconds(unix_seconds));
    return steady_now + duration_cast<duration>(target - sys_now);
}

std::int64_t to_unix_millis(time_point when) noexcept {
    using namespace std::chrono;
    const auto delta = duration_cast<milliseconds>(when - clock::now());
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() +
           delta.count();
}

store_stats& store_stats::operator+=(const store_stats& o) noexcept {
    curr_items += o.curr_items;
    total_items += o.total_items;
    bytes += o.bytes;
    cmd_get += o.cmd_get;
    get_hits += o.get_hits;
    get_misses += o.get_misses;
    shared_gets += o.shared_gets;
    get_expired += o.get_expired;
    cmd_set += o.cmd_set;
    cmd_touch += o.cmd_touch;
    touch_hits += o.touch_hits;
    touch_misses += o.touch_misses;
    delete_hits += o.delete_hits;
    delete_misses += o.delete_misses;
    incr_hits += o.incr_hits;
    incr_misses += o.incr_misses;
    decr_hits += o.decr_hits;
    decr_misses += o.decr_misses;
    cas_hits += o.cas_hits;
    cas_misses += o.cas_misses;
    cas_badval += o.cas_badval;
    cmd_flush += o.cmd_flush;
    evictions += o.evictions;
    expired += o.expired;
    active_expired += o.active_expired;
    out_of_memory += o.out_of_memory;
    return *this;
}

namespace {
std::uint64_t reverse_bits(std::uint64_t v) noexcept {
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0full) | ((v & 0x0f0f0f0f0f0f0f0full) << 4);
    return __builtin_bswap64(v);
}
}  // namespace

std::size_t detail::scan_next_cursor(std::size_t cursor, std::size_t mask) noexcept {
    // Increment the bits under the mask in reverse order (Redis' dictScan).
    cursor |= ~mask;
    cursor = reverse_bits(cursor);
    ++cursor;
    return reverse_bits(cursor);
}

store::store(const store_config& config) : config_(config), buckets_(initial_buckets) {
    expiry_timer_.set_callback([this] { expire_some(); });
    flush_timer_.set_callback([this] { flush(); });
}

store::~store() {
    stop_active_expiry();
    flush_timer_.cancel();
    for (item* it = lru_.head(); it;) {
        item* next = it->lru_next;
        std::free(it);
        it = next;
    }
    // No shard reads any more: what waited for readers goes now.
    for (const retired& r : limbo_) r.release(r.ptr);
    delete view_.load(std::memory_order_relaxed);
}

std::size_t store::footprint(std::size_t key_size, std::size_t value_size) noexcept {
    // The allocation rounded like malloc does, plus its bookkeeping word.
    return ((sizeof(item) + key_size + value_size + 15) & ~std::size_t{15}) + 16;
}

const store_stats& store::stats() const noexcept {
    stats_.curr_items = count_;
    stats_.bytes = items_bytes_;
    return stats_;
}

// --- internals --------------------------------------------------------------

item_view store::view(const item* it) const noexcept {
    return item_view{it->key(), it->value(), it->flags, it->cas, it->expiry};
}

store::item* store::find(std::string_view key, std::uint64_t hash) noexcept {
    for (item* it = *bucket_of(hash); it; it = it->hash_next) {
        if (it->hash == hash && it->key() == key) return it;
    }
    return nullptr;
}

void store::prefetch(std::span<const std::uint64_t> hashes) const noexcept {
    if (hashes.size() < 2) return;  // one lookup has nothing to overlap with
    hashes = hashes.first(std::min(hashes.size(), max_prefetch));
    // Three passes, each issuing the batch's next misses together: the
    // buckets, then the first item of each chain, then what the lookup and
    // its reply read next. By the time a pass reads a line, the previous
    // pass has had the whole batch's worth of time to bring it.
    for (std::uint64_t hash : hashes) __builtin_prefetch(bucket_of(hash));
    for (std::uint64_t hash : hashes) {
        if (const item* it = *bucket_of(hash)) {
            // The header and the key may straddle two lines.
            __builtin_prefetch(it);
            __builtin_prefetch(reinterpret_cast<const char*>(it) + 64);
        }
    }
    for (std::uint64_t hash : hashes) {
        const item* it = *bucket_of(hash);
        if (!it) continue;
        if (it->hash == hash) {
            // The key's item: the rest of its value, which the reply copies
            // (up to a few lines; beyond that the copy streams).
            const char* begin = reinterpret_cast<const char*>(it);
            const char* end = it->value().data() + std::min<std::size_t>(it->value_size, 256);
            for (const char* line = begin + 128; line < end; line += 64) __builtin_prefetch(line);
        } else if ((it = it->hash_next)) {
            // Not first in its chain (about a third of hits at load factor
            // 0.75): the next item, header to value.
            for (int line = 0; line < 3; ++line)
                __builtin_prefetch(reinterpret_cast<const char*>(it) + 64 * line);
        }
    }
}

store::item* store::find_live(std::string_view key, std::uint64_t hash, time_point now) noexcept {
    item* it = find(key, hash);
    if (it && it->expiry <= now) {
        unlink_and_free(it);
        ++stats_.expired;
        return nullptr;
    }
    return it;
}

store::item* store::allocate(std::string_view key, std::uint64_t hash, std::size_t value_size) {
    auto* it = static_cast<item*>(std::malloc(sizeof(item) + key.size() + value_size));
    if (!it) throw std::bad_alloc();
    it->hash_next = it->lru_prev = it->lru_next = nullptr;
    it->hash = hash;
    it->cas = 0;
    it->expiry = no_expiry;
    it->ttl_index = 0;
    it->flags = 0;
    it->key_size = static_cast<std::uint32_t>(key.size());
    it->value_size = static_cast<std::uint32_t>(value_size);
    std::memcpy(it->data(), key.data(), key.size());
    return it;
}

void store::link(item* it) {
    change_scope change(*this);
    if (rehashing()) rehash_step(rehash_steps_per_write);
    if (count_ + 1 > buckets_.size()) {
        if (rehashing()) rehash_for(duration::zero());  // a burst outran the steps
        start_growth();
    }
    item** head = bucket_of(it->hash);
    it->hash_next = *head;
    *head = it;
    lru_.push_front(it);
    ++count_;
    items_bytes_ += footprint(it->key_size, it->value_size);
    payload_bytes_ += std::size_t{it->key_size} + it->value_size;
    if (it->expiry != no_expiry) with_ttl_.add(it);
}

void store::unlink_and_free(item* it) noexcept {
    change_scope change(*this);
    item** slot = bucket_of(it->hash);
    while (*slot != it) slot = &(*slot)->hash_next;
    *slot = it->hash_next;
    lru_.remove(it);
    if (it->expiry != no_expiry) with_ttl_.remove(it);
    --count_;
    items_bytes_ -= footprint(it->key_size, it->value_size);
    payload_bytes_ -= std::size_t{it->key_size} + it->value_size;
    retire(it, &std::free);
}

// --- lookups -----------------------------------------------------------------

std::optional<item_view> store::get(std::string_view key) {
    ++stats_.cmd_get;
    const std::uint64_t hash = key_hash(key);
    item* it = find(key, hash);
    // Most items never expire: no clock read for them.
    if (it && it->expiry != no_expiry && it->expiry <= config_.now()) {
        unlink_and_free(it);
        ++stats_.expired;
        ++stats_.get_expired;
        it = nullptr;
    }
    if (!it) {
        ++stats_.get_misses;
        return std::nullopt;
    }
    ++stats_.get_hits;
    lru_bump(it);
    return view(it);
}

std::optional<item_view> store::get_and_touch(std::string_view key, time_point expiry) {
    change_scope change(*this);
    ++stats_.cmd_touch;
    ++stats_.cmd_get;
    const time_point now = config_.now();
    item* it = find_live(key, key_hash(key), now);
    if (!it) {
        ++stats_.touch_misses;
        ++stats_.get_misses;
        return std::nullopt;
    }
    ++stats_.touch_hits;
    ++stats_.get_hits;
    lru_bump(it);
    if (expiry <= now) {
        // memcached returns the value and the item is gone afterwards; copy
        // nothing: the view would dangle, so move it to the expiry list and
        // let the next access (or active expiry) remove it.
        set_expiry(it, now);
        if (observer_) observer_->on_remove(key);
        return view(it);
    }
    set_expiry(it, expiry);
    if (observer_) observer_->on_expire(key, expiry);
    return view(it);
}

std::optional<item_view> store::peek(std::string_view key) {
    item* it = find_live(key, key_hash(key), config_.now());
    if (!it) return std::nullopt;
    return view(it);
}

// --- writes ------------------------------------------------------------------

store_result store::set(std::string_view key, std::string_view value, const set_options& options) {
    change_scope change(*this);
    ++stats_.cmd_set;
    if (observer_ && !observer_->accepting()) return store_result::no_disk;
    const time_point now = config_.now();
    const std::uint64_t hash = key_hash(key);
    item* old = find_live(key, hash, now);
    switch (options.mode) {
        case set_mode::set:
            break;
        case set_mode::add:
            if (old) {
                lru_bump(old);
                return store_result::not_stored;
            }
            break;
        case set_mode::replace:
        case set_mode::append:
        case set_mode::prepend:
            if (!old) return store_result::not_stored;
            break;
        case set_mode::cas:
            if (!old) {
                ++stats_.cas_misses;
                return store_result::not_found;
            }
            if (old->cas != options.cas) {
                ++stats_.cas_badval;
                return store_result::exists;
            }
            ++stats_.cas_hits;
            break;
    }
    const bool concat = options.mode == set_mode::append || options.mode == set_mode::prepend;
    const std::size_t value_size = concat ? old->value_size + value.size() : value.size();
    const std::size_t bytes = footprint(key.size(), value_size);
    if (value_size > std::numeric_limits<std::uint32_t>::max() ||
        bytes + table_bytes() > config_.max_memory) {
        return store_result::too_large;
    }
    time_point expiry = options.expiry;
    std::uint32_t flags = options.flags;
    if (concat || options.keep_ttl) expiry = old ? old->expiry : no_expiry;
    if (concat) flags = old->flags;
    if (expiry <= now) {
        // Stored and expired at once (memcached's negative exptime).
        if (old) {
            unlink_and_free(old);
            if (observer_) observer_->on_remove(key);
        }
        return store_result::stored;
    }
    const std::size_t freed = old ? footprint(old->key_size, old->value_size) : 0;
    if (!make_room(bytes > freed ? bytes - freed : 0, old)) {
        ++stats_.out_of_memory;
        return store_result::no_memory;
    }
    if (old && !concat && old->value_size == value_size) {
        // The usual update (same size): overwrite in place, no allocation.
        // A compaction's scan may see the new value; the record on_set adds
        // to the rewrite's tail carries it too, so the snapshot stays right.
        std::memmove(old->data() + old->key_size, value.data(), value.size());
        old->flags = flags;
        set_expiry(old, expiry);
        old->cas = next_cas();
        lru_bump(old);
        ++stats_.total_items;
        if (observer_) observer_->on_set(view(old));
        return store_result::stored;
    }
    item* it = allocate(key, hash, value_size);
    char* dst = it->data() + key.size();
    if (options.mode == set_mode::append) {
        std::memcpy(dst, old->value().data(), old->value_size);
        std::memcpy(dst + old->value_size, value.data(), value.size());
    } else if (options.mode == set_mode::prepend) {
        std::memcpy(dst, value.data(), value.size());
        std::memcpy(dst + value.size(), old->value().data(), old->value_size);
    } else {
        std::memcpy(dst, value.data(), value.size());
    }
    it->flags = flags;
    it->expiry = expiry;
    it->cas = next_cas();
    if (old) unlink_and_free(old);
    link(it);
    ++stats_.total_items;
    if (observer_) observer_->on_set(view(it));
    return store_result::stored;
}

store_result store::remove(std::string_view key) {
    change_scope change(*this);
    if (observer_ && !observer_->accepting()) return store_result::no_disk;
    item* it = find_live(key, key_hash(key), config_.now());
    if (!it) {
        ++stats_.delete_misses;
        return store_result::not_found;
    }
    ++stats_.delete_hits;
    unlink_and_free(it);
    if (observer_) observer_->on_remove(key);
    return store_result::deleted;
}

incr_result store::incr(std::string_view key, std::uint64_t delta) {
    return add_to_number(key, delta, true);
}

incr_result store::decr(std::string_view key, std::uint64_t delta) {
    return add_to_number(key, delta, false);
}

// memcached's incr/decr: incr wraps at 2^64, decr stops at 0. The new number
// is written in place, padded with spaces, when it fits (a decrement always
// does); a longer one rewrites the item.
incr_result store::add_to_number(std::string_view key, std::uint64_t delta, bool increment) {
    change_scope change(*this);
    if (observer_ && !observer_->accepting()) return {store_result::no_disk};
    item* it = find_live(key, key_hash(key), config_.now());
    if (!it) {
        ++(increment ? stats_.incr_misses : stats_.decr_misses);
        return {store_result::not_found};
    }
    std::uint64_t value;
    if (!parse_memcached_number(it->value(), value)) return {store_result::non_numeric};
    ++(increment ? stats_.incr_hits : stats_.decr_hits);
    value = increment ? value + delta : (delta > value ? 0 : value - delta);
    char digits[24];
    auto len =
        static_cast<std::size_t>(std::to_chars(digits, digits + sizeof digits, value).ptr - digits);
    if (len <= it->value_size) {
        char* dst = it->data() + it->key_size;
        std::memcpy(dst, digits, len);
        std::memset(dst + len, ' ', it->value_size - len);
        it->cas = next_cas();
        lru_bump(it);
        if (observer_) observer_->on_set(view(it));
        return {store_result::stored, value};
    }
    set_options options;
    options.flags = it->flags;
    options.expiry = it->expiry;
    --stats_.cmd_set;  // internal rewrite, not a client set
    const auto r = set(key, std::string_view(digits, len), options);
    if (r != store_result::stored) return {r};
    return {store_result::stored, value};
}

incr_by_result store::incr_by(std::string_view key, std::int64_t delta) {
    change_scope change(*this);
    const time_point now = config_.now();
    item* it = find_live(key, key_hash(key), now);
    std::int64_t value = 0;
    if (it && !parse_strict_int64(it->value(), value)) return {store_result::non_numeric};
    std::int64_t result;
    if (__builtin_add_overflow(value, delta, &result)) return {store_result::out_of_range};
    char digits[24];
    auto len = static_cast<std::size_t>(std::to_chars(digits, digits + sizeof digits, result).ptr -
                                        digits);
    set_options options;
    if (it) {
        options.flags = it->flags;
        options.expiry = it->expiry;
    }
    --stats_.cmd_set;
    const auto r = set(key, std::string_view(digits, len), options);
    if (r != store_result::stored) return {r};
    return {store_result::stored, result};
}

store_result store::touch(std::string_view key, time_point expiry) {
    change_scope change(*this);
    ++stats_.cmd_touch;
    if (observer_ && !observer_->accepting()) return store_result::no_disk;
    const time_point now = config_.now();
    item* it = find_live(key, key_hash(key), now);
    if (!it) {
        ++stats_.touch_misses;
        return store_result::not_found;
    }
    ++stats_.touch_hits;
    if (expiry <= now) {
        unlink_and_free(it);
        if (observer_) observer_->on_remove(key);
        return store_result::touched;
    }
    set_expiry(it, expiry);
    lru_bump(it);
    if (observer_) observer_->on_expire(key, expiry);
    return store_result::touched;
}

void store::flush() {
    change_scope change(*this);
    ++stats_.cmd_flush;
    if (observer_) observer_->on_flush();
    if (readers_) limbo_.reserve(limbo_.size() + count_);  // retire() must not throw
    reset_tables(initial_buckets);
    for (item* it = lru_.head(); it;) {
        item* next = it->lru_next;
        retire(it, &std::free);
        it = next;
    }
    lru_.clear();
    with_ttl_.clear();
    count_ = 0;
    items_bytes_ = 0;
    payload_bytes_ = 0;
}

void store::flush_at(time_point when) {
    if (when <= config_.now()) {
        flush_timer_.cancel();
        flush();
        return;
    }
    flush_timer_.arm(when);
}

}  // namespace percore::kv
