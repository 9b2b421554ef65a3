#include "stack_pool.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

#include "asan.hpp"
#include "percore/errors.hpp"

namespace percore::detail {

namespace {
std::size_t page_size() {
    static const std::size_t size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    return size;
}
}  // namespace

stack_pool::stack_pool(std::size_t default_size, std::size_t max_cached)
    : default_size_((default_size + page_size() - 1) & ~(page_size() - 1)),
      max_cached_(max_cached) {}

stack_pool::~stack_pool() {
    for (auto& s : cached_) unmap(s);
}

stack_memory stack_pool::allocate(std::size_t size) {
    if (size == 0 || size == default_size_) {
        if (!cached_.empty()) {
            stack_memory s = cached_.back();
            cached_.pop_back();
            return s;
        }
        return map(default_size_);
    }
    return map((size + page_size() - 1) & ~(page_size() - 1));
}

void stack_pool::release(const stack_memory& stack) noexcept {
    asan_unpoison_stack(static_cast<char*>(stack.mapping) + page_size(),
                        stack.mapping_size - page_size());
    if (stack.mapping_size == default_size_ + page_size() && cached_.size() < max_cached_) {
        // The usable size shrank when the control block was placed; restore it.
        stack_memory s = stack;
        s.base = static_cast<char*>(s.mapping) + page_size();
        s.size = default_size_;
        cached_.push_back(s);
        return;
    }
    unmap(stack);
}

stack_memory stack_pool::map(std::size_t size) {
    std::size_t total = size + page_size();
    // MAP_NORESERVE: untouched stack pages cost nothing, so thousands of
    // fibers with roomy stacks are fine.
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) throw io_error(errno, "mmap of a fiber stack");
    if (mprotect(p, page_size(), PROT_NONE) != 0) {
        int err = errno;
        munmap(p, total);
        throw io_error(err, "mprotect of a fiber stack's guard page");
    }
    stack_memory s;
    s.mapping = p;
    s.mapping_size = total;
    s.base = static_cast<char*>(p) + page_size();
    s.size = size;
    return s;
}

void stack_pool::unmap(const stack_memory& stack) noexcept {
    munmap(stack.mapping, stack.mapping_size);
}

}  // namespace percore::detail
