// --mode echo: the reply must be the request, byte for byte. Payloads differ
// per connection and per request so a reordered or mixed-up reply is caught.
#include <cstring>

#include "mode.hpp"

namespace loadgen {
namespace {

class echo_mode final : public mode {
  public:
    explicit echo_mode(const mode_options& options) : size_(options.size) {}

    void make_request(unsigned conn_id, std::uint64_t seq, std::string& out) override {
        std::size_t at = out.size();
        out.resize(at + size_);
        fill(conn_id, seq, out.data() + at);
    }

    reply_kind check_reply(unsigned conn_id, std::uint64_t seq,
                           percore::input_stream& in) override {
        std::string_view reply = in.read_exactly(size_);
        if (reply.size() != size_) return reply_kind::wrong;
        expected_.resize(size_);
        fill(conn_id, seq, expected_.data());
        return std::memcmp(reply.data(), expected_.data(), size_) == 0 ? reply_kind::ok
                                                                       : reply_kind::wrong;
    }

  private:
    void fill(unsigned conn_id, std::uint64_t seq, char* p) const {
        auto base = static_cast<unsigned char>(seq * 131 + conn_id * 7);
        for (std::size_t i = 0; i < size_; ++i) p[i] = static_cast<char>(base + i);
    }

    std::size_t size_;
    std::string expected_;
};

}  // namespace

std::unique_ptr<mode> make_echo_mode(const mode_options& options) {
    return std::make_unique<echo_mode>(options);
}

}  // namespace loadgen
