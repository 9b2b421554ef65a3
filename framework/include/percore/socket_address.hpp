// Socket addresses: IPv4, IPv6 and Unix-domain, parsed from the text users
// type ("127.0.0.1:7000", "[::1]:7000", "unix:/run/app.sock") and printed back
// the same way, so options, logs and errors all speak one notation.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace percore {

class socket_address {
  public:
    // An empty address (family AF_UNSPEC); only good for assigning to.
    socket_address() noexcept;
    // Copies a kernel address of `length` bytes (what accept/getpeername give).
    socket_address(const sockaddr* address, socklen_t length);

    // Parses "HOST:PORT" (HOST an IPv4 literal, "[IPv6]" or "localhost"),
    // "unix:PATH" or an absolute PATH. Throws config_error naming the problem.
    // No DNS: resolving names would block the shard.
    static socket_address parse(std::string_view text);
    // A numeric host (IPv4 or IPv6 literal, or "localhost") and a port.
    static socket_address inet(std::string_view host, std::uint16_t port);
    // A Unix-domain socket at `path` (at most 107 bytes).
    static socket_address unix_path(std::string_view path);

    int family() const noexcept { return storage_.ss_family; }
    bool is_unix() const noexcept { return family() == AF_UNIX; }
    // The TCP port; 0 for Unix addresses.
    std::uint16_t port() const noexcept;
    // The path of a Unix address, empty otherwise.
    std::string path() const;

    const sockaddr* native() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
    sockaddr* native() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
    socklen_t length() const noexcept { return length_; }

    // "127.0.0.1:7000", "[::1]:7000" or "unix:/path".
    std::string to_string() const;

    friend bool operator==(const socket_address& a, const socket_address& b) noexcept;

  private:
    sockaddr_storage storage_;
    socklen_t length_;
};

}  // namespace percore
