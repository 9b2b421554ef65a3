#include "percore/aligned_buffer.hpp"

#include <cstdlib>
#include <new>

namespace percore {

aligned_buffer::aligned_buffer(std::size_t size, std::size_t alignment) {
    if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) throw std::bad_alloc();
    // aligned_alloc wants a multiple of the alignment; the window stays `size`.
    const std::size_t bytes = align_up(size == 0 ? 1 : size, alignment);
    memory_ = static_cast<std::byte*>(std::aligned_alloc(alignment, bytes));
    if (!memory_) throw std::bad_alloc();
    capacity_ = size;
    alignment_ = alignment;
    size_ = size;
}

aligned_buffer& aligned_buffer::operator=(aligned_buffer&& o) noexcept {
    if (this != &o) {
        release();
        memory_ = std::exchange(o.memory_, nullptr);
        capacity_ = std::exchange(o.capacity_, 0);
        alignment_ = std::exchange(o.alignment_, 0);
        begin_ = std::exchange(o.begin_, 0);
        size_ = std::exchange(o.size_, 0);
    }
    return *this;
}

void aligned_buffer::release() noexcept {
    std::free(memory_);
    memory_ = nullptr;
    capacity_ = alignment_ = begin_ = size_ = 0;
}

}  // namespace percore
