#include "log/log_format.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace percore::kv {

namespace {

constexpr std::string_view header_magic = "PKVLOG01";

// --- CRC32C --------------------------------------------------------------------

constexpr std::array<std::uint32_t, 256> make_crc_table() {
    std::array<std::uint32_t, 256> table{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        table[i] = c;
    }
    return table;
}
constexpr auto crc_table = make_crc_table();

std::uint32_t crc32c_table(std::uint32_t crc, const unsigned char* p, std::size_t n) noexcept {
    while (n-- > 0) crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) std::uint32_t crc32c_sse42(std::uint32_t crc,
                                                             const unsigned char* p,
                                                             std::size_t n) noexcept {
    std::uint64_t c = crc;
    while (n >= 8) {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
        p += 8;
        n -= 8;
    }
    auto c32 = static_cast<std::uint32_t>(c);
    while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
    return c32;
}
const bool have_sse42 = __builtin_cpu_supports("sse4.2");
#endif

// --- little-endian fields ----------------------------------------------------------

void put32(char* p, std::uint32_t v) noexcept {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
void put64(char* p, std::uint64_t v) noexcept {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
std::uint32_t get32(const char* p) noexcept {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
    return v;
}
std::uint64_t get64(const char* p) noexcept {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
    return v;
}

// Reserves a record of `payload` bytes at the end of `out`, returns where
// its payload goes; finish() then fills in the header.
char* begin_record(std::string& out, std::size_t payload) {
    const std::size_t at = out.size();
    out.resize(at + record_header_size + payload);
    return out.data() + at + record_header_size;
}

// `seed`: the file's generation, 0 for the header record.
void finish(std::string& out, std::size_t payload, record_type type, std::uint32_t seed) {
    char* h = out.data() + out.size() - payload - record_header_size;
    put32(h + 4, static_cast<std::uint32_t>(payload));
    put32(h + 8, crc32c(seed, h + record_header_size, payload));
    h[12] = static_cast<char>(type);
    h[13] = static_cast<char>(log_format_version);
    h[14] = h[15] = 0;
    put32(h, crc32c(seed, h + 4, record_header_size - 4));
}

void copy(char* dst, std::string_view src) noexcept {
    if (!src.empty()) std::memcpy(dst, src.data(), src.size());
}

// Version 1 is still read (generation 0, log_format.hpp).
bool known_version(unsigned char version) noexcept {
    return version == 1 || version == log_format_version;
}

decode_result corrupt(const char* why) noexcept {
    decode_result r;
    r.status = decode_status::corrupt;
    r.error = why;
    return r;
}

}  // namespace

std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t size) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    crc = ~crc;
#if defined(__x86_64__)
    if (have_sse42) return ~crc32c_sse42(crc, p, size);
#endif
    return ~crc32c_table(crc, p, size);
}

std::uint32_t next_generation(std::uint32_t g) noexcept {
    return g + 1 == 0 ? 1 : g + 1;
}

bool could_start_record(std::string_view bytes) noexcept {
    if (bytes.size() < record_header_size) return true;
    const auto type = static_cast<unsigned char>(bytes[12]);
    return type >= static_cast<unsigned char>(record_type::header) &&
           type <= static_cast<unsigned char>(record_type::flush) &&
           known_version(static_cast<unsigned char>(bytes[13])) && bytes[14] == 0 && bytes[15] == 0;
}

