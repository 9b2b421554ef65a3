// AddressSanitizer must be told about every stack switch, or it reports false
// stack-buffer-overflows after a fiber switch. No-ops in normal builds.
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define PERCORE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PERCORE_ASAN 1
#endif
#endif

#ifdef PERCORE_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace percore::detail {

inline void asan_start_switch(void** fake_stack_save, const void* bottom, std::size_t size) {
#ifdef PERCORE_ASAN
    __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
    (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

inline void asan_finish_switch(void* fake_stack_save, const void** bottom_old,
                               std::size_t* size_old) {
#ifdef PERCORE_ASAN
    __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
    (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

// Clears the stack's shadow. A fiber that ends never returns from its last
// frames (fiber_entry, switch_out, jump), so their redzones stay poisoned;
// a later fiber on the same memory (pooled, or mapped again at the same
// address) would trip over them.
inline void asan_unpoison_stack(void* base, std::size_t size) {
#ifdef PERCORE_ASAN
    __asan_unpoison_memory_region(base, size);
#else
    (void)base, (void)size;
#endif
}

}  // namespace percore::detail
