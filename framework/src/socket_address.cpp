#include "percore/socket_address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>
#include <cstring>

#include "percore/errors.hpp"

namespace percore {

socket_address::socket_address() noexcept : storage_{}, length_(sizeof(sa_family_t)) {
    storage_.ss_family = AF_UNSPEC;
}

socket_address::socket_address(const sockaddr* address, socklen_t length) : socket_address() {
    if (length > sizeof(storage_)) {
        throw std::invalid_argument("socket address of " + std::to_string(length) +
                                    " bytes is too long");
    }
    std::memcpy(&storage_, address, length);
    length_ = length;
}

socket_address socket_address::inet(std::string_view host, std::uint16_t port) {
    std::string h(host);
    if (h == "localhost") h = "127.0.0.1";
    socket_address a;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage_);
    if (inet_pton(AF_INET, h.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        a.length_ = sizeof(sockaddr_in);
        return a;
    }
    a = socket_address();
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
    if (inet_pton(AF_INET6, h.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        a.length_ = sizeof(sockaddr_in6);
        return a;
    }
    throw config_error(
        "bad host '" + h +
        "': expected an IPv4 or IPv6 literal or 'localhost' (names are not resolved)");
}

socket_address socket_address::unix_path(std::string_view path) {
    socket_address a;
    auto* un = reinterpret_cast<sockaddr_un*>(&a.storage_);
    if (path.empty()) throw config_error("bad Unix socket address: empty path");
    if (path.size() >= sizeof(un->sun_path)) {
        throw config_error("bad Unix socket path '" + std::string(path) + "': longer than " +
                           std::to_string(sizeof(un->sun_path) - 1) + " bytes");
    }
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, path.data(), path.size());
    a.length_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    return a;
}

socket_address socket_address::parse(std::string_view text) {
    if (text.starts_with("unix:")) return unix_path(text.substr(5));
    if (text.starts_with("/")) return unix_path(text);
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
        throw config_error("bad address '" + std::string(text) +
                           "': expected HOST:PORT or unix:PATH");
    }
    std::string_view host = text.substr(0, colon);
    std::string_view port_text = text.substr(colon + 1);
    if (host.starts_with('[')) {
        if (!host.ends_with(']')) {
            throw config_error("bad address '" + std::string(text) +
                               "': unclosed '[' around an IPv6 host");
        }
        host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string_view::npos) {
        throw config_error("bad address '" + std::string(text) +
                           "': write an IPv6 host as [HOST]:PORT");
    }
    unsigned port = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
        port > 65535) {
        throw config_error("bad address '" + std::string(text) + "': port '" +
                           std::string(port_text) + "' is not a number from 0 to 65535");
    }
    return inet(host, static_cast<std::uint16_t>(port));
}

std::uint16_t socket_address::port() const noexcept {
    if (family() == AF_INET)
        return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
    if (family() == AF_INET6)
        return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
    return 0;
}

std::string socket_address::path() const {
    if (!is_unix()) return {};
    auto* un = reinterpret_cast<const sockaddr_un*>(&storage_);
    std::size_t max =
        length_ > offsetof(sockaddr_un, sun_path) ? length_ - offsetof(sockaddr_un, sun_path) : 0;
    return std::string(un->sun_path, strnlen(un->sun_path, max));
}

std::string socket_address::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    switch (family()) {
        case AF_INET:
            inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf,
                      sizeof(buf));
            return std::string(buf) + ":" + std::to_string(port());
        case AF_INET6:
            inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf,
                      sizeof(buf));
            return "[" + std::string(buf) + "]:" + std::to_string(port());
        case AF_UNIX:
            return "unix:" + path();
        default:
            return "(unspecified address)";
    }
}

bool operator==(const socket_address& a, const socket_address& b) noexcept {
    return a.length_ == b.length_ && std::memcmp(&a.storage_, &b.storage_, a.length_) == 0;
}

}  // namespace percore
