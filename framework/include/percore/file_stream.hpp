// Sequential streams over a dma_file, the building blocks of an append-only
// log: dma_stream_writer (write-behind) and dma_stream_reader (read-ahead).
// Each keeps a few aligned buffers of `buffer_size` bytes in flight at once,
// so the disk works while the fiber fills or drains the next buffer.
//
// One fiber at a time uses a stream (they are not locked); a stream owns its
// dma_file and closes it in close().
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "percore/aligned_buffer.hpp"
#include "percore/dma_file.hpp"
#include "percore/future.hpp"

namespace percore {

// Sizes of a stream's buffers.
struct stream_options {
    std::size_t buffer_size = 128 * 1024;  // rounded up to the file's alignment
    unsigned buffers = 4;                  // in flight at once (write-behind / read-ahead), >= 1
};

// read_exactly() reached the end of the file first.
class end_of_file_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Appends bytes of any size to a file through aligned direct writes.
// flush() and close() make everything written so far durable: the partial
// last block is written padded with zeros, the file is truncated back to the
// logical size, then fdatasync. After a crash the file holds at least
// everything up to the last completed flush(), and nothing past its logical
// end. A failed write poisons the writer: every later call rethrows it.
class dma_stream_writer {
  public:
    // Writes from `start` on (the logical end of an existing log, any
    // alignment: a partial first block is read back first). The file's
    // contents past `start` are overwritten.
    explicit dma_stream_writer(dma_file file, stream_options options = {}, std::uint64_t start = 0);
    dma_stream_writer(const dma_stream_writer&) = delete;
    dma_stream_writer& operator=(const dma_stream_writer&) = delete;
    // Waits for writes in flight; bytes not flushed are lost (logged): call close().
    ~dma_stream_writer();

    // Copies the bytes into the stream; full buffers go to disk behind the caller.
    void write(const void* data, std::size_t len);
    void write(std::string_view s) { write(s.data(), s.size()); }
    // Makes everything written so far durable (see above).
    void flush();
    // flush(), then closes the file. Idempotent.
    void close();

    // The logical size: start + bytes written.
    std::uint64_t position() const noexcept { return buffer_pos_ + fill_; }
    dma_file& file() noexcept { return file_; }

  private:
    void check_usable();
    void submit_current();
    aligned_buffer take_buffer();
    void wait_all();

    dma_file file_;
    stream_options options_;
    aligned_buffer current_;
    std::uint64_t buffer_pos_ = 0;  // file position of current_'s first byte (aligned)
    std::size_t fill_ = 0;          // bytes of current_ holding data
    std::uint64_t disk_size_ = 0;   // file size as our writes left it
    std::uint64_t flushed_ = 0;     // position() at the last flush
    std::deque<future<aligned_buffer>> in_flight_;
    std::vector<aligned_buffer> spare_;
    std::exception_ptr error_;
    bool closed_ = false;
};

// Reads a file sequentially with `buffers` reads ahead of the consumer.
class dma_stream_reader {
  public:
    // Reads [start, end); end defaults to the file size at construction.
    explicit dma_stream_reader(dma_file file, stream_options options = {}, std::uint64_t start = 0,
                               std::optional<std::uint64_t> end = std::nullopt);
    dma_stream_reader(const dma_stream_reader&) = delete;
    dma_stream_reader& operator=(const dma_stream_reader&) = delete;
    // Waits for read-ahead still in flight.
    ~dma_stream_reader();

    // Copies up to len bytes; fewer only at end of file (0 there).
    std::size_t read(void* dst, std::size_t len);
    std::string read(std::size_t len);
    // Exactly len bytes, or end_of_file_error (the bytes before the end are
    // consumed) naming the position.
    void read_exactly(void* dst, std::size_t len);
    std::string read_exactly(std::size_t len);
    // Zero copy: up to max bytes from the current buffer (empty at end of
    // file), valid until the next call on the reader.
    std::span<const std::byte> read_view(std::size_t max);
    // True once every byte up to the end was consumed.
    bool eof();
    // Closes the file (after waiting for read-ahead). Idempotent.
    void close();

    std::uint64_t position() const noexcept { return position_; }
    std::uint64_t end() const noexcept { return end_; }
    dma_file& file() noexcept { return file_; }

  private:
    bool next_buffer();
    void fetch_more();
    void drain();

    dma_file file_;
    stream_options options_;
    std::uint64_t position_ = 0;  // next byte the consumer gets
    std::uint64_t end_ = 0;
    std::uint64_t fetch_pos_ = 0;  // aligned position of the next read-ahead
    aligned_buffer current_;       // window: the unread bytes
    std::deque<future<aligned_buffer>> ahead_;
    std::vector<aligned_buffer> spare_;
    std::exception_ptr error_;
    bool closed_ = false;
};

}  // namespace percore
