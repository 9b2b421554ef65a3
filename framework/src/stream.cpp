#include "percore/stream.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "percore/errors.hpp"

namespace percore {

input_stream::input_stream(connection& conn, std::size_t buffer_size, std::size_t max_buffer)
    : conn_(conn),
      buffer_(new char[std::max<std::size_t>(buffer_size, 64)]),
      capacity_(std::max<std::size_t>(buffer_size, 64)),
      initial_capacity_(capacity_),
      max_buffer_(std::max(max_buffer, capacity_)) {}

void input_stream::make_room(std::size_t needed) {
    std::size_t have = end_ - begin_;
    if (needed > max_buffer_) {
        throw io_error(EMSGSIZE, "input_stream: " + std::to_string(needed) +
                                     " bytes wanted, more than its limit of " +
                                     std::to_string(max_buffer_));
    }
    if (begin_ == end_) begin_ = end_ = 0;
    if (capacity_ - begin_ >= needed && end_ < capacity_) return;
    if (capacity_ >= needed) {
        std::memmove(buffer_.get(), buffer_.get() + begin_, have);
    } else {
        std::size_t grown = std::min(max_buffer_, std::max(needed, capacity_ * 2));
        std::unique_ptr<char[]> bigger(new char[grown]);
        std::memcpy(bigger.get(), buffer_.get() + begin_, have);
        buffer_ = std::move(bigger);
        capacity_ = grown;
    }
    begin_ = 0;
    end_ = have;
}

bool input_stream::fill() {
    if (eof_) return false;
    make_room(end_ - begin_ + 1);
    std::size_t n = conn_.read(std::span<char>(buffer_.get() + end_, capacity_ - end_), deadline_);
    if (n == 0) {
        eof_ = true;
        return false;
    }
    end_ += n;
    return true;
}

std::size_t input_stream::read(std::span<char> out) {
    if (out.empty()) return 0;
    if (begin_ == end_) {
        // Large reads bypass the buffer: no copy.
        if (out.size() >= capacity_) {
            if (eof_) return 0;
            std::size_t n = conn_.read(out, deadline_);
            if (n == 0) eof_ = true;
            return n;
        }
        if (!fill()) return 0;
    }
    std::size_t n = std::min(out.size(), end_ - begin_);
    std::memcpy(out.data(), buffer_.get() + begin_, n);
    begin_ += n;
    if (begin_ == end_ && capacity_ > initial_capacity_) {
        // A long record is done: give the large buffer back.
        buffer_.reset(new char[initial_capacity_]);
        capacity_ = initial_capacity_;
        begin_ = end_ = 0;
    }
    return n;
}

std::string_view input_stream::read_exactly(std::size_t n) {
    if (n > max_buffer_) {
        throw io_error(EMSGSIZE, "input_stream::read_exactly(" + std::to_string(n) +
                                     "): more than the limit of " + std::to_string(max_buffer_) +
                                     " bytes");
    }
    while (end_ - begin_ < n) {
        make_room(n);
        if (!fill()) break;
    }
    std::size_t got = std::min(n, end_ - begin_);
    std::string_view result(buffer_.get() + begin_, got);
    begin_ += got;
    return result;
}

std::string_view input_stream::read_until(std::string_view delimiter, std::size_t max) {
    if (delimiter.empty()) throw std::invalid_argument("input_stream::read_until: empty delimiter");
    max = std::min(max, max_buffer_);
    std::size_t searched = 0;  // bytes already known not to start the delimiter
    for (;;) {
        std::string_view data = buffered();
        std::size_t at = data.find(delimiter, searched);
        if (at != std::string_view::npos && at + delimiter.size() <= max) {
            begin_ += at + delimiter.size();
            return data.substr(0, at + delimiter.size());
        }
        if (data.size() >= max) {
            throw io_error(EMSGSIZE, "input_stream::read_until: no delimiter within " +
                                         std::to_string(max) + " bytes");
        }
        searched = data.size() >= delimiter.size() ? data.size() - delimiter.size() + 1 : 0;
        if (!fill()) {
            std::string_view rest = buffered();
            begin_ = end_;
            return rest;
        }
    }
}

output_stream::output_stream(connection& conn, std::size_t buffer_size)
    : conn_(conn),
      buffer_(new char[std::max<std::size_t>(buffer_size, 64)]),
      capacity_(std::max<std::size_t>(buffer_size, 64)) {}

void output_stream::write(std::string_view data) {
    if (data.size() <= capacity_ - used_) {
        std::memcpy(buffer_.get() + used_, data.data(), data.size());
        used_ += data.size();
        if (used_ == capacity_) flush();
        return;
    }
    if (data.size() >= capacity_) {
        iovec pieces[2] = {{buffer_.get(), used_}, {const_cast<char*>(data.data()), data.size()}};
        used_ = 0;  // even if the send fails: the stream is broken then anyway
        conn_.write_all(std::span<const iovec>(pieces, 2));
        return;
    }
    flush();
    std::memcpy(buffer_.get(), data.data(), data.size());
    used_ = data.size();
}

void output_stream::flush() {
    if (used_ == 0) return;
    std::size_t n = used_;
    used_ = 0;
    conn_.write_all(std::string_view(buffer_.get(), n));
}

}  // namespace percore
