// zeroed_array: a fixed-size array of zeroed elements from calloc, for the
// store's bucket arrays (store.hpp, "Growth").
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>
#include <utility>

namespace percore::kv {

namespace detail {
// A fixed-size array of zeroed pointers from calloc. A large one comes
// straight from fresh zero pages (glibc maps it), so doubling a table of
// millions of buckets costs no memset up front, where std::vector writes
// every byte (64 MB at 8 M buckets: tens of milliseconds in one request).
template <typename T>
class zeroed_array {
  public:
    zeroed_array() = default;
    explicit zeroed_array(std::size_t size)
        : data_(static_cast<T*>(std::calloc(size, sizeof(T)))), size_(size) {
        if (!data_ && size > 0) throw std::bad_alloc();
    }
    zeroed_array(zeroed_array&& o) noexcept
        : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    zeroed_array& operator=(zeroed_array&& o) noexcept {
        swap(o);
        return *this;
    }
    ~zeroed_array() { std::free(data_); }
    void swap(zeroed_array& o) noexcept {
        std::swap(data_, o.data_);
        std::swap(size_, o.size_);
    }
    std::size_t size() const noexcept { return size_; }
    bool empty() const noexcept { return size_ == 0; }
    T* data() noexcept { return data_; }
    const T* data() const noexcept { return data_; }
    T& operator[](std::size_t i) noexcept { return data_[i]; }
    const T& operator[](std::size_t i) const noexcept { return data_[i]; }

  private:
    T* data_ = nullptr;
    std::size_t size_ = 0;
};
}  // namespace detail

}  // namespace percore::kv
