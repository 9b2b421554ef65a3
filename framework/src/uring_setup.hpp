// Creating a shard's io_uring, and turning a failure into advice.
#pragma once

#include <liburing.h>

#include <string>

namespace percore {

// Creates `ring` with SINGLE_ISSUER | DEFER_TASKRUN (one ring per shard
// thread: measured cheaper per message here) and TASKRUN_FLAG (the kernel
// flags pending completion work in shared memory, so the reactor enters only
// when needed), falling back to a plain ring on kernels without them.
// Returns 0 or -errno.
int setup_ring(io_uring& ring, unsigned depth);

// One line naming why io_uring_setup failed with `error` and how to fix it.
std::string explain_io_uring_failure(int error);

}  // namespace percore
