// Typed cross-shard channels, as in Glommio's channel_mesh and
// shared_channel:
// - a shared channel: one bounded SPSC channel between two shards
//   (make_shared_channel). send() waits while it is full, recv() waits while
//   it is empty; closing either end is seen by the other (see below);
// - a mesh (mesh_builder): every member joins from its own shard and gets a
//   connection with a channel to each peer it may talk to: everyone to
//   everyone (full mesh), or producers to consumers (partial mesh).
//
// Each end is used on one shard: it binds to the shard of its first use (or
// connect()) and then belongs there. Unbound halves may be moved anywhere,
// typically captured into a submit_to lambda. Items travel through an
// spsc_queue, published in batches: once per reactor turn (by the end's
// poller) or when a batch fills; a waiting peer's shard is woken only after
// a publish, and only if it sleeps.
//
// Close: when the sender closes (or is destroyed), the receiver still gets
// every item sent before, then recv() returns std::nullopt. When the
// receiver closes (or is destroyed), send() throws channel_closed_error and
// items not yet received are destroyed.
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "percore/detail/wait_list.hpp"
#include "percore/log.hpp"
#include "percore/reactor.hpp"
#include "percore/smp.hpp"
#include "percore/spsc_queue.hpp"

namespace percore {

// send() on a channel whose receiver is gone.
class channel_closed_error : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

namespace detail {

// Items staged (or slots popped) that make an end publish at once rather
// than at the end of the reactor turn.
inline constexpr std::size_t channel_batch = 16;

// What both ends of one channel share. The flags and shard ids are written
// by one end and read by the other, so they are atomics; the queue carries
// its own synchronisation.
template <typename T>
struct channel_state {
    explicit channel_state(std::size_t capacity) : queue(capacity) {}

    spsc_queue<T> queue;
    alignas(cache_line_size) std::atomic<bool> sender_closed{false};
    std::atomic<int> sender_shard{-1};  // -1 until the sender binds
    alignas(cache_line_size) std::atomic<bool> receiver_closed{false};
    std::atomic<int> receiver_shard{-1};
};

// Wakes `shard` (if known) after a publish or a close. The fence orders our
// store before the load of the peer's sleeping flag; the peer's has_work()
// fences too (see smp.cpp).
inline void wake_peer(const std::atomic<int>& shard) noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    int s = shard.load(std::memory_order_seq_cst);
    if (s < 0) return;
    try {
        reactor::of_shard(static_cast<unsigned>(s)).wake();
    } catch (const std::out_of_range&) {
        // The shards already stopped (an end outlived run_shards): nobody to wake.
    }
}

// The common part of an end: the shard it is bound to and its poller
// registration, which must be undone on that shard.
class channel_end_base : public poller {
  public:
    channel_end_base() = default;
    channel_end_base(const channel_end_base&) = delete;
    channel_end_base& operator=(const channel_end_base&) = delete;
    ~channel_end_base() override { unbind(); }

    bool bound() const noexcept { return reactor_ != nullptr; }
    // Bound, and running on that shard's thread: the only place the end's
    // fibers and its side of the queue may be touched.
    bool on_own_shard() const noexcept { return reactor_ && reactor::local_or_null() == reactor_; }

  protected:
    // Binds to the calling shard (first use), or checks it is the bound one.
    void bind_here(std::atomic<int>& shard_slot, const char* what) {
        reactor& here = reactor::local();
        if (reactor_ == &here) return;
        if (reactor_) {
            throw std::logic_error(std::string(what) + ": channel end bound to shard " +
                                   std::to_string(reactor_->shard_id()) + ", used on shard " +
                                   std::to_string(here.shard_id()));
        }
        here.add_poller(this);
        reactor_ = &here;
        shard_slot.store(static_cast<int>(here.shard_id()), std::memory_order_seq_cst);
    }
    void unbind() noexcept {
        if (!reactor_) return;
        if (reactor::local_or_null() == reactor_) {
            reactor_->remove_poller(this);
        } else {
            logger().error(
                "a channel end of shard {} was destroyed on another thread; its poller is leaked",
                reactor_->shard_id());
        }
        reactor_ = nullptr;
    }
    shard_stats& stats() noexcept { return reactor_->stats(); }

    reactor* reactor_ = nullptr;
};

template <typename T>
class channel_sender_end final : public channel_end_base {
  public:
    explicit channel_sender_end(std::shared_ptr<channel_state<T>> s) : state_(std::move(s)) {}
    ~channel_sender_end() override { close(); }

    void bind() { bind_here(state_->sender_shard, "connect"); }

