// The cross-shard mesh: rings for every ordered pair of shards, and on each
// shard a poller that publishes what the shard staged and wakes the shard's
// request runner, the fiber that runs what arrived.
#include "percore/smp.hpp"

#include <algorithm>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "percore/log.hpp"
#include "percore/sync.hpp"

namespace percore {

namespace {

// Staged messages toward one shard that make the producer publish at once
// instead of at the end of the turn: bounds the latency of a long fiber run
// without giving up most of the batching.
constexpr std::size_t publish_batch = 32;

unsigned credits_for(unsigned smp) {
    // 128 in flight per pair is plenty to keep a peer busy; with many shards
    // fewer keep the rings' total memory (n² rings) in check.
    unsigned per_pair = smp > 1 ? 4096 / (smp - 1) : 128;
    return std::clamp(per_pair, 16u, 128u);
}

using ring = spsc_queue<detail::smp_message>;

class smp_mesh;

// One shard's end: its credits toward each peer, which outbound rings hold
// staged messages, and the poller that moves them.
class shard_end final : public poller {
  public:
    shard_end(smp_mesh& mesh, unsigned id, unsigned credits);

    bool poll() override;
    bool has_work() const override;

    void acquire_credit(unsigned to);
    void return_credit(unsigned to) noexcept { credits_[to]->signal(1); }
    ring& outbound(unsigned to) noexcept { return *outbound_[to]; }
    void staged(unsigned to) noexcept;
    // The request runner fiber's body (see smp.hpp).
    void run_requests();

    reactor* reactor_ = nullptr;  // set while attached

  private:
    bool publish_staged() noexcept;
    void publish_one(unsigned to) noexcept;
    bool inbound_waiting() const noexcept;
    void start_runner() noexcept;
    bool drain_inbound(detail::fiber_base* self);
    // Hands popped slots back to the peer, and only then the credits of the
    // replies among them: a credit must never let a sender stage into a slot
    // the ring has not got back yet (a call run inline may yield, and the
    // credit's waiter run, before the pass ends).
    void release_inbound(unsigned from) noexcept;
    static void runner_blocked(detail::fiber_base* self) noexcept;

    unsigned id_;
    std::vector<ring*> outbound_;  // by destination (nullptr for self)
    std::vector<ring*> inbound_;   // by source
    std::vector<std::unique_ptr<semaphore>> credits_;
    std::vector<unsigned> dirty_;  // destinations with staged, unpublished messages
    std::vector<bool> is_dirty_;
    // The fiber draining the inbound rings, if any; idle while it waits for
    // the poller to see new messages.
    detail::fiber_base* runner_ = nullptr;
    std::vector<unsigned> unreturned_credits_;  // by source: replies popped, slots not released
};

class smp_mesh {
  public:
    explicit smp_mesh(unsigned smp) : smp_(smp), credits_(credits_for(smp)) {
        rings_.resize(std::size_t{smp} * smp);
        for (unsigned from = 0; from < smp; ++from) {
            for (unsigned to = 0; to < smp; ++to) {
                if (from != to) rings_[index(from, to)] = std::make_unique<ring>(2 * credits_);
            }
        }
        for (unsigned s = 0; s < smp; ++s)
            ends_.push_back(std::make_unique<shard_end>(*this, s, credits_));
    }

    ~smp_mesh() {
        // Only when every shard thread has ended. A message still here was
        // sent to (or replied by) a shard that stopped first: requests fail
        // their futures with shutdown_error, replies are delivered.
        std::size_t left = 0;
        for (auto& r : rings_) {
            if (!r) continue;
            r->publish();
            while (auto* m = r->front()) {
                m->abandon();
                r->pop();
                ++left;
            }
        }
        if (left > 0)
            logger().warn("{} cross-shard messages were still in flight at shutdown", left);
    }

    ring* get(unsigned from, unsigned to) { return rings_[index(from, to)].get(); }
    shard_end& end(unsigned shard) { return *ends_[shard]; }
    unsigned size() const noexcept { return smp_; }
    unsigned credits() const noexcept { return credits_; }

