// Fiber stacks: mmap'd with a PROT_NONE guard page below them, and kept in a
// per-shard pool so spawning a fiber costs no system call in steady state.
#pragma once

#include <cstddef>
#include <vector>

#include "percore/detail/fiber_base.hpp"

namespace percore::detail {

class stack_pool {
  public:
    explicit stack_pool(std::size_t default_size, std::size_t max_cached = 1024);
    ~stack_pool();
    stack_pool(const stack_pool&) = delete;
    stack_pool& operator=(const stack_pool&) = delete;

    // A stack of at least `size` bytes (0: the default size).
    stack_memory allocate(std::size_t size);
    void release(const stack_memory& stack) noexcept;

  private:
    static stack_memory map(std::size_t size);
    static void unmap(const stack_memory& stack) noexcept;

    std::size_t default_size_;
    std::size_t max_cached_;
    std::vector<stack_memory> cached_;
};

}  // namespace percore::detail
