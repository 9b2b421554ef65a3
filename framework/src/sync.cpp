#include "percore/sync.hpp"

#include "percore/log.hpp"

namespace percore {

// --- mutex: ownership passes directly to the woken waiter -------------------

void mutex::lock() {
    if (!locked_) {
        locked_ = true;
        return;
    }
    waiters_.wait();  // woken only by unlock(), which leaves locked_ set for us
}

bool mutex::try_lock() noexcept {
    if (locked_) return false;
    locked_ = true;
    return true;
}

bool mutex::try_lock_until(time_point deadline) {
    if (!locked_) {
        locked_ = true;
        return true;
    }
    return waiters_.wait(1, deadline);
}

void mutex::unlock() noexcept {
    if (!waiters_.wake_one()) locked_ = false;
}

// --- condition_variable -------------------------------------------------------

void condition_variable::wait(std::unique_lock<mutex>& lock) {
    lock.unlock();
    struct relock {
        std::unique_lock<mutex>& lock;
        ~relock() { lock.lock(); }
    } guard{lock};
    waiters_.wait();
}

cv_status condition_variable::wait_until(std::unique_lock<mutex>& lock, time_point deadline) {
    lock.unlock();
    struct relock {
        std::unique_lock<mutex>& lock;
        ~relock() { lock.lock(); }
    } guard{lock};
    return waiters_.wait(1, deadline) ? cv_status::no_timeout : cv_status::timeout;
}

// --- semaphore: units are handed to waiters in FIFO order -----------------------

void semaphore::wait(std::size_t units) {
    if (waiters_.empty() && available_ >= units) {
        available_ -= units;
        return;
    }
    waiters_.wait(units);  // the waker took the units on our behalf
}

bool semaphore::wait_until(time_point deadline, std::size_t units) {
    if (waiters_.empty() && available_ >= units) {
        available_ -= units;
        return true;
    }
    bool got = waiters_.wait(units, deadline);
    // A waiter that gave up at the head may unblock smaller ones behind it.
    if (!got) wake_waiters();
    return got;
}

bool semaphore::try_wait(std::size_t units) noexcept {
    if (waiters_.empty() && available_ >= units) {
        available_ -= units;
        return true;
    }
    return false;
}

void semaphore::signal(std::size_t units) noexcept {
    available_ += units;
    wake_waiters();
}

void semaphore::wake_waiters() noexcept {
    while (auto* w = waiters_.front()) {
        if (w->units > available_) break;
        available_ -= w->units;
        waiters_.wake_one();
    }
}

// --- gate ------------------------------------------------------------------------

gate::~gate() {
    if (count_ > 0) logger().error("gate destroyed with {} holders still inside", count_);
}

void gate::enter() {
    if (closed_) throw gate_closed_error();
    ++count_;
}

void gate::leave() noexcept {
    if (--count_ == 0 && closed_) closing_.wake_all();
}

void gate::close() {
    closed_ = true;
    while (count_ > 0) closing_.wait();
}

}  // namespace percore
