// --mode echo: the reply must be the request, byte for byte. Payloads differ
// per connection and per request so a reordered or mixed-up reply is caught.
#include <cstring>

#include "mode.hpp"

namespace loadgen {
namespace {

class echo_mode final : public mode {
  public:
    explicit echo_mode(const mode_options& options)
        : size_(options.size), pattern_(size_ + 256, '\0') {
        for (std::size_t i = 0; i < pattern_.size(); ++i) pattern_[i] = static_cast<char>(i);
    }

    void make_request(unsigned conn_id, std::uint64_t seq, std::string& out) override {
        std::size_t at = out.size();
        out.resize(at + size_);
        std::memcpy(out.data() + at, payload(conn_id, seq), size_);
    }

    reply_kind check_reply(unsigned conn_id, std::uint64_t seq,
                           percore::input_stream& in) override {
        std::string_view reply = in.read_exactly(size_);
        if (reply.size() != size_) return reply_kind::wrong;
        return std::memcmp(reply.data(), payload(conn_id, seq), size_) == 0 ? reply_kind::ok
                                                                            : reply_kind::wrong;
    }

  private:
    // The payload of request `seq` on connection `conn_id`: bytes counting up
    // from a start that depends on both. A window into one precomputed run, so
    // making and checking a 16 KiB payload are a memcpy and a memcmp, not a
    // byte loop that would make the load generator the bottleneck.
    const char* payload(unsigned conn_id, std::uint64_t seq) const {
        auto start = static_cast<unsigned char>(seq * 131 + conn_id * 7);
        return pattern_.data() + start;
    }

    std::size_t size_;
    std::string pattern_;  // byte i is i mod 256, size_ + 256 long
};

}  // namespace

std::unique_ptr<mode> make_echo_mode(const mode_options& options) {
    return std::make_unique<echo_mode>(options);
}

}  // namespace loadgen
