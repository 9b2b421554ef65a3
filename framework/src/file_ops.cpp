#include "file_ops.hpp"

#include <liburing.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "percore/errors.hpp"
#include "percore/io.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"

namespace percore::detail {

namespace {

// IORING_OP_FTRUNCATE (Linux 6.9); liburing 2.3 predates it.
constexpr int op_ftruncate = 55;
// One operation moves at most this much, so the byte count fits cqe->res.
constexpr std::size_t max_chunk = std::size_t{1} << 30;

shard_stats& stats() {
    return reactor::local().stats();
}

}  // namespace

void throw_file_error(int err, const char* op, const std::string& path, const std::string& detail) {
    throw io_error(err, std::string(op) + " " + path + detail);
}

int uring_open(const std::string& path, int flags, unsigned mode) {
    const char* p = path.c_str();
    return submit_io(
        [&](io_uring_sqe* sqe) { io_uring_prep_openat(sqe, AT_FDCWD, p, flags, mode); });
}

void uring_close(int fd, const std::string& path) {
    int r = submit_io([&](io_uring_sqe* sqe) { io_uring_prep_close(sqe, fd); });
    if (r < 0) throw_file_error(-r, "close", path);
}

void close_detached(int fd) noexcept {
    if (fd < 0) return;
    if (auto* r = reactor::local_or_null()) {
        try {
            io_uring_prep_close(r->get_sqe(nullptr, 0), fd);
            return;
        } catch (const std::exception& e) {
            logger().warn("closing fd {} through io_uring failed ({}); closing directly", fd,
                          e.what());
        }
    }
    ::close(fd);
}

struct statx uring_statx(int fd, unsigned mask, const std::string& path) {
    struct statx st {};
    int r = submit_io(
        [&](io_uring_sqe* sqe) { io_uring_prep_statx(sqe, fd, "", AT_EMPTY_PATH, mask, &st); });
    if (r < 0) throw_file_error(-r, "statx", path);
    return st;
}

std::size_t read_full(int fd, std::uint64_t pos, void* dst, std::size_t len, bool direct,
                      const std::string& path) {
    auto* out = static_cast<char*>(dst);
    std::size_t done = 0;
    auto& st = stats();
    while (done < len) {
        const std::size_t want = std::min(len - done, max_chunk);
        const std::uint64_t at = pos + done;
        int r = submit_io([&](io_uring_sqe* sqe) {
            io_uring_prep_read(sqe, fd, out + done, static_cast<unsigned>(want), at);
            reactor::local().queued_device_io();
        });
        ++st.file_reads;
        if (r == -EINTR || r == -EAGAIN) continue;
        if (r < 0) {
            throw_file_error(-r, "read", path,
                             " at " + std::to_string(at) + " (" + std::to_string(want) + " bytes)");
        }
        if (r == 0) break;  // end of file
        done += static_cast<std::size_t>(r);
        st.file_bytes_read += static_cast<std::uint64_t>(r);
        // Direct I/O returns a count off the block size only at end of file;
        // reading on from an unaligned offset would fail with EINVAL.
        if (direct && static_cast<std::size_t>(r) < want && (done & 511) != 0) break;
    }
    return done;
}

void write_full(int fd, std::uint64_t pos, const void* src, std::size_t len, bool direct,
                const std::string& path) {
    const auto* in = static_cast<const char*>(src);
    std::size_t done = 0;
    auto& st = stats();
    while (done < len) {
        const std::size_t want = std::min(len - done, max_chunk);
        const std::uint64_t at = pos + done;
        int r = submit_io([&](io_uring_sqe* sqe) {
            io_uring_prep_write(sqe, fd, in + done, static_cast<unsigned>(want), at);
            reactor::local().queued_device_io();
        });
        ++st.file_writes;
        if (r == -EINTR || r == -EAGAIN) continue;
        const std::size_t got = r > 0 ? static_cast<std::size_t>(r) : 0;
        if (r <= 0 || (direct && got < want && ((done + got) & 511) != 0)) {
            const std::string where =
                " at " + std::to_string(at) + " (" + std::to_string(want) + " bytes)";
            if (r < 0) throw_file_error(-r, "write", path, where);
            // A write that moves nothing would loop forever: report it.
            if (r == 0) throw_file_error(EIO, "write", path, where + ": no progress");
            // Continuing from an unaligned offset would fail with EINVAL.
            throw_file_error(EIO, "write", path,
                             where + ": short direct write of " + std::to_string(r) +
                                 " bytes ends off the block size");
        }
        done += got;
        st.file_bytes_written += got;
    }
}

void uring_fsync(int fd, bool datasync, const std::string& path) {
    int r = submit_io([&](io_uring_sqe* sqe) {
        io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
    });
    ++stats().file_fsyncs;
    if (r < 0) throw_file_error(-r, datasync ? "fdatasync" : "fsync", path);
}

void uring_fallocate(int fd, int mode, std::uint64_t pos, std::uint64_t len,
                     const std::string& path) {
    int r = submit_io([&](io_uring_sqe* sqe) {
        io_uring_prep_fallocate(sqe, fd, mode, static_cast<off_t>(pos), static_cast<off_t>(len));
    });
    if (r < 0) {
        throw_file_error(-r, "fallocate", path,
                         " [" + std::to_string(pos) + ", +" + std::to_string(len) + ")");
    }
}

void uring_ftruncate(int fd, std::uint64_t size, const std::string& path) {
    int r = submit_io(
        [&](io_uring_sqe* sqe) { io_uring_prep_rw(op_ftruncate, sqe, fd, nullptr, 0, size); });
    if (r == -EINVAL) {
        // A kernel before 6.9 has no IORING_OP_FTRUNCATE (EINVAL for an
        // unknown opcode): truncate directly, a short metadata call.
        r = ::ftruncate(fd, static_cast<off_t>(size)) < 0 ? -errno : 0;
    }
    if (r < 0) throw_file_error(-r, "truncate", path, " to " + std::to_string(size));
}

}  // namespace percore::detail
