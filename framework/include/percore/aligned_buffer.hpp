// Memory for direct (O_DIRECT) I/O: an owned allocation whose address is a
// multiple of the file system's memory alignment, plus a window [begin, end)
// into it that holds the bytes the caller cares about.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <utility>

namespace percore {

// A move-only aligned byte buffer. The allocation (capacity()) is aligned;
// the window (data(), size()) may start inside it: read_at() at a misaligned
// position returns the covering aligned block with the window on the bytes
// asked for, so data() is aligned only when the read was.
class aligned_buffer {
  public:
    aligned_buffer() = default;
    // An uninitialised buffer of `size` bytes at an `alignment`-aligned
    // address (a power of two); throws std::bad_alloc.
    aligned_buffer(std::size_t size, std::size_t alignment);
    aligned_buffer(aligned_buffer&& o) noexcept { *this = std::move(o); }
    aligned_buffer& operator=(aligned_buffer&& o) noexcept;
    aligned_buffer(const aligned_buffer&) = delete;
    aligned_buffer& operator=(const aligned_buffer&) = delete;
    ~aligned_buffer() { release(); }

    std::byte* data() noexcept { return memory_ + begin_; }
    const std::byte* data() const noexcept { return memory_ + begin_; }
    char* chars() noexcept { return reinterpret_cast<char*>(data()); }
    const char* chars() const noexcept { return reinterpret_cast<const char*>(data()); }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    std::span<std::byte> span() noexcept { return {data(), size_}; }
    std::span<const std::byte> span() const noexcept { return {data(), size_}; }
    std::string_view view() const noexcept { return {chars(), size_}; }

    // The whole allocation, aligned.
    std::byte* memory() noexcept { return memory_; }
    const std::byte* memory() const noexcept { return memory_; }
    std::size_t capacity() const noexcept { return capacity_; }
    std::size_t alignment() const noexcept { return alignment_; }

    // Moves the window: [offset, offset + size) of the allocation.
    void set_window(std::size_t offset, std::size_t size) noexcept {
        begin_ = offset;
        size_ = size;
    }
    // Shrinks the window to its first `size` bytes (a short read at EOF).
    void trim(std::size_t size) noexcept {
        if (size < size_) size_ = size;
    }
    // Window back to the whole allocation.
    void reset_window() noexcept { set_window(0, capacity_); }
    void fill(std::byte value) noexcept { std::memset(data(), static_cast<int>(value), size_); }

  private:
    void release() noexcept;

    std::byte* memory_ = nullptr;
    std::size_t capacity_ = 0;
    std::size_t alignment_ = 0;
    std::size_t begin_ = 0;
    std::size_t size_ = 0;
};

// Rounding helpers for power-of-two alignments.
constexpr std::uint64_t align_down(std::uint64_t v, std::uint64_t align) noexcept {
    return v & ~(align - 1);
}
constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t align) noexcept {
    return (v + align - 1) & ~(align - 1);
}

}  // namespace percore
