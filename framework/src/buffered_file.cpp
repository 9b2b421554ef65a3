#include "percore/buffered_file.hpp"

#include <fcntl.h>

#include <cerrno>
#include <utility>

#include "file_ops.hpp"
#include "percore/dma_file.hpp"
#include "percore/reactor.hpp"

namespace percore {

buffered_file& buffered_file::operator=(buffered_file&& o) noexcept {
    if (this != &o) {
        detail::close_detached(fd_);
        fd_ = std::exchange(o.fd_, -1);
        path_ = std::move(o.path_);
    }
    return *this;
}

buffered_file::~buffered_file() {
    detail::close_detached(fd_);
}

buffered_file buffered_file::open_impl(const std::string& path, int flags, unsigned mode) {
    int fd = detail::uring_open(path, flags | O_CLOEXEC, mode);
    if (fd < 0) detail::throw_file_error(-fd, "open", path);
    buffered_file f;
    f.fd_ = fd;
    f.path_ = path;
    return f;
}

buffered_file buffered_file::open(const std::string& path, bool read_only) {
    return open_impl(path, read_only ? O_RDONLY : O_RDWR, 0);
}

buffered_file buffered_file::create(const std::string& path, bool truncate, unsigned mode) {
    return open_impl(path, O_RDWR | O_CREAT | (truncate ? O_TRUNC : 0), mode);
}

void buffered_file::check_open(const char* op) const {
    if (fd_ < 0)
        detail::throw_file_error(EBADF, op, path_.empty() ? "(no file)" : path_,
                                 ": file is closed");
}

std::size_t buffered_file::read_at(std::uint64_t pos, void* dst, std::size_t len) {
    check_open("read");
    return detail::read_full(fd_, pos, dst, len, false, path_);
}

std::string buffered_file::read_at(std::uint64_t pos, std::size_t len) {
    std::string s(len, '\0');
    s.resize(read_at(pos, s.data(), len));
    return s;
}

std::string buffered_file::read_all() {
    // Read until end of file rather than trusting a size that may change.
    std::string s(static_cast<std::size_t>(size()) + 1, '\0');
    std::size_t done = 0;
    for (;;) {
        done += read_at(done, s.data() + done, s.size() - done);
        if (done < s.size()) break;
        s.resize(s.size() * 2);
    }
    s.resize(done);
    return s;
}

void buffered_file::write_at(std::uint64_t pos, const void* src, std::size_t len) {
    check_open("write");
    detail::write_full(fd_, pos, src, len, false, path_);
}

void buffered_file::fsync() {
    check_open("fsync");
    detail::uring_fsync(fd_, false, path_);
}

void buffered_file::fdatasync() {
    check_open("fdatasync");
    detail::uring_fsync(fd_, true, path_);
}

void buffered_file::truncate(std::uint64_t size) {
    check_open("truncate");
    detail::uring_ftruncate(fd_, size, path_);
}

std::uint64_t buffered_file::size() {
    check_open("statx");
    return detail::uring_statx(fd_, STATX_SIZE, path_).stx_size;
}

void buffered_file::close() {
    if (fd_ < 0) return;
    detail::uring_close(std::exchange(fd_, -1), path_);
}

std::string buffered_file::read_file(const std::string& path) {
    auto f = open(path, true);
    std::string s = f.read_all();
    f.close();
    return s;
}

void buffered_file::write_file_atomic(const std::string& path, std::string_view contents) {
    // The shard id keeps two shards writing the same path from sharing a temporary.
    const std::string tmp = path + ".tmp." + std::to_string(this_shard_id());
    {
        auto f = create(tmp, true);
        f.write_at(0, contents);
        f.fsync();
        f.close();
    }
    rename_file(tmp, path);
    auto slash = path.rfind('/');
    sync_directory(slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash));
}

}  // namespace percore
