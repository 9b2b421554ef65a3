#include "uring_setup.hpp"

#include <sys/resource.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace percore {

int setup_ring(io_uring& ring, unsigned depth) {
    io_uring_params params{};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE |
                   IORING_SETUP_TASKRUN_FLAG;
    params.cq_entries = depth * 4;  // multishot operations post many CQEs per SQE
    int r = io_uring_queue_init_params(depth, &ring, &params);
    if (r == -EINVAL) {
        params = io_uring_params{};
        params.flags = IORING_SETUP_CQSIZE;
        params.cq_entries = depth * 4;
        r = io_uring_queue_init_params(depth, &ring, &params);
    }
    return r;
}

namespace {
std::string read_first_line(const char* path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}
}  // namespace

std::string explain_io_uring_failure(int error) {
    std::string msg =
        std::string("io_uring is unavailable: io_uring_setup failed: ") + std::strerror(error);
    std::string disabled = read_first_line("/proc/sys/kernel/io_uring_disabled");
    switch (error) {
        case ENOSYS:
            msg +=
                " (the kernel lacks io_uring, or a seccomp filter hides it); fix: use a kernel "
                "with "
                "CONFIG_IO_URING=y (>= 6.1), or allow "
                "io_uring_setup/io_uring_enter/io_uring_register "
                "in the seccomp profile (docker run --security-opt seccomp=unconfined)";
            break;
        case EPERM:
        case EACCES:
            if (!disabled.empty() && disabled != "0") {
                msg += " (kernel.io_uring_disabled=" + disabled +
                       "); fix: sysctl -w kernel.io_uring_disabled=0";
            } else {
                msg +=
                    " (a seccomp profile, e.g. Docker's default, or an LSM denies it); fix: allow "
                    "io_uring_setup/io_uring_enter/io_uring_register (docker run --security-opt "
                    "seccomp=unconfined)";
            }
            break;
        case ENOMEM: {
            rlimit lim{};
            getrlimit(RLIMIT_MEMLOCK, &lim);
            msg += " (RLIMIT_MEMLOCK is " + std::to_string(lim.rlim_cur / 1024) +
                   " KiB, too little for the ring); fix: raise it (ulimit -l unlimited, or "
                   "--ulimit memlock=-1 in Docker) or lower --ring-depth";
            break;
        }
        case EINVAL:
            msg +=
                " (the kernel rejects the ring parameters); fix: a kernel >= 6.1, or a smaller "
                "--ring-depth";
            break;
        default:
            msg += "; fix: check the kernel's io_uring support";
            break;
    }
    return msg;
}

}  // namespace percore