  private:
    std::size_t index(unsigned from, unsigned to) const noexcept {
        return std::size_t{from} * smp_ + to;
    }

    unsigned smp_;
    unsigned credits_;
    std::vector<std::unique_ptr<ring>> rings_;
    std::vector<std::unique_ptr<shard_end>> ends_;
};

smp_mesh* the_mesh = nullptr;
thread_local shard_end* local_end = nullptr;

shard_end& require_local_end() {
    if (!local_end) {
        throw std::logic_error("submit_to/channels need a running set of shards (run_shards)");
    }
    return *local_end;
}

shard_end::shard_end(smp_mesh& mesh, unsigned id, unsigned credits)
    : id_(id),
      outbound_(mesh.size(), nullptr),
      inbound_(mesh.size(), nullptr),
      is_dirty_(mesh.size(), false),
      unreturned_credits_(mesh.size(), 0) {
    credits_.resize(mesh.size());
    for (unsigned peer = 0; peer < mesh.size(); ++peer) {
        if (peer == id) continue;
        outbound_[peer] = mesh.get(id, peer);
        inbound_[peer] = mesh.get(peer, id);
        credits_[peer] = std::make_unique<semaphore>(credits);
    }
    dirty_.reserve(mesh.size());
}

void shard_end::acquire_credit(unsigned to) {
    if (credits_[to]->try_wait()) return;
    ++reactor_->stats().smp_ring_full_waits;
    credits_[to]->wait();
}

void shard_end::staged(unsigned to) noexcept {
    ++reactor_->stats().smp_messages_sent;
    if (outbound_[to]->staged() >= publish_batch) {
        publish_one(to);
        return;
    }
    if (!is_dirty_[to]) {
        is_dirty_[to] = true;
        dirty_.push_back(to);
    }
}

void shard_end::publish_one(unsigned to) noexcept {
    // Free the slots of `to`'s messages we consumed BEFORE `to` can see our
    // replies: a reply gives `to` its credit back, and the ring's "staging
    // never fails" rule needs that request's slot to be free by then (else a
    // burst of replies published mid-drain leaves `to` with credits but a
    // full ring: "no ring slot despite a credit").
    inbound_[to]->release();
    outbound_[to]->publish();
    // The target may have announced sleep and checked its rings before our
    // tail store landed: a full fence between the store and wake()'s load of
    // its sleeping flag pairs with the fence in has_work(), so at least one
    // side sees the other (Dekker).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    reactor::of_shard(to).wake();
}

bool shard_end::publish_staged() noexcept {
    if (dirty_.empty()) return false;
    for (unsigned to : dirty_) {
        inbound_[to]->release();  // see publish_one
        outbound_[to]->publish();
        is_dirty_[to] = false;
    }
    std::atomic_thread_fence(std::memory_order_seq_cst);  // see publish_one
    for (unsigned to : dirty_) reactor::of_shard(to).wake();
    dirty_.clear();
    return true;
}

bool shard_end::poll() {
    bool worked = publish_staged();
    if (inbound_waiting()) {
        if (!runner_) {
            start_runner();
        } else {
            // A runner suspends only while idle (a call that blocks gives the
            // role up first), and make_ready ignores a fiber that is not
            // suspended: this wakes an idle runner and leaves a busy one be.
            detail::make_ready(runner_);
        }
        worked = true;
    }
    return worked;
}

bool shard_end::inbound_waiting() const noexcept {
    for (ring* in : inbound_) {
        if (in && in->has_published()) return true;
    }
    return false;
}

namespace {
// The request runner's body: a fiber whose run() drains the rings.
struct request_runner final : detail::fiber_base {
    explicit request_runner(shard_end& end) : end_(end) {}
    void run() noexcept override;
    shard_end& end_;
};
}  // namespace

void shard_end::start_runner() noexcept {
    try {
        runner_ = detail::create_fiber<request_runner>("smp requests", 0, nullptr, *this);
    } catch (const std::exception& e) {
        // No stack: the messages stay in the rings and the next poll retries.
        logger().error("shard {}: cannot start the cross-shard request runner: {}", id_, e.what());
    }
}

void request_runner::run() noexcept {
    try {
        end_.run_requests();
    } catch (const shutdown_error&) {
        // The shard stops: what is left in the rings is abandoned by the mesh.
    }
}

// Drains the rings until they are empty, then waits for the poller; ends
// once another fiber took over the role (a call it ran blocked).
void shard_end::run_requests() {
    auto* self = detail::current_fiber();
    struct leave_role {  // however the loop ends, the role is free again
        shard_end& end;
        detail::fiber_base* self;
        ~leave_role() {
            self->on_block_ = nullptr;
            if (end.runner_ == self) end.runner_ = nullptr;
        }
    } guard{*this, self};
    while (runner_ == self) {
        self->on_block_ = &runner_blocked;
        bool worked = drain_inbound(self);
        if (runner_ != self) return;
        self->on_block_ = nullptr;
        if (worked) {
            publish_staged();  // the replies, without waiting for the turn's end
            continue;
        }
        detail::suspend();  // idle until the poller sees new messages
    }
}

void shard_end::runner_blocked(detail::fiber_base* self) noexcept {
    self->on_block_ = nullptr;
    shard_end* end = local_end;
    if (!end || end->runner_ != self) return;
    end->runner_ = nullptr;
    // Hand back the slots popped so far, and the credits of the replies
    // among them, before anything else runs.
    for (unsigned from = 0; from < end->inbound_.size(); ++from) end->release_inbound(from);
}

void shard_end::release_inbound(unsigned from) noexcept {
    if (!inbound_[from]) return;
    inbound_[from]->release();
    if (unreturned_credits_[from] != 0)
        credits_[from]->signal(std::exchange(unreturned_credits_[from], 0));
}

bool shard_end::drain_inbound(detail::fiber_base* self) {
    std::uint64_t received = 0;
    for (unsigned from = 0; from < inbound_.size() && runner_ == self; ++from) {
        ring* in = inbound_[from];
        if (!in) continue;
        while (auto* m = in->front()) {
            ++received;
            if (m->is_reply()) {
                m->run();
                in->pop();
                ++unreturned_credits_[from];
            } else {
                m->run_detached({[](void* q) noexcept { static_cast<ring*>(q)->pop(); }, in});
                if (runner_ != self) break;  // the call blocked: the new runner goes on
            }
            if (reactor_->need_preempt()) {
                release_inbound(from);
                yield();
                if (runner_ != self) break;
            }
        }
        release_inbound(from);
    }
    reactor_->stats().smp_messages_received += received;
    return received > 0;
}

bool shard_end::has_work() const {
    if (!dirty_.empty()) return true;
    // Pairs with the fence in publish_one: orders the reactor's store of its
    // sleeping flag before these loads of the peers' tails.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return inbound_waiting();
}

}  // namespace

unsigned smp_credits() noexcept {
    return the_mesh ? the_mesh->credits() : credits_for(shard_count());
}

namespace detail {

void smp_acquire_credit(unsigned to) {
    require_local_end().acquire_credit(to);
}

void smp_return_credit(unsigned to) noexcept {
    if (local_end) local_end->return_credit(to);
}

spsc_queue<smp_message>& smp_outbound(unsigned to) {
    return require_local_end().outbound(to);
}

void smp_staged(unsigned to) noexcept {
    local_end->staged(to);
}

void smp_invariant_broken(const char* what) noexcept {
    logger().critical("shard {}: {}", this_shard_id(), what);
}

void smp_mesh_create(unsigned smp) {
    if (the_mesh) throw std::logic_error("smp mesh already exists: run_shards is not reentrant");
    the_mesh = new smp_mesh(smp);
}

void smp_attach(reactor& r) {
    auto& end = the_mesh->end(r.shard_id());
    end.reactor_ = &r;
    local_end = &end;
    r.add_poller(&end);
}

void smp_detach(reactor& r) noexcept {
    auto& end = the_mesh->end(r.shard_id());
    r.remove_poller(&end);
    end.reactor_ = nullptr;
    local_end = nullptr;
}

void smp_mesh_destroy() noexcept {
    delete the_mesh;
    the_mesh = nullptr;
}

}  // namespace detail
}  // namespace percore
