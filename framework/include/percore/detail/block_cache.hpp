// A per-shard cache of small heap blocks for objects made and freed at a high
// rate, such as future states (one per spawn and per cross-shard call). A
// block freed on a reactor thread is kept on that thread for the next
// allocation of its size class: a pop instead of malloc, a push instead of
// free (spawn + join: two thirds of its allocator time).
//
// Blocks come from ::operator new, so a block may be freed on any thread (a
// state released by another shard joins that shard's cache) or after the
// cache closed. Off on threads without a reactor, and under AddressSanitizer,
// which should see every use after free.
#pragma once

#include <cstddef>
#include <new>

namespace percore::detail {

class block_cache {
  public:
    static constexpr std::size_t class_bytes = 64;
    static constexpr std::size_t classes = 4;  // blocks up to 256 bytes are cached
    static constexpr unsigned kept_per_class = 256;

    void* allocate(std::size_t size) {
        const std::size_t c = size_class(size);
        if (c >= classes) return ::operator new(size);
        if (free_block* b = heads_[c]) {
            heads_[c] = b->next;
            --counts_[c];
            return b;
        }
        return ::operator new((c + 1) * class_bytes);
    }
    void free(void* p, std::size_t size) noexcept {
        const std::size_t c = size_class(size);
        if (c < classes && open_ && counts_[c] < kept_per_class) {
            heads_[c] = new (p) free_block{heads_[c]};
            ++counts_[c];
            return;
        }
        ::operator delete(p);
    }

    // How many free blocks of the class of `size` are kept (0 for sizes
    // beyond the classes).
    std::size_t kept(std::size_t size) const noexcept {
        const std::size_t c = size_class(size);
        return c < classes ? counts_[c] : 0;
    }

    // Called on a reactor's thread when it starts and when it ends; closing
    // returns every kept block to the heap.
    void open() noexcept;
    void close() noexcept;
    // Whether freed blocks are kept (a reactor runs here; not AddressSanitizer).
    bool is_open() const noexcept { return open_; }

  private:
    // 0 for 1..64 bytes, 1 for 65..128...; classes and above are not cached.
    static constexpr std::size_t size_class(std::size_t size) noexcept {
        return (size - 1) / class_bytes;
    }
    struct free_block {
        free_block* next;
    };
    free_block* heads_[classes] = {};
    unsigned counts_[classes] = {};
    bool open_ = false;
};

// This thread's cache (initial-exec: one %fs-relative access).
extern thread_local constinit block_cache local_block_cache [[gnu::tls_model("initial-exec")]];

}  // namespace percore::detail
