// dma_file: a file opened with O_DIRECT whose every operation (open, read,
// write, fdatasync, fallocate, truncate, statx, unlink, rename, close) goes
// through the shard's io_uring and suspends only the calling fiber.
//
// Alignment. Direct I/O needs the memory address, the file offset and the
// length to be multiples of what the file system reports (statx
// dio_mem_align / dio_offset_align, kernel 6.1+; 4096 where it does not say).
//   - Reads may be misaligned: read_at() reads the covering aligned range and
//     returns a buffer whose window holds just the bytes asked for.
//   - Writes must be aligned (position, length and memory): a misaligned
//     write_at() throws io_error(EINVAL) naming the path, the value and the
//     alignment, and writes nothing. Sub-block appends belong to
//     dma_stream_writer, which pads and truncates.
//
// No direct I/O. Some file systems refuse O_DIRECT (open gives EINVAL) and
// tmpfs accepts it since Linux 6.6 without doing direct I/O (the data stays in
// the page cache, statx reports no DIO alignment). open()/create() then throw
// io_error naming the file system and the fix (creating nothing); with
// open_options{.allow_buffered_io = true} they open the file buffered on
// purpose (same API and alignment rules, buffered() is true). Never silently.
//
// Errors: every failure is an io_error carrying errno, the operation and the
// path. Short reads are continued until the length or end of file; short
// writes are continued, and one that makes no progress is an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "percore/aligned_buffer.hpp"

namespace percore {

// How to open a dma_file.
struct open_options {
    bool read_only = false;
    // Fall back to buffered I/O where the file system cannot do direct I/O
    // (tmpfs...). Off by default: without it such an open is an error.
    bool allow_buffered_io = false;
    // Open buffered at once, without trying O_DIRECT or asking the file
    // system (statfs) on the calling reactor: for a caller that learned from
    // an earlier open in the same directory that direct I/O is not possible
    // there (e.g. a log's later files).
    bool buffered_io = false;
    // Mode of a created file (before umask).
    unsigned mode = 0644;
};

class dma_file {
  public:
    dma_file() = default;
    dma_file(dma_file&& o) noexcept { *this = std::move(o); }
    dma_file& operator=(dma_file&& o) noexcept;
    dma_file(const dma_file&) = delete;
    dma_file& operator=(const dma_file&) = delete;
    // Closes the descriptor if close() was not called (asynchronously, errors
    // only logged: call close() to see them).
    ~dma_file();

    // Opens an existing file for reading and writing (read-only with
    // options.read_only).
    static dma_file open(const std::string& path, open_options options = {});
    // Creates the file if missing (keeping its contents if it exists).
    static dma_file create(const std::string& path, open_options options = {});
    // Creates the file, emptying it if it exists.
    static dma_file create_truncated(const std::string& path, open_options options = {});

    // Reads `len` bytes at `pos` (any alignment). The result is shorter only
    // at end of file (empty past it).
    aligned_buffer read_at(std::uint64_t pos, std::size_t len);
    // Reads into caller memory; pos, len and dst must be aligned. Returns the
    // bytes read: fewer than len only at end of file. The hot path of the
    // streams and the benchmark (no allocation).
    std::size_t read_into(std::uint64_t pos, void* dst, std::size_t len);

    // Writes the buffer's window at `pos`; everything must be aligned (see
    // above). Returns only once all bytes were written.
    void write_at(std::uint64_t pos, const aligned_buffer& buffer);
    void write_at(std::uint64_t pos, const void* src, std::size_t len);

    // Makes written data (and the size) durable.
    void fdatasync();
    // Reserves disk space for [pos, pos + len) (fallocate, size unchanged
    // with keep_size); ENOSPC surfaces here instead of mid-write.
    void allocate(std::uint64_t pos, std::uint64_t len, bool keep_size = false);
    // Sets the file size.
    void truncate(std::uint64_t size);
    // The current file size (statx).
    std::uint64_t size();
    // Unlinks the file by its path (the descriptor stays usable until close).
    void remove();
    // Renames the file; path() follows.
    void rename(const std::string& new_path);
    // Swaps names with the file at `other_path` in one atomic step (renameat2
    // RENAME_EXCHANGE): a replaced file keeps a name. path() follows.
    void exchange(const std::string& other_path);
    // Closes the descriptor, reporting a failure as io_error. Idempotent.
    void close();

    // An uninitialised buffer of at least `size` bytes (rounded up to the
    // alignment) suitable for this file's direct I/O.
    aligned_buffer allocate_buffer(std::size_t size) const;

    bool is_open() const noexcept { return fd_ >= 0; }
    int fd() const noexcept { return fd_; }
    const std::string& path() const noexcept { return path_; }
    // Required multiple for positions and lengths.
    std::size_t alignment() const noexcept { return offset_align_; }
    // Required multiple for memory addresses (at least the page size is used
    // when allocating).
    std::size_t memory_alignment() const noexcept { return memory_align_; }
    // True if the file was opened buffered through allow_buffered_io.
    bool buffered() const noexcept { return buffered_; }

  private:
    static dma_file open_impl(const std::string& path, int flags, const open_options& options);
    void check_open(const char* op) const;
    void check_aligned(const char* op, std::uint64_t pos, std::size_t len, const void* mem) const;
    std::size_t read_raw(std::uint64_t pos, void* dst, std::size_t len);

    int fd_ = -1;
    std::string path_;
    std::size_t offset_align_ = 4096;
    std::size_t memory_align_ = 4096;
    bool buffered_ = false;
};

// Unlinks a file through io_uring; io_error with the path on failure.
void remove_file(const std::string& path);
// Renames a file through io_uring (replacing `to` atomically).
void rename_file(const std::string& from, const std::string& to);
// Swaps the names of two files atomically (RENAME_EXCHANGE); EINVAL where
// the file system cannot.
void exchange_files(const std::string& a, const std::string& b);
// fsyncs a directory so that creations, renames and removals in it are
// durable (what a crash-safe log rotation needs after rename).
void sync_directory(const std::string& path);
// The name of the file system holding `path` ("tmpfs", "ext4", ...; the
// f_type in hex when unknown). Uses statfs(2), a short metadata call.
std::string file_system_name(const std::string& path);

}  // namespace percore
