// buffered_file: a page-cache file for small, non-hot data (configuration,
// metadata, snapshots' manifests), any size and offset, still through the
// shard's io_uring so a fiber never blocks its shard. Hot data belongs in a
// dma_file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace percore {

class buffered_file {
  public:
    buffered_file() = default;
    buffered_file(buffered_file&& o) noexcept { *this = std::move(o); }
    buffered_file& operator=(buffered_file&& o) noexcept;
    buffered_file(const buffered_file&) = delete;
    buffered_file& operator=(const buffered_file&) = delete;
    // Closes without waiting if close() was not called.
    ~buffered_file();

    // Opens an existing file (read-write, or read-only).
    static buffered_file open(const std::string& path, bool read_only = false);
    // Creates the file if missing; `truncate` empties an existing one.
    static buffered_file create(const std::string& path, bool truncate = false,
                                unsigned mode = 0644);

    // Up to len bytes at pos; fewer only at end of file.
    std::size_t read_at(std::uint64_t pos, void* dst, std::size_t len);
    std::string read_at(std::uint64_t pos, std::size_t len);
    // The whole file.
    std::string read_all();
    // Writes all bytes at pos (short writes continued).
    void write_at(std::uint64_t pos, const void* src, std::size_t len);
    void write_at(std::uint64_t pos, std::string_view data) {
        write_at(pos, data.data(), data.size());
    }

    void fsync();
    void fdatasync();
    void truncate(std::uint64_t size);
    std::uint64_t size();
    // Closes, reporting a failure. Idempotent.
    void close();

    bool is_open() const noexcept { return fd_ >= 0; }
    const std::string& path() const noexcept { return path_; }

    // Reads a whole file.
    static std::string read_file(const std::string& path);
    // Replaces a file's contents crash-safely: writes a temporary next to
    // it, fsyncs, renames over `path` and fsyncs the directory. Readers see
    // the old or the new contents, never a mix.
    static void write_file_atomic(const std::string& path, std::string_view contents);

  private:
    static buffered_file open_impl(const std::string& path, int flags, unsigned mode);
    void check_open(const char* op) const;

    int fd_ = -1;
    std::string path_;
};

}  // namespace percore
