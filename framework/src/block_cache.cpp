#include "percore/detail/block_cache.hpp"

#include "asan.hpp"

namespace percore::detail {

thread_local constinit block_cache local_block_cache [[gnu::tls_model("initial-exec")]];

void block_cache::open() noexcept {
#ifndef PERCORE_ASAN
    open_ = true;
#endif
}

void block_cache::close() noexcept {
    open_ = false;
    for (std::size_t c = 0; c < classes; ++c) {
        while (free_block* b = heads_[c]) {
            heads_[c] = b->next;
            ::operator delete(b);
        }
        counts_[c] = 0;
    }
}

}  // namespace percore::detail
