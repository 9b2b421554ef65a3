// Exception types raised by percore. Errors carry their context (errno, path,
// shard) in what(), so a log line or a test failure names the cause.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace percore {

// A wait passed its deadline (future::get(deadline), read with a deadline, ...).
class timeout_error : public std::runtime_error {
  public:
    timeout_error() : std::runtime_error("operation timed out") {}
    explicit timeout_error(const std::string& what) : std::runtime_error(what) {}
};

// A system call or io_uring operation failed; code() holds the errno.
class io_error : public std::system_error {
  public:
    io_error(int error_number, const std::string& what)
        : std::system_error(error_number, std::generic_category(), what) {}
    int error_number() const noexcept { return code().value(); }
};

// Thrown into fibers still waiting when their shard stops, so they unwind
// (running destructors) instead of being abandoned.
class shutdown_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// The promise was destroyed without a value: the producer gave up.
class broken_promise : public std::logic_error {
  public:
    broken_promise() : std::logic_error("broken promise: destroyed without setting a value") {}
};

// A gate was entered after close() began.
class gate_closed_error : public std::runtime_error {
  public:
    gate_closed_error() : std::runtime_error("gate closed") {}
};

// Bad options or an unusable environment: the app shell prints what() as one
// line on stderr and exits with status 2.
class config_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Throws io_error for a negative result of a syscall-like call (-errno or
// -1 with errno set). Returns the result otherwise.
int throw_if_error(int result, const char* what);

}  // namespace percore
