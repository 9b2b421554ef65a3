// libFuzzer target for the kv app's log record decoder
// (apps/kv/log/log_format.hpp), which reads whatever a crash, a torn write or a
// bad disk left in a log file. The input is used twice:
//  - as a log file: records are decoded from the start the way scan_log()
//    does, and every result must keep decode_record()'s contract (views in
//    the buffer, need_more for any prefix of a good record, an accepted
//    record is exactly what the encoder writes for it);
//  - as a recipe: its bytes choose records that are encoded with the
//    encode_*() functions, optionally followed by zero padding and with one
//    byte changed; decoding must give back exactly those records, stop at
//    the changed one as corrupt (CRC32C catches every one-byte change), and
//    at the padding as the end of the log.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "log/log_format.hpp"

using namespace percore::kv;
using percore::fuzz::within;

namespace {

// The generation every record is sealed with and decoded against.
constexpr std::uint32_t generation = 7;

// The record as the encoder writes it.
std::string encode(const log_record& r) {
    std::string out;
    switch (r.type) {
        case record_type::header:
            encode_header(out, r.shard, r.shard_count, r.generation);
            break;
        case record_type::set:
            encode_set(out, generation, r.key, r.value, r.flags, r.expiry_ms);
            break;
        case record_type::remove:
            encode_remove(out, generation, r.key);
            break;
        case record_type::expire:
            encode_expire(out, generation, r.key, r.expiry_ms);
            break;
        case record_type::flush:
            encode_flush(out, generation);
            break;
    }
    return out;
}

std::string describe(const log_record& r) {
    return std::to_string(static_cast<int>(r.type)) + " key=" + std::string(r.key) +
           " value=" + std::string(r.value) + " flags=" + std::to_string(r.flags) +
           " exp=" + std::to_string(r.expiry_ms) + " shard=" + std::to_string(r.shard) + "/" +
           std::to_string(r.shard_count) + " generation=" + std::to_string(r.generation);
}

// Decodes `bytes` as a file and checks each result; returns the offset where
// decoding stopped and the last status.
decode_result scan(std::string_view bytes, std::size_t& pos, std::vector<std::string>* records) {
    pos = 0;
    for (;;) {
        const std::string_view rest = bytes.substr(pos);
        const decode_result r = decode_record(rest, generation);
        switch (r.status) {
            case decode_status::ok: {
                FUZZ_CHECK(r.size >= record_header_size && r.size <= rest.size());
                FUZZ_CHECK(r.size - record_header_size <= max_record_payload);
                FUZZ_CHECK(within(r.record.key, rest.data(), r.size));
                FUZZ_CHECK(within(r.record.value, rest.data(), r.size));
                FUZZ_CHECK(r.record.expiry_ms >= 0);
                if (r.record.type == record_type::header)
                    FUZZ_CHECK(r.record.shard < r.record.shard_count);
                // Only the encoder's exact bytes are accepted (but for a
                // version 1 header, which the encoder no longer writes).
                if (static_cast<unsigned char>(rest[13]) == 1) {
                    FUZZ_CHECK(r.record.type == record_type::header && r.record.generation == 0);
                } else {
                    FUZZ_CHECK(encode(r.record) == rest.substr(0, r.size));
                }
                // Any prefix of it asks for more (what the reader's window relies on).
                for (std::size_t k : {std::size_t{0}, record_header_size - 1, record_header_size,
                                      r.size / 2, r.size - 1}) {
                    if (k >= r.size) continue;
                    const decode_result p = decode_record(rest.substr(0, k), generation);
                    FUZZ_CHECK(p.status == decode_status::need_more);
                    FUZZ_CHECK(p.size == (k < record_header_size ? record_header_size : r.size));
                }
                if (records) records->push_back(describe(r.record));
                pos += r.size;
                continue;
            }
            case decode_status::need_more:
                FUZZ_CHECK(r.size > rest.size());
                FUZZ_CHECK(r.size <= record_header_size + std::size_t{max_record_payload});
                return r;
            case decode_status::end:
                FUZZ_CHECK(rest.size() >= record_header_size);
                FUZZ_CHECK(rest.substr(0, record_header_size) ==
                           std::string_view("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16));
                return r;
            case decode_status::corrupt:
                FUZZ_CHECK(r.error && *r.error);
                FUZZ_CHECK(rest.size() >= record_header_size);
                return r;
        }
        FUZZ_CHECK(!"unknown decode status");
    }
}

// Reads the recipe's bytes.
class recipe {
  public:
    recipe(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    bool empty() const noexcept { return pos_ >= size_; }
    std::uint8_t byte() noexcept { return pos_ < size_ ? data_[pos_++] : 0; }
    std::uint64_t number(int bytes) noexcept {
        std::uint64_t v = 0;
        for (int i = 0; i < bytes; ++i) v |= std::uint64_t{byte()} << (8 * i);
        return v;
    }
    std::string_view bytes(std::size_t n) noexcept {
        n = std::min(n, size_ - std::min(pos_, size_));
        const std::string_view v(reinterpret_cast<const char*>(data_) + pos_, n);
        pos_ += n;
        return v;
    }

  private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
};

// An expiry the recipe picks: none, typical, huge or invalid (negative).
std::int64_t pick_expiry(recipe& in) {
    switch (in.byte() % 4) {
        case 0:
            return 0;
        case 1:
            return 1700000000000 + static_cast<std::int64_t>(in.number(4));
        case 2:
            return static_cast<std::int64_t>(in.number(8) >> 1);
        default:
            return -1 - static_cast<std::int64_t>(in.number(2));
    }
}

void check_recipe(const std::uint8_t* data, std::size_t size) {
    recipe in(data, size);
    std::string file;
    std::vector<std::size_t> starts;    // where each record begins
    std::vector<std::string> expected;  // what decoding each gives back
    std::vector<bool> valid;            // false: the decoder must refuse it
    std::size_t padding = 0;
    bool mutate = false;
    std::size_t mutate_at = 0;
    std::uint8_t mutate_xor = 0;
    while (!in.empty() && starts.size() < 64) {
        const std::uint8_t op = in.byte();
        log_record r;
        switch (op % 8) {
            case 0:
                r.type = record_type::header;
                r.shard = in.byte() % 5;
                r.shard_count = in.byte() % 5;
                r.generation = in.byte() % 3;  // 0 is refused
                break;
            case 1:
            case 2:
                r.type = record_type::set;
                r.key = in.bytes(in.byte());
                r.value = in.bytes(op % 2 ? in.byte() : in.number(2) % 2000);
                r.flags = static_cast<std::uint32_t>(in.number(4));
                r.expiry_ms = pick_expiry(in);
                break;
            case 3:
                r.type = record_type::remove;
                r.key = in.bytes(in.byte());
                break;
            case 4:
                r.type = record_type::expire;
                r.key = in.bytes(in.byte());
                r.expiry_ms = pick_expiry(in);
                break;
            case 5:
                r.type = record_type::flush;
                break;
            case 6:
                padding = in.byte();
                continue;
            default:
                mutate = true;
                mutate_at = static_cast<std::size_t>(in.number(2));
                mutate_xor = in.byte() | 1;  // never 0: the byte does change
                continue;
        }
        starts.push_back(file.size());
        file += encode(r);
        valid.push_back(r.expiry_ms >= 0 &&
                        (r.type != record_type::header ||
                         (r.shard_count > 0 && r.shard < r.shard_count && r.generation != 0)));
        expected.push_back(describe(r));
    }
    const std::size_t records_end = file.size();
    file.append(padding, '\0');
    // The record the changed byte falls in (only bytes of records are changed).
    std::size_t hit = starts.size();
    if (mutate && records_end > 0) {
        mutate_at %= records_end;
        file[mutate_at] = static_cast<char>(file[mutate_at] ^ mutate_xor);
        hit = 0;
        while (hit + 1 < starts.size() && starts[hit + 1] <= mutate_at) ++hit;
    }

    std::size_t pos = 0;
    std::vector<std::string> got;
    const decode_result last = scan(file, pos, &got);
    // Decoding stops at the first refused or changed record, else at the end.
    std::size_t stop = 0;
    while (stop < starts.size() && stop != hit && valid[stop]) ++stop;
    for (std::size_t i = 0; i < std::min(stop, got.size()); ++i) {
        if (got[i] != expected[i]) {
            std::fprintf(stderr, "record %zu encoded: %s\n            decoded: %s\n", i,
                         expected[i].c_str(), got[i].c_str());
            FUZZ_CHECK(!"a record decodes differently from what was encoded");
        }
    }
    FUZZ_CHECK(got.size() == stop);
    if (stop < starts.size()) {
        FUZZ_CHECK(pos == starts[stop]);
        FUZZ_CHECK(last.status == decode_status::corrupt);
    } else {
        FUZZ_CHECK(pos == records_end);
        FUZZ_CHECK(last.status ==
                   (padding >= record_header_size ? decode_status::end : decode_status::need_more));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::size_t pos = 0;
    scan(std::string_view(reinterpret_cast<const char*>(data), size), pos, nullptr);
    check_recipe(data, size);
    return 0;
}
