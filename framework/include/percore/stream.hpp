// Buffered streams over a connection, for protocol code: input_stream reads
// lines and fixed-size records without a syscall per call; output_stream
// gathers small writes into one send per flush.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "percore/clock.hpp"
#include "percore/net.hpp"

namespace percore {

// Reads from a connection through a buffer. Views it returns point into that
// buffer and stay valid until the next call on the stream.
class input_stream {
  public:
    // `buffer_size` is the usual read size; the buffer grows up to
    // `max_buffer` for a long record or line, never further (bad input gets
    // an error, not unbounded memory).
    explicit input_stream(connection& conn, std::size_t buffer_size = 16 * 1024,
                          std::size_t max_buffer = 16 * 1024 * 1024);

    // Applies to every following read until changed (nullopt: none); a read
    // past it throws timeout_error.
    void set_deadline(std::optional<time_point> deadline) noexcept { deadline_ = deadline; }

    // Up to out.size() bytes: the buffered ones, or else one read. 0 at EOF.
    std::size_t read(std::span<char> out);
    // Exactly n bytes; fewer only at EOF (empty if EOF came first). Throws
    // io_error(EMSGSIZE) if n exceeds max_buffer.
    std::string_view read_exactly(std::size_t n);
    // The bytes up to and including `delimiter`. At EOF: what remains
    // (possibly empty), without the delimiter. io_error(EMSGSIZE) when `max`
    // bytes came without the delimiter (max is capped at max_buffer).
    std::string_view read_until(std::string_view delimiter, std::size_t max);

    // Bytes read from the socket and not consumed yet.
    std::string_view buffered() const noexcept { return {buffer_.get() + begin_, end_ - begin_}; }
    // Drops the first n buffered bytes (after parsing buffered() directly).
    void consume(std::size_t n) noexcept { begin_ += std::min(n, end_ - begin_); }
    // Reads more into the buffer (at least one byte); false at EOF.
    bool fill();
    // True once the peer's EOF was seen.
    bool eof() const noexcept { return eof_; }

  private:
    void make_room(std::size_t needed);

    connection& conn_;
    std::unique_ptr<char[]> buffer_;
    std::size_t capacity_;
    std::size_t initial_capacity_;
    std::size_t max_buffer_;
    std::size_t begin_ = 0;
    std::size_t end_ = 0;
    bool eof_ = false;
    std::optional<time_point> deadline_;
};

// Writes to a connection through a buffer: write() copies small pieces, and
// flush() sends them in one go. Data still buffered when the stream is
// destroyed is dropped: call flush().
class output_stream {
  public:
    explicit output_stream(connection& conn, std::size_t buffer_size = 16 * 1024);

    // Buffers data, sending when the buffer fills; a piece as large as the
    // buffer goes out at once together with what was buffered (one sendmsg).
    void write(std::string_view data);
    // Sends everything buffered.
    void flush();
    std::size_t buffered() const noexcept { return used_; }

  private:
    connection& conn_;
    std::unique_ptr<char[]> buffer_;
    std::size_t capacity_;
    std::size_t used_ = 0;
};

}  // namespace percore
