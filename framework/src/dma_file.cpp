#include "percore/dma_file.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/statfs.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <limits>

#include "file_ops.hpp"
#include "percore/errors.hpp"
#include "percore/io.hpp"
#include "percore/log.hpp"

// Kernel 6.1+ reports direct I/O alignment; older headers lack the constant.
#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

namespace percore {

namespace {

constexpr std::size_t default_alignment = 4096;
constexpr std::size_t page_size = 4096;

std::string hex(unsigned long v) {
    char text[32];
    std::snprintf(text, sizeof(text), "0x%lx", v);
    return text;
}

std::string fs_type_name(unsigned long type) {
    switch (type) {
        case TMPFS_MAGIC:
            return "tmpfs";
        case RAMFS_MAGIC:
            return "ramfs";
        case EXT4_SUPER_MAGIC:
            return "ext4";  // also ext2/ext3
        case XFS_SUPER_MAGIC:
            return "xfs";
        case BTRFS_SUPER_MAGIC:
            return "btrfs";
        case OVERLAYFS_SUPER_MAGIC:
            return "overlay";
        case NFS_SUPER_MAGIC:
            return "nfs";
        case F2FS_SUPER_MAGIC:
            return "f2fs";
        case SQUASHFS_MAGIC:
            return "squashfs";
        case 0x65735546:
            return "fuse";
        case 0x2fc12fc1:
            return "zfs";
        case 0x9fa0:
            return "proc";
        default:
            return hex(type);
    }
}

// The file system type of `path`, or of its directory when the file does not
// exist (an O_CREAT open that failed may leave nothing behind).
unsigned long fs_type(const std::string& path) {
    struct statfs st {};
    if (::statfs(path.c_str(), &st) == 0) return static_cast<unsigned long>(st.f_type);
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    if (::statfs(dir.c_str(), &st) == 0) return static_cast<unsigned long>(st.f_type);
    return 0;
}

bool is_memory_fs(unsigned long type) {
    return type == TMPFS_MAGIC || type == RAMFS_MAGIC;
}

}  // namespace

std::string file_system_name(const std::string& path) {
    return fs_type_name(fs_type(path));
}

dma_file& dma_file::operator=(dma_file&& o) noexcept {
    if (this != &o) {
        detail::close_detached(fd_);
        fd_ = std::exchange(o.fd_, -1);
        path_ = std::move(o.path_);
        offset_align_ = o.offset_align_;
        memory_align_ = o.memory_align_;
        buffered_ = o.buffered_;
    }
    return *this;
}

dma_file::~dma_file() {
    detail::close_detached(fd_);
}

dma_file dma_file::open(const std::string& path, open_options options) {
    return open_impl(path, 0, options);
}

dma_file dma_file::create(const std::string& path, open_options options) {
    return open_impl(path, O_CREAT, options);
}

dma_file dma_file::create_truncated(const std::string& path, open_options options) {
    return open_impl(path, O_CREAT | O_TRUNC, options);
}

dma_file dma_file::open_impl(const std::string& path, int flags, const open_options& options) {
    if (options.read_only && (flags & (O_CREAT | O_TRUNC))) {
        throw io_error(EINVAL, "create " + path + ": a created file cannot be read-only");
    }
    flags |= (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
    dma_file f;
    f.path_ = path;
    if (options.buffered_io) {
        const int fd = detail::uring_open(path, flags, options.mode);
        if (fd < 0) detail::throw_file_error(-fd, "open (buffered)", path);
        f.fd_ = fd;
        f.buffered_ = true;
        f.offset_align_ = f.memory_align_ = default_alignment;
        return f;
    }
    std::string why;  // why this file system cannot do direct I/O
    if ((flags & O_CREAT) && !options.allow_buffered_io && is_memory_fs(fs_type(path))) {
        // Refused before the open, so that no empty file is left behind.
        why = "keeps files in memory (no direct I/O)";
    } else if (int fd = detail::uring_open(path, flags | O_DIRECT, options.mode); fd == -EINVAL) {
        why = "refuses O_DIRECT (open gives EINVAL)";
    } else if (fd < 0) {
        detail::throw_file_error(-fd, "open", path);
    } else {
        f.fd_ = fd;  // closed by f's destructor if anything below throws
        struct statx st = detail::uring_statx(fd, STATX_DIOALIGN, path);
        if (st.stx_mask & STATX_DIOALIGN) {
            if (st.stx_dio_mem_align == 0 || st.stx_dio_offset_align == 0) {
                why = "reports no direct I/O support (statx dio alignment 0)";
            } else {
                f.memory_align_ = st.stx_dio_mem_align;
                f.offset_align_ = st.stx_dio_offset_align;
            }
        } else if (is_memory_fs(fs_type(path))) {
            // tmpfs accepts O_DIRECT since Linux 6.6 but serves it from the
            // page cache: neither direct nor durable.
            why = "accepts O_DIRECT but keeps the data in memory (no direct I/O)";
        }
    }
    if (why.empty()) return f;

    if (f.fd_ >= 0) detail::close_detached(std::exchange(f.fd_, -1));
    const std::string fs = file_system_name(path);
    if (!options.allow_buffered_io) {
        throw io_error(EINVAL, "open " + path + " for direct I/O: file system '" + fs + "' " + why +
                                   "; put the file on a disk file system (ext4, xfs), or open it "
                                   "with open_options{.allow_buffered_io = true} to use buffered "
                                   "I/O on purpose");
    }
    int fd = detail::uring_open(path, flags, options.mode);
    if (fd < 0) detail::throw_file_error(-fd, "open (buffered)", path);
    f.fd_ = fd;
    f.buffered_ = true;
    f.offset_align_ = f.memory_align_ = default_alignment;
    logger().info("{}: buffered I/O on file system '{}' ({}), as allow_buffered_io asks", path, fs,
                  why);
    return f;
}

void dma_file::check_open(const char* op) const {
    if (fd_ < 0)
        detail::throw_file_error(EBADF, op, path_.empty() ? "(no file)" : path_,
                                 ": file is closed");
}

void dma_file::check_aligned(const char* op, std::uint64_t pos, std::size_t len,
                             const void* mem) const {
    auto fail = [&](const std::string& what) {
        detail::throw_file_error(EINVAL, op, path_, ": " + what);
    };
    if (pos % offset_align_ != 0) {
        fail("position " + std::to_string(pos) + " is not a multiple of the file's alignment " +
             std::to_string(offset_align_));
    }
    if (len % offset_align_ != 0) {
        fail("length " + std::to_string(len) + " is not a multiple of the file's alignment " +
             std::to_string(offset_align_) + " (dma_stream_writer handles unaligned appends)");
    }
    if (reinterpret_cast<std::uintptr_t>(mem) % memory_align_ != 0) {
        fail("memory address is not a multiple of " + std::to_string(memory_align_) +
             " (use allocate_buffer())");
    }
    if (pos > std::numeric_limits<std::uint64_t>::max() - len ||
        pos + len > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
        fail("range past the largest file offset");
    }
}

aligned_buffer dma_file::allocate_buffer(std::size_t size) const {
    return aligned_buffer(align_up(size, offset_align_), std::max(memory_align_, page_size));
}

std::size_t dma_file::read_raw(std::uint64_t pos, void* dst, std::size_t len) {
    return detail::read_full(fd_, pos, dst, len, !buffered_, path_);
}

aligned_buffer dma_file::read_at(std::uint64_t pos, std::size_t len) {
    check_open("read");
    if (len == 0) return aligned_buffer();
    if (pos > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) - len) {
        detail::throw_file_error(
            EINVAL, "read", path_,
            ": range at " + std::to_string(pos) + " past the largest file offset");
    }
    // Misaligned: read the covering aligned range, show only what was asked.
    const std::uint64_t start = align_down(pos, offset_align_);
    const std::uint64_t end = align_up(pos + len, offset_align_);
    aligned_buffer buf = allocate_buffer(end - start);
    const std::size_t got = read_raw(start, buf.memory(), end - start);
    const std::size_t skip = pos - start;
    buf.set_window(skip, got > skip ? std::min<std::size_t>(len, got - skip) : 0);
    return buf;
}

std::size_t dma_file::read_into(std::uint64_t pos, void* dst, std::size_t len) {
    check_open("read");
    check_aligned("read", pos, len, dst);
    return read_raw(pos, dst, len);
}

void dma_file::write_at(std::uint64_t pos, const aligned_buffer& buffer) {
    write_at(pos, buffer.data(), buffer.size());
}

void dma_file::write_at(std::uint64_t pos, const void* src, std::size_t len) {
    check_open("write");
    check_aligned("write", pos, len, src);
    detail::write_full(fd_, pos, src, len, !buffered_, path_);
}

void dma_file::fdatasync() {
    check_open("fdatasync");
    detail::uring_fsync(fd_, true, path_);
}

void dma_file::allocate(std::uint64_t pos, std::uint64_t len, bool keep_size) {
    check_open("fallocate");
    detail::uring_fallocate(fd_, keep_size ? FALLOC_FL_KEEP_SIZE : 0, pos, len, path_);
}

void dma_file::truncate(std::uint64_t size) {
    check_open("truncate");
    detail::uring_ftruncate(fd_, size, path_);
}

std::uint64_t dma_file::size() {
    check_open("statx");
    return detail::uring_statx(fd_, STATX_SIZE, path_).stx_size;
}

void dma_file::remove() {
    remove_file(path_);
}

void dma_file::rename(const std::string& new_path) {
    rename_file(path_, new_path);
    path_ = new_path;
}

void dma_file::exchange(const std::string& other_path) {
    exchange_files(path_, other_path);
    path_ = other_path;
}

void dma_file::close() {
    if (fd_ < 0) return;
    // Marked closed first: a later call fails with EBADF instead of reaching
    // a descriptor number the process may have reused.
    detail::uring_close(std::exchange(fd_, -1), path_);
}

void remove_file(const std::string& path) {
    const char* p = path.c_str();
    int r = submit_io([&](io_uring_sqe* sqe) { io_uring_prep_unlinkat(sqe, AT_FDCWD, p, 0); });
    if (r < 0) detail::throw_file_error(-r, "remove", path);
}

void rename_file(const std::string& from, const std::string& to) {
    const char* a = from.c_str();
    const char* b = to.c_str();
    int r = submit_io(
        [&](io_uring_sqe* sqe) { io_uring_prep_renameat(sqe, AT_FDCWD, a, AT_FDCWD, b, 0); });
    if (r < 0) detail::throw_file_error(-r, "rename", from, " to " + to);
}

void exchange_files(const std::string& a, const std::string& b) {
    const char* pa = a.c_str();
    const char* pb = b.c_str();
    int r = submit_io([&](io_uring_sqe* sqe) {
        io_uring_prep_renameat(sqe, AT_FDCWD, pa, AT_FDCWD, pb, RENAME_EXCHANGE);
    });
    if (r < 0) detail::throw_file_error(-r, "exchange", a, " with " + b);
}

void sync_directory(const std::string& path) {
    int fd = detail::uring_open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) detail::throw_file_error(-fd, "open directory", path);
    try {
        detail::uring_fsync(fd, false, path);
    } catch (...) {
        detail::close_detached(fd);
        throw;
    }
    detail::uring_close(fd, path);
}

}  // namespace percore
