// A bounded, lock-free, single-producer single-consumer ring: the wire that
// cross-shard calls and channels run on. One thread produces, one thread
// consumes; neither ever blocks or takes a lock.
//
// Why the layout: the producer writes `tail_` and the consumer writes `head_`.
// If both sat on one cache line, every push would steal the line from the
// consumer and every pop would steal it back (false sharing): the line would
// bounce between the cores on each message. So each side's index lives on its
// own cache line, next to that side's private state (its cached copy of the
// other side's index), and the slots start on a fresh line. The cached copies
// mean a side reads the other's line only when the cached value says "full"
// or "empty", not on every operation.
//
// Why batches: even padded, publishing an index moves its cache line to the
// other core once per store. The producer therefore *stages* elements (writes
// them into free slots without publishing) and publishes the tail once per
// batch (once per reactor turn in smp.cpp); the consumer likewise pops a run
// of elements and publishes its head once. A batch of N messages costs two
// line transfers instead of 2N. Seastar's smp queue does the same for the
// same reason.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <utility>

namespace percore {

// The cache line size assumed for padding (x86-64 and most arm64 parts).
inline constexpr std::size_t cache_line_size = 64;

template <typename T>
class spsc_queue {
  public:
    // Capacity is rounded up to a power of two (index masking, no division).
    explicit spsc_queue(std::size_t capacity)
        : capacity_(std::bit_ceil(capacity < 2 ? std::size_t{2} : capacity)),
          mask_(capacity_ - 1),
          slots_(static_cast<slot*>(
              ::operator new (capacity_ * sizeof(slot), std::align_val_t{alignof(slot)}))) {}

    spsc_queue(const spsc_queue&) = delete;
    spsc_queue& operator=(const spsc_queue&) = delete;

    // Destroys whatever is still queued, published or staged. Both sides must
    // be done with the queue (no concurrent access).
    ~spsc_queue() {
        std::size_t end = producer_.write;
        for (std::size_t i = consumer_.read; i != end; ++i) element(i)->~T();
        ::operator delete (slots_, std::align_val_t{alignof(slot)});
    }

    std::size_t capacity() const noexcept { return capacity_; }

    // --- producer side (one thread) ---------------------------------------------

    // Constructs an element in the next free slot without making it visible to
    // the consumer (see publish()). False, and nothing constructed, if full.
    template <typename... A>
    bool try_stage(A&&... a) {
        if (!producer_has_space()) return false;
        new (element(producer_.write)) T(std::forward<A>(a)...);
        ++producer_.write;
        return true;
    }

    // Makes every staged element visible to the consumer. Returns how many
    // were published by this call.
    std::size_t publish() noexcept {
        std::size_t n = producer_.write - producer_.published;
        if (n != 0) {
            tail_.store(producer_.write, std::memory_order_release);
            producer_.published = producer_.write;
        }
        return n;
    }

    // Stage and publish one element.
    template <typename... A>
    bool try_push(A&&... a) {
        if (!try_stage(std::forward<A>(a)...)) return false;
        publish();
        return true;
    }

    // Staged but not yet published elements.
    std::size_t staged() const noexcept { return producer_.write - producer_.published; }

    // Free slots as the producer sees them (refreshes its view of the head).
    std::size_t free_space() noexcept {
        producer_.cached_head = head_.load(std::memory_order_acquire);
        return capacity_ - (producer_.write - producer_.cached_head);
    }

    // --- consumer side (one thread) ---------------------------------------------

    // The oldest published element, or nullptr if there is none.
    T* front() noexcept {
        if (consumer_.read == consumer_.cached_tail) {
            consumer_.cached_tail = tail_.load(std::memory_order_acquire);
            if (consumer_.read == consumer_.cached_tail) return nullptr;
        }
        return element(consumer_.read);
    }

    // Destroys the front element. Its slot goes back to the producer at the
    // next release().
    void pop() noexcept {
        element(consumer_.read)->~T();
        ++consumer_.read;
    }

    // Hands popped slots back to the producer; returns how many.
    std::size_t release() noexcept {
        std::size_t n = consumer_.read - consumer_.released;
        if (n != 0) {
            head_.store(consumer_.read, std::memory_order_release);
            consumer_.released = consumer_.read;
        }
        return n;
    }

    // Popped slots not yet handed back.
    std::size_t unreleased() const noexcept { return consumer_.read - consumer_.released; }

    // Whether published elements are waiting; for the consumer's own thread
    // (uses its cache) or for a sleep check (the caller orders the load with a
    // fence).
    bool has_published() const noexcept {
        return consumer_.read != tail_.load(std::memory_order_acquire);
    }

    // Pops up to `max` published elements, calling fn(T&) on each before it
    // is destroyed, then releases their slots. Returns how many.
    template <typename F>
    std::size_t consume(F&& fn, std::size_t max = static_cast<std::size_t>(-1)) {
        std::size_t n = 0;
        while (n < max) {
            T* e = front();
            if (!e) break;
            struct popper {
                spsc_queue* q;
                ~popper() { q->pop(); }
            } guard{this};
            fn(*e);
            ++n;
        }
        release();
        return n;
    }

  private:
    struct slot {
        alignas(T) std::byte bytes[sizeof(T)];
    };

    T* element(std::size_t index) noexcept {
        return std::launder(reinterpret_cast<T*>(slots_[index & mask_].bytes));
    }

    bool producer_has_space() noexcept {
        if (producer_.write - producer_.cached_head < capacity_) return true;
        producer_.cached_head = head_.load(std::memory_order_acquire);
        return producer_.write - producer_.cached_head < capacity_;
    }

    // Read-only after construction: shared by both sides without contention.
    const std::size_t capacity_;
    const std::size_t mask_;
    slot* const slots_;

    // Written by the producer only: the published index on its own line (the
    // consumer reads it), the private state on another (nobody else touches it).
    alignas(cache_line_size) std::atomic<std::size_t> tail_{0};
    struct producer_state {
        std::size_t write = 0;        // next slot to stage into
        std::size_t published = 0;    // what tail_ holds
        std::size_t cached_head = 0;  // last head_ seen
    };
    alignas(cache_line_size) producer_state producer_;

    // Written by the consumer only, split the same way.
    alignas(cache_line_size) std::atomic<std::size_t> head_{0};
    struct consumer_state {
        std::size_t read = 0;         // next slot to pop
        std::size_t released = 0;     // what head_ holds
        std::size_t cached_tail = 0;  // last tail_ seen
    };
    alignas(cache_line_size) consumer_state consumer_;

    // Keeps the consumer's line from sharing with whatever follows the queue.
    alignas(cache_line_size) std::byte end_padding_[1]{};
};

}  // namespace percore