decode_result decode_record(std::string_view bytes, std::uint32_t generation) noexcept {
    decode_result r;
    if (bytes.size() < record_header_size) {
        // A zero prefix may be the start of the end marker: wait for all of it.
        r.status = decode_status::need_more;
        r.size = record_header_size;
        return r;
    }
    const char* h = bytes.data();
    bool zero = true;
    for (std::size_t i = 0; i < record_header_size && zero; ++i) zero = h[i] == 0;
    if (zero) {
        r.status = decode_status::end;
        return r;
    }
    const auto type = static_cast<record_type>(static_cast<unsigned char>(h[12]));
    // The claimed type picks the seed; the checksum then proves the claim.
    const std::uint32_t seed = type == record_type::header ? 0 : generation;
    if (get32(h) != crc32c(seed, h + 4, record_header_size - 4))
        return corrupt("bad header checksum");
    const std::uint32_t len = get32(h + 4);
    const auto version = static_cast<unsigned char>(h[13]);
    if (!known_version(version)) return corrupt("unknown format version");
    // Version 1 had no generations: its files are generation 0.
    if (version == 1 && type != record_type::header && generation != 0)
        return corrupt("version 1 record after a version 2 header");
    if (h[14] != 0 || h[15] != 0) return corrupt("reserved bytes not zero");
    if (len > max_record_payload) return corrupt("record length too large");
    const std::size_t total = record_header_size + std::size_t{len};
    if (bytes.size() < total) {
        r.status = decode_status::need_more;
        r.size = total;
        return r;
    }
    const char* p = h + record_header_size;
    if (get32(h + 8) != crc32c(seed, p, len)) return corrupt("bad payload checksum");
    log_record& rec = r.record;
    rec.type = type;
    switch (type) {
        case record_type::header:
            if (len != header_magic.size() + (version == 1 ? 8 : 12))
                return corrupt("bad header record size");
            if (std::string_view(p, header_magic.size()) != header_magic)
                return corrupt("bad header magic");
            rec.shard = get32(p + 8);
            rec.shard_count = get32(p + 12);
            rec.generation = version == 1 ? 0 : get32(p + 16);
            if (version != 1 && rec.generation == 0) return corrupt("generation 0 in a header");
            if (rec.shard_count == 0 || rec.shard >= rec.shard_count)
                return corrupt("bad shard numbers in header record");
            break;
        case record_type::set: {
            if (len < 16) return corrupt("set record too short");
            rec.expiry_ms = static_cast<std::int64_t>(get64(p));
            rec.flags = get32(p + 8);
            const std::uint32_t key_len = get32(p + 12);
            if (key_len > len - 16) return corrupt("set record key length too large");
            rec.key = std::string_view(p + 16, key_len);
            rec.value = std::string_view(p + 16 + key_len, len - 16 - key_len);
            if (rec.expiry_ms < 0) return corrupt("negative expiry");
            break;
        }
        case record_type::remove:
            rec.key = std::string_view(p, len);
            break;
        case record_type::expire:
            if (len < 8) return corrupt("expire record too short");
            rec.expiry_ms = static_cast<std::int64_t>(get64(p));
            rec.key = std::string_view(p + 8, len - 8);
            if (rec.expiry_ms < 0) return corrupt("negative expiry");
            break;
        case record_type::flush:
            if (len != 0) return corrupt("flush record with a payload");
            break;
        default:
            return corrupt("unknown record type");
    }
    r.status = decode_status::ok;
    r.size = total;
    return r;
}

void encode_header(std::string& out, std::uint32_t shard, std::uint32_t shard_count,
                   std::uint32_t generation) {
    const std::size_t len = header_magic.size() + 12;
    char* p = begin_record(out, len);
    std::memcpy(p, header_magic.data(), header_magic.size());
    put32(p + 8, shard);
    put32(p + 12, shard_count);
    put32(p + 16, generation);
    finish(out, len, record_type::header, 0);
}

void encode_set(std::string& out, std::uint32_t generation, std::string_view key,
                std::string_view value, std::uint32_t flags, std::int64_t expiry_ms) {
    const std::size_t len = 16 + key.size() + value.size();
    char* p = begin_record(out, len);
    put64(p, static_cast<std::uint64_t>(expiry_ms));
    put32(p + 8, flags);
    put32(p + 12, static_cast<std::uint32_t>(key.size()));
    copy(p + 16, key);
    copy(p + 16 + key.size(), value);
    finish(out, len, record_type::set, generation);
}

void encode_remove(std::string& out, std::uint32_t generation, std::string_view key) {
    char* p = begin_record(out, key.size());
    copy(p, key);
    finish(out, key.size(), record_type::remove, generation);
}

void encode_expire(std::string& out, std::uint32_t generation, std::string_view key,
                   std::int64_t expiry_ms) {
    const std::size_t len = 8 + key.size();
    char* p = begin_record(out, len);
    put64(p, static_cast<std::uint64_t>(expiry_ms));
    copy(p + 8, key);
    finish(out, len, record_type::expire, generation);
}

void encode_flush(std::string& out, std::uint32_t generation) {
    begin_record(out, 0);
    finish(out, 0, record_type::flush, generation);
}

}  // namespace percore::kv
