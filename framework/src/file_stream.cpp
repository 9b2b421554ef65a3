#include "percore/file_stream.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "percore/errors.hpp"
#include "percore/fiber.hpp"
#include "percore/log.hpp"

namespace percore {

namespace {

stream_options normalized(stream_options o, const dma_file& f) {
    o.buffer_size = align_up(std::max(o.buffer_size, f.alignment()), f.alignment());
    o.buffers = std::max(o.buffers, 1u);
    return o;
}

// Waits for the futures of abandoned background operations (they use the
// stream's file), logging failures nobody will read otherwise.
void wait_abandoned(std::deque<future<aligned_buffer>>& ops, const std::string& path) {
    while (!ops.empty()) {
        auto f = std::move(ops.front());
        ops.pop_front();
        try {
            f.get();
        } catch (const std::exception& e) {
            logger().warn("{}: background stream I/O failed after the stream gave up: {}", path,
                          e.what());
        }
    }
}

}  // namespace

// --- dma_stream_writer -------------------------------------------------------------

dma_stream_writer::dma_stream_writer(dma_file file, stream_options options, std::uint64_t start)
    : file_(std::move(file)), options_(normalized(options, file_)) {
    buffer_pos_ = align_down(start, file_.alignment());
    disk_size_ = file_.size();
    current_ = take_buffer();
    const std::size_t head = start - buffer_pos_;
    if (head > 0) {
        // Appending mid-block: keep the block's first bytes (read-modify-write).
        std::size_t got = file_.read_into(buffer_pos_, current_.memory(), file_.alignment());
        if (got < head) {
            throw io_error(EINVAL, "dma_stream_writer " + file_.path() + ": start " +
                                       std::to_string(start) + " is past the end of the file (" +
                                       std::to_string(buffer_pos_ + got) + ")");
        }
    }
    fill_ = head;
    flushed_ = start;
}

dma_stream_writer::~dma_stream_writer() {
    wait_abandoned(in_flight_, file_.path());
    if (!closed_ && !error_ && position() > flushed_) {
        logger().warn("{}: dma_stream_writer destroyed without close(): {} bytes not flushed",
                      file_.path(), position() - flushed_);
    }
}

void dma_stream_writer::check_usable() {
    if (error_) std::rethrow_exception(error_);
    if (closed_) throw io_error(EBADF, "write to closed dma_stream_writer " + file_.path());
}

aligned_buffer dma_stream_writer::take_buffer() {
    if (!spare_.empty()) {
        aligned_buffer b = std::move(spare_.back());
        spare_.pop_back();
        return b;
    }
    // `buffers` in all, the one being filled included.
    if (in_flight_.size() < options_.buffers) {
        return file_.allocate_buffer(options_.buffer_size);
    }
    auto oldest = std::move(in_flight_.front());
    in_flight_.pop_front();
    return oldest.get();
}

void dma_stream_writer::submit_current() {
    const std::uint64_t pos = buffer_pos_;
    const std::size_t len = fill_;
    in_flight_.push_back(spawn(spawn_options{.name = "dma_stream_writer"},
                               [this, buf = std::move(current_), pos, len]() mutable {
                                   file_.write_at(pos, buf.memory(), len);
                                   return std::move(buf);
                               }));
    disk_size_ = std::max(disk_size_, pos + len);
    buffer_pos_ += len;
    fill_ = 0;
    current_ = take_buffer();
}

void dma_stream_writer::write(const void* data, std::size_t len) {
    check_usable();
    try {
        const auto* in = static_cast<const std::byte*>(data);
        while (len > 0) {
            const std::size_t n = std::min(len, options_.buffer_size - fill_);
            std::memcpy(current_.memory() + fill_, in, n);
            fill_ += n;
            in += n;
            len -= n;
            if (fill_ == options_.buffer_size) submit_current();
        }
    } catch (...) {
        error_ = std::current_exception();
        throw;
    }
}

void dma_stream_writer::wait_all() {
    while (!in_flight_.empty()) {
        auto f = std::move(in_flight_.front());
        in_flight_.pop_front();
        spare_.push_back(f.get());
    }
}

void dma_stream_writer::flush() {
    check_usable();
    try {
        if (fill_ > 0) {
            // The partial block goes out padded with zeros; the buffer keeps
            // its bytes and is rewritten whole once it fills up.
            const std::size_t padded = align_up(fill_, file_.alignment());
            std::memset(current_.memory() + fill_, 0, padded - fill_);
            file_.write_at(buffer_pos_, current_.memory(), padded);
            disk_size_ = std::max(disk_size_, buffer_pos_ + padded);
        }
        wait_all();
        if (disk_size_ != position()) {
            file_.truncate(position());
            disk_size_ = position();
        }
        file_.fdatasync();
        flushed_ = position();
    } catch (...) {
        error_ = std::current_exception();
        throw;
    }
}

void dma_stream_writer::close() {
    if (closed_) return;
    flush();
    file_.close();
    closed_ = true;
}

// --- dma_stream_reader -------------------------------------------------------------

dma_stream_reader::dma_stream_reader(dma_file file, stream_options options, std::uint64_t start,
                                     std::optional<std::uint64_t> end)
    : file_(std::move(file)), options_(normalized(options, file_)) {
    end_ = end ? *end : file_.size();
    position_ = std::min(start, end_);
    fetch_pos_ = align_down(position_, file_.alignment());
    fetch_more();
}

dma_stream_reader::~dma_stream_reader() {
    wait_abandoned(ahead_, file_.path());
}

void dma_stream_reader::fetch_more() {
    while (ahead_.size() < options_.buffers && fetch_pos_ < end_) {
        const std::uint64_t pos = fetch_pos_;
        const std::size_t want = static_cast<std::size_t>(
            std::min<std::uint64_t>(options_.buffer_size, align_up(end_ - pos, file_.alignment())));
        const std::size_t skip = position_ > pos ? static_cast<std::size_t>(position_ - pos) : 0;
        aligned_buffer buf;
        if (!spare_.empty()) {
            buf = std::move(spare_.back());
            spare_.pop_back();
        } else {
            buf = file_.allocate_buffer(options_.buffer_size);
        }
        ahead_.push_back(spawn(
            spawn_options{.name = "dma_stream_reader"},
            [this, buf = std::move(buf), pos, want, skip]() mutable {
                std::size_t got = file_.read_into(pos, buf.memory(), want);
                // The file shrank under us: the end moves.
                if (got < want && pos + got < end_) end_ = pos + got;
                const std::uint64_t limit =
                    std::min<std::uint64_t>(got, end_ - std::min(end_, pos));
                buf.set_window(skip, limit > skip ? static_cast<std::size_t>(limit - skip) : 0);
                return std::move(buf);
            }));
        fetch_pos_ += want;
    }
}

bool dma_stream_reader::next_buffer() {
    if (error_) std::rethrow_exception(error_);
    while (current_.empty()) {
        if (position_ >= end_) return false;
        if (ahead_.empty()) {
            fetch_more();
            if (ahead_.empty()) return false;
        }
        if (current_.capacity() > 0) spare_.push_back(std::move(current_));
        auto f = std::move(ahead_.front());
        ahead_.pop_front();
        try {
            current_ = f.get();
        } catch (...) {
            // A lost chunk would leave a gap in the stream: stop for good.
            error_ = std::current_exception();
            throw;
        }
        fetch_more();
    }
    return true;
}

std::span<const std::byte> dma_stream_reader::read_view(std::size_t max) {
    if (max == 0 || !next_buffer()) return {};
    const std::size_t n = std::min(max, current_.size());
    std::span<const std::byte> view(current_.data(), n);
    current_.set_window(static_cast<std::size_t>(current_.data() - current_.memory()) + n,
                        current_.size() - n);
    position_ += n;
    return view;
}

std::size_t dma_stream_reader::read(void* dst, std::size_t len) {
    auto* out = static_cast<std::byte*>(dst);
    std::size_t done = 0;
    while (done < len) {
        auto view = read_view(len - done);
        if (view.empty()) break;
        std::memcpy(out + done, view.data(), view.size());
        done += view.size();
    }
    return done;
}

std::string dma_stream_reader::read(std::size_t len) {
    std::string s(len, '\0');
    s.resize(read(s.data(), len));
    return s;
}

void dma_stream_reader::read_exactly(void* dst, std::size_t len) {
    const std::uint64_t at = position_;
    const std::size_t got = read(dst, len);
    if (got < len) {
        throw end_of_file_error("read_exactly " + file_.path() + ": end of file at " +
                                std::to_string(at + got) + " while reading " + std::to_string(len) +
                                " bytes from " + std::to_string(at));
    }
}

std::string dma_stream_reader::read_exactly(std::size_t len) {
    std::string s(len, '\0');
    read_exactly(s.data(), len);
    return s;
}

bool dma_stream_reader::eof() {
    return !next_buffer();
}

void dma_stream_reader::close() {
    if (closed_) return;
    wait_abandoned(ahead_, file_.path());
    file_.close();
    closed_ = true;
}

}  // namespace percore