    void send(T value) {
        bind_here(state_->sender_shard, "send");
        if (closed_) throw std::logic_error("send on a closed sender");
        auto& q = state_->queue;
        for (;;) {
            if (state_->receiver_closed.load(std::memory_order_acquire)) {
                throw channel_closed_error("send: the receiver closed the channel (shard " +
                                           std::to_string(reactor_->shard_id()) + ")");
            }
            if (q.try_stage(std::move(value))) {
                ++stats().smp_messages_sent;
                if (q.staged() >= channel_batch) publish();
                return;
            }
            // Full: show the receiver what we have, then wait for room.
            ++stats().smp_ring_full_waits;
            publish();
            waiters_.wait();
        }
    }

    void close() noexcept {
        if (closed_) return;
        closed_ = true;
        bool here = on_own_shard();
        if (here) state_->queue.publish();
        state_->sender_closed.store(true, std::memory_order_seq_cst);
        wake_peer(state_->receiver_shard);
        if (here) waiters_.wake_all();
        unbind();
    }
    bool closed() const noexcept { return closed_; }

    bool poll() override {
        bool worked = publish();
        if (!waiters_.empty() && room_or_closed()) {
            waiters_.wake_all();
            worked = true;
        }
        return worked;
    }
    bool has_work() const override {
        if (state_->queue.staged() > 0) return true;
        if (waiters_.empty()) return false;
        std::atomic_thread_fence(std::memory_order_seq_cst);
        return room_or_closed();
    }

  private:
    bool publish() noexcept {
        if (state_->queue.publish() == 0) return false;
        wake_peer(state_->receiver_shard);
        return true;
    }
    bool room_or_closed() const noexcept {
        return state_->receiver_closed.load(std::memory_order_acquire) ||
               state_->queue.free_space() > 0;
    }

    std::shared_ptr<channel_state<T>> state_;
    detail::wait_list waiters_;
    bool closed_ = false;
};

template <typename T>
class channel_receiver_end final : public channel_end_base {
  public:
    explicit channel_receiver_end(std::shared_ptr<channel_state<T>> s) : state_(std::move(s)) {}
    ~channel_receiver_end() override { close(); }

    void bind() { bind_here(state_->receiver_shard, "connect"); }

    std::optional<T> recv() {
        bind_here(state_->receiver_shard, "recv");
        if (closed_) throw std::logic_error("recv on a closed receiver");
        auto& q = state_->queue;
        for (;;) {
            if (T* item = q.front()) {
                std::optional<T> value(std::move(*item));
                q.pop();
                ++stats().smp_messages_received;
                if (q.unreleased() >= channel_batch) release();
                return value;
            }
            if (state_->sender_closed.load(std::memory_order_acquire)) {
                // The sender publishes before it closes: look once more.
                if (q.front()) continue;
                release();
                return std::nullopt;
            }
            release();
            waiters_.wait();
        }
    }

    void close() noexcept {
        if (closed_) return;
        closed_ = true;
        state_->receiver_closed.store(true, std::memory_order_seq_cst);
        bool here = on_own_shard();
        if (here) {
            // Nobody will read these: destroy them here, on their shard.
            while (state_->queue.front()) state_->queue.pop();
            state_->queue.release();
        }
        wake_peer(state_->sender_shard);
        if (here) waiters_.wake_all();
        unbind();
    }
    bool closed() const noexcept { return closed_; }

    bool poll() override {
        bool worked = release();
        if (!waiters_.empty() && (state_->queue.has_published() ||
                                  state_->sender_closed.load(std::memory_order_acquire))) {
            waiters_.wake_all();
            worked = true;
        }
        return worked;
    }
    bool has_work() const override {
        if (state_->queue.unreleased() > 0) return true;
        if (waiters_.empty()) return false;
        std::atomic_thread_fence(std::memory_order_seq_cst);
        return state_->queue.has_published() ||
               state_->sender_closed.load(std::memory_order_acquire);
    }

  private:
    bool release() noexcept {
        if (state_->queue.release() == 0) return false;
        wake_peer(state_->sender_shard);
        return true;
    }

    std::shared_ptr<channel_state<T>> state_;
    detail::wait_list waiters_;
    bool closed_ = false;
};

}  // namespace detail

// The sending half of a shared channel. Move-only.
template <typename T>
class shared_sender {
  public:
    // For make_shared_channel and mesh_builder.
    explicit shared_sender(std::shared_ptr<detail::channel_state<T>> s)
        : end_(std::make_unique<detail::channel_sender_end<T>>(std::move(s))) {}

    // Sends one item; waits (suspends) while the channel is full. Throws
    // channel_closed_error once the receiver closed.
    void send(T value) { end().send(std::move(value)); }
    // Binds this half to the calling shard now (otherwise: at first send).
    void connect() { end().bind(); }
    // No more items: the receiver gets the ones already sent, then the end.
    void close() noexcept {
        if (end_) end_->close();
    }
    bool closed() const noexcept { return !end_ || end_->closed(); }

