// The kv app's on-disk log record format (see docs/persistence.md): every
// change a shard makes is appended to its log as one self-checking record.
//
//   offset size  field
//   0      4     header CRC32C of bytes 4..15 (so a damaged length is caught
//                before it is trusted)
//   4      4     payload length (at most max_record_payload)
//   8      4     payload CRC32C
//   12     1     record type (record_type)
//   13     1     format version (2; 1 is still read)
//   14     2     zero
//   16     len   payload (little-endian integers):
//     header: "PKVLOG01" u32 shard u32 shard_count u32 generation
//             (first record of a file; version 1 has no generation: 0)
//     set:    i64 expiry_ms u32 flags u32 key_len key value
//     remove: key
//     expire: i64 expiry_ms key
//     flush:  (empty)
// expiry_ms is an absolute unix time in milliseconds, 0 for none. Sixteen
// zero bytes where a header should be mark the end of the data (files are
// preallocated with zeros and the last block is padded with them).
//
// Both CRCs of every record but the header record are seeded with the file's
// generation (from its header). A compaction reuses the log it replaced for
// its next snapshot instead of writing fresh zeros, with the next generation:
// the old records left past the new end then fail their checksums, so they
// are never replayed, not even after a torn write exposes them.
//
// decode_record() is a pure function over a byte buffer: no I/O, no
// allocation, never reads outside the buffer, whatever the bytes are (a
// libFuzzer target runs it on garbage).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace percore::kv {

inline constexpr std::size_t record_header_size = 16;
// A set record's bytes besides its key and value (header, expiry, flags, key length).
inline constexpr std::size_t set_record_overhead = record_header_size + 16;
// A file's header record (the first record of every log).
inline constexpr std::size_t header_record_size = record_header_size + 20;
// Largest payload accepted: a 1 GiB value plus its key and fields. Longer
// lengths are corruption, so garbage never makes a reader buffer gigabytes.
inline constexpr std::uint32_t max_record_payload = (1u << 30) + (1u << 20);
inline constexpr std::uint8_t log_format_version = 2;
// A new file's generation (a compaction's is next_generation() of the log's).
inline constexpr std::uint32_t first_generation = 1;

// What a record does to the shard's store.
enum class record_type : std::uint8_t {
    header = 1,  // names the shard and shard count the file belongs to
    set = 2,     // the key's whole new state (also incr results, appends...)
    remove = 3,  // the key is gone
    expire = 4,  // the key's expiry changed
    flush = 5,   // every key of the shard is gone
};

// A decoded record; the views point into the decoded buffer.
struct log_record {
    record_type type = record_type::flush;
    std::string_view key;
    std::string_view value;
    std::uint32_t flags = 0;
    std::int64_t expiry_ms = 0;     // absolute unix ms; 0: none
    std::uint32_t shard = 0;        // header only
    std::uint32_t shard_count = 0;  // header only
    std::uint32_t generation = 0;   // header only: the other records' checksum seed
};

// Outcome of decode_record().
enum class decode_status : std::uint8_t {
    ok,         // `record` holds the first record, `size` bytes long
    need_more,  // the buffer ends inside the record: `size` bytes are needed
    end,        // a zero header: no more records here
    corrupt,    // not a valid record (`error` says why)
};

struct decode_result {
    decode_status status = decode_status::corrupt;
    std::size_t size = 0;
    log_record record;
    const char* error = "";
};

// Decodes the record at the start of `bytes` (see decode_status), checking a
// record other than a header against `generation` (its file's).
decode_result decode_record(std::string_view bytes, std::uint32_t generation) noexcept;

// False when the header at the start of `bytes` cannot start a record (its
// type, version or reserved bytes say so), true otherwise, also when fewer
// than record_header_size bytes are there: a test before the checksums, for
// searching megabytes of an older generation's records.
bool could_start_record(std::string_view bytes) noexcept;

// The generation after `g` for a file that replaces one of generation g
// (never 0, which only version-1 files have).
std::uint32_t next_generation(std::uint32_t g) noexcept;

// Appenders of one encoded record each to `out`; all but the header are
// sealed with their file's `generation`.
void encode_header(std::string& out, std::uint32_t shard, std::uint32_t shard_count,
                   std::uint32_t generation);
void encode_set(std::string& out, std::uint32_t generation, std::string_view key,
                std::string_view value, std::uint32_t flags, std::int64_t expiry_ms);
void encode_remove(std::string& out, std::uint32_t generation, std::string_view key);
void encode_expire(std::string& out, std::uint32_t generation, std::string_view key,
                   std::int64_t expiry_ms);
void encode_flush(std::string& out, std::uint32_t generation);

// CRC32C (Castagnoli), as iSCSI/ext4: SSE4.2 when the CPU has it, else a
// table. `crc` is a previous result to continue from (0 to start).
std::uint32_t crc32c(std::uint32_t crc, const void* data, std::size_t size) noexcept;

}  // namespace percore::kv
