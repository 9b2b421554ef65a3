// The io_uring file operations shared by dma_file and buffered_file: each
// suspends the calling fiber, counts itself in shard_stats, and turns a
// failure into an io_error naming the operation and the path.
#pragma once

#include <fcntl.h>
#include <linux/stat.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace percore::detail {

// Throws io_error(err, "<op> <path><detail>").
[[noreturn]] void throw_file_error(int err, const char* op, const std::string& path,
                                   const std::string& detail = {});

// openat(AT_FDCWD) through io_uring: the fd, or -errno (the caller decides
// what an error means, e.g. EINVAL for O_DIRECT).
int uring_open(const std::string& path, int flags, unsigned mode);
// Closes through io_uring; throws on failure.
void uring_close(int fd, const std::string& path);
// Closes without waiting (destructors): through the ring when on a shard.
void close_detached(int fd) noexcept;
// statx of an open descriptor.
struct statx uring_statx(int fd, unsigned mask, const std::string& path);
// Reads up to len bytes at pos, continuing short reads; fewer only at end of
// file. With `direct`, a short read ending off alignment is the end of file
// (the kernel returns unaligned counts only there).
std::size_t read_full(int fd, std::uint64_t pos, void* dst, std::size_t len, bool direct,
                      const std::string& path);
// Writes all len bytes at pos, continuing short writes.
void write_full(int fd, std::uint64_t pos, const void* src, std::size_t len, bool direct,
                const std::string& path);
void uring_fsync(int fd, bool datasync, const std::string& path);
void uring_fallocate(int fd, int mode, std::uint64_t pos, std::uint64_t len,
                     const std::string& path);
void uring_ftruncate(int fd, std::uint64_t size, const std::string& path);

}  // namespace percore::detail