  private:
    detail::channel_sender_end<T>& end() {
        if (!end_) throw std::logic_error("use of a moved-from shared_sender");
        return *end_;
    }

    std::unique_ptr<detail::channel_sender_end<T>> end_;
};

// The receiving half of a shared channel. Move-only.
template <typename T>
class shared_receiver {
  public:
    // For make_shared_channel and mesh_builder.
    explicit shared_receiver(std::shared_ptr<detail::channel_state<T>> s)
        : end_(std::make_unique<detail::channel_receiver_end<T>>(std::move(s))) {}

    // The next item; waits (suspends) while the channel is empty; std::nullopt
    // once the sender closed and every item was received.
    std::optional<T> recv() { return end().recv(); }
    // Binds this half to the calling shard now (otherwise: at first recv).
    void connect() { end().bind(); }
    // Refuses further items (the sender's send() throws) and drops the
    // queued ones.
    void close() noexcept {
        if (end_) end_->close();
    }
    bool closed() const noexcept { return !end_ || end_->closed(); }

  private:
    detail::channel_receiver_end<T>& end() {
        if (!end_) throw std::logic_error("use of a moved-from shared_receiver");
        return *end_;
    }

    std::unique_ptr<detail::channel_receiver_end<T>> end_;
};

// Channels are bounded, and bounded sanely.
inline constexpr std::size_t max_channel_capacity = std::size_t{1} << 20;

// A bounded channel holding up to `capacity` items (rounded up to a power of
// two). Move each half to the shard that will use it.
template <typename T>
std::pair<shared_sender<T>, shared_receiver<T>> make_shared_channel(std::size_t capacity) {
    if (capacity == 0 || capacity > max_channel_capacity) {
        throw std::invalid_argument("make_shared_channel: capacity " + std::to_string(capacity) +
                                    " is not within 1.." + std::to_string(max_channel_capacity));
    }
    auto state = std::make_shared<detail::channel_state<T>>(capacity);
    return {shared_sender<T>(state), shared_receiver<T>(state)};
}

// --- meshes ----------------------------------------------------------------------

// What a mesh member does: send to consumers, receive from producers, or both.
enum class mesh_role { producer, consumer, both };

template <typename T>
class mesh_builder;

// One member's view of a mesh: its peer id (the order of joining) and a
// channel to or from each peer its role allows. Used on the joining shard.
template <typename T>
class mesh_connection {
  public:
    // This member's id, 0 .. peer_count() - 1.
    unsigned peer_id() const noexcept { return id_; }
    unsigned peer_count() const noexcept { return static_cast<unsigned>(shards_.size()); }
    // The shard a peer joined from.
    unsigned shard_of(unsigned peer) const { return shards_.at(peer); }
    mesh_role role() const noexcept { return roles_[id_]; }
    // Peers that receive from us / send to us.
    std::vector<unsigned> consumers() const { return ids_with(senders_); }
    std::vector<unsigned> producers() const { return ids_with(receivers_); }

    // Sends to a consumer peer; waits while that channel is full. Throws
    // channel_closed_error if the peer closed, std::logic_error if we may not
    // send to it (not a consumer, ourselves, out of range).
    void send_to(unsigned peer, T value) { sender(peer).send(std::move(value)); }
    // The next item from a producer peer; std::nullopt once that peer closed.
    std::optional<T> recv_from(unsigned peer) { return receiver(peer).recv(); }
    // Closes every channel of this member, both ways.
    void close() noexcept {
        for (auto& s : senders_) {
            if (s) s->close();
        }
        for (auto& r : receivers_) {
            if (r) r->close();
        }
    }

  private:
    friend class mesh_builder<T>;
    mesh_connection() = default;

    shared_sender<T>& sender(unsigned peer) {
        if (peer >= senders_.size() || !senders_[peer]) {
            throw std::logic_error("mesh: peer " + std::to_string(id_) + " cannot send to peer " +
                                   std::to_string(peer));
        }
        return *senders_[peer];
    }
    shared_receiver<T>& receiver(unsigned peer) {
        if (peer >= receivers_.size() || !receivers_[peer]) {
            throw std::logic_error("mesh: peer " + std::to_string(id_) +
                                   " cannot receive from peer " + std::to_string(peer));
        }
        return *receivers_[peer];
    }
    template <typename V>
    static std::vector<unsigned> ids_with(const std::vector<std::optional<V>>& v) {
        std::vector<unsigned> ids;
        for (unsigned i = 0; i < v.size(); ++i) {
            if (v[i]) ids.push_back(i);
        }
        return ids;
    }

    unsigned id_ = 0;
    std::vector<unsigned> shards_;
    std::vector<mesh_role> roles_;
    std::vector<std::optional<shared_sender<T>>> senders_;      // by consumer peer
    std::vector<std::optional<shared_receiver<T>>> receivers_;  // by producer peer
};

