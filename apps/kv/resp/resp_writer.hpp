// RESP2 replies appended to a connection's output buffer: the kv app's Redis
// front end writes every reply through this, so the framing lives in one place.
#pragma once

#include <charconv>
#include <cstddef>
#include <string>
#include <string_view>

namespace percore::kv {

class resp_writer {
  public:
    explicit resp_writer(std::string& out) noexcept : out_(&out) {}

    // "+OK\r\n". The text must not contain CR or LF.
    void simple(std::string_view text) { line('+', text); }
    // "-ERR ...\r\n": `text` starts with the error code (ERR, WRONGTYPE...).
    // CR and LF in it become spaces, as Redis does, so the framing holds.
    void error(std::string_view text) {
        out_->push_back('-');
        const std::size_t at = out_->size();
        out_->append(text);
        for (std::size_t i = at; i < out_->size(); ++i) {
            if ((*out_)[i] == '\r' || (*out_)[i] == '\n') (*out_)[i] = ' ';
        }
        out_->append("\r\n", 2);
    }
    // ":42\r\n"
    void integer(long long value) { number(':', value); }
    // "$3\r\nfoo\r\n"
    void bulk(std::string_view data) {
        number('$', static_cast<long long>(data.size()));
        out_->append(data);
        out_->append("\r\n", 2);
    }
    // "$-1\r\n": a missing value.
    void null_bulk() { out_->append("$-1\r\n", 5); }
    // "*N\r\n": N replies follow.
    void array(std::size_t count) { number('*', static_cast<long long>(count)); }
    // "*-1\r\n": a missing array.
    void null_array() { out_->append("*-1\r\n", 5); }
    // "+OK\r\n", the most common reply.
    void ok() { out_->append("+OK\r\n", 5); }

    std::string& buffer() noexcept { return *out_; }

  private:
    void line(char type, std::string_view text) {
        out_->push_back(type);
        out_->append(text);
        out_->append("\r\n", 2);
    }
    void number(char type, long long value) {
        char buf[24];
        buf[0] = type;
        auto res = std::to_chars(buf + 1, buf + sizeof(buf) - 2, value);
        res.ptr[0] = '\r';
        res.ptr[1] = '\n';
        out_->append(buf, static_cast<std::size_t>(res.ptr + 2 - buf));
    }

    std::string* out_;
};

}  // namespace percore::kv