// Builds a mesh of `peers` members, channels of `capacity` items. Copy the
// builder to every member's shard (e.g. into invoke_on_all); each member
// calls join() once, which waits until all `peers` have joined. A full mesh:
// everyone joins with mesh_role::both. A partial mesh: producers send to
// every consumer, consumers receive from every producer (a member that is
// both does both; nobody has a channel to itself).
template <typename T>
class mesh_builder {
  public:
    mesh_builder(unsigned peers, std::size_t capacity) : state_(std::make_shared<shared>()) {
        if (peers == 0) throw std::invalid_argument("mesh_builder: a mesh needs at least one peer");
        if (capacity == 0 || capacity > max_channel_capacity) {
            throw std::invalid_argument("mesh_builder: channel capacity " +
                                        std::to_string(capacity) + " is not within 1.." +
                                        std::to_string(max_channel_capacity));
        }
        state_->peers = peers;
        state_->capacity = capacity;
    }

    unsigned peers() const noexcept { return state_->peers; }

    // Joins from the calling shard (in a fiber) and waits for the others.
    // Throws std::logic_error if the mesh is already complete.
    mesh_connection<T> join(mesh_role role = mesh_role::both) {
        auto& st = *state_;
        unsigned self = this_shard_id();
        detail::wait_list woken;
        unsigned id;
        std::vector<unsigned> to_notify;
        {
            std::lock_guard lock(st.mutex);
            if (st.members.size() == st.peers) {
                throw std::logic_error("mesh_builder::join: all " + std::to_string(st.peers) +
                                       " peers already joined");
            }
            id = static_cast<unsigned>(st.members.size());
            st.members.push_back({self, role, nullptr});
            if (st.members.size() == st.peers) {
                build_channels(st);
                st.complete = true;
                for (auto& m : st.members) to_notify.push_back(m.shard);
            }
        }
        // The last joiner tells each shard with members to look again: only
        // a fiber on that shard may wake its waiting members.
        for (unsigned shard : to_notify) {
            if (shard == self) {
                st.wake_local();
            } else {
                submit_to(shard, [state = state_] { state->wake_local(); });
            }
        }
        for (;;) {
            std::unique_lock lock(st.mutex);
            if (st.complete) return take(st, id);
            st.members[id].waiter = &woken;
            lock.unlock();
            struct forget {
                shared& st;
                unsigned id;
                ~forget() {
                    std::lock_guard g(st.mutex);
                    st.members[id].waiter = nullptr;
                }
            } guard{st, id};
            woken.wait();
        }
    }

  private:
    struct member {
        unsigned shard;
        mesh_role role;
        detail::wait_list* waiter;  // read and written on `shard` only
    };
    struct shared {
        std::mutex mutex;
        unsigned peers = 0;
        std::size_t capacity = 0;
        bool complete = false;
        std::vector<member> members;
        // channels[from][to]: the unbound halves until their members take them.
        std::vector<std::vector<std::optional<shared_sender<T>>>> senders;
        std::vector<std::vector<std::optional<shared_receiver<T>>>> receivers;

        // On one shard: wakes that shard's members waiting in join().
        void wake_local() {
            std::lock_guard lock(mutex);
            unsigned here = this_shard_id();
            for (auto& m : members) {
                if (m.shard == here && m.waiter) m.waiter->wake_all();
            }
        }
    };

    static bool sends(mesh_role r) { return r != mesh_role::consumer; }
    static bool receives(mesh_role r) { return r != mesh_role::producer; }

    static void build_channels(shared& st) {
        unsigned n = st.peers;
        st.senders.resize(n);
        st.receivers.resize(n);
        for (unsigned i = 0; i < n; ++i) {
            st.senders[i].resize(n);
            st.receivers[i].resize(n);
        }
        for (unsigned from = 0; from < n; ++from) {
            for (unsigned to = 0; to < n; ++to) {
                if (from == to || !sends(st.members[from].role) || !receives(st.members[to].role))
                    continue;
                auto ch = std::make_shared<detail::channel_state<T>>(st.capacity);
                st.senders[from][to].emplace(ch);
                st.receivers[to][from].emplace(ch);
            }
        }
    }

    static mesh_connection<T> take(shared& st, unsigned id) {
        mesh_connection<T> c;
        c.id_ = id;
        for (auto& m : st.members) {
            c.shards_.push_back(m.shard);
            c.roles_.push_back(m.role);
        }
        c.senders_ = std::move(st.senders[id]);
        c.receivers_.resize(st.peers);
        for (unsigned from = 0; from < st.peers; ++from) {
            c.receivers_[from] = std::move(st.receivers[id][from]);
        }
        return c;
    }

    std::shared_ptr<shared> state_;
};

}  // namespace percore
