// The Redis connection-level commands (PING, ECHO, AUTH, HELLO, SELECT,
// CLIENT, COMMAND, CONFIG, QUIT, SHUTDOWN, TIME): answered on the
// connection's shard from its own state, no store involved.
#include <sys/time.h>

#include <algorithm>
#include <cctype>
#include <exception>
#include <optional>

#include "percore/log.hpp"
#include "percore/runtime.hpp"
#include "resp/resp_server.hpp"
#include "resp/resp_session.hpp"

namespace percore::kv {

void resp_session::handle_connection_command(const resp_command_info& info, const resp_args& argv) {
    switch (info.cmd) {
        case resp_cmd::ping:
            if (argv.size() > 2) return local_error(arity_error("ping"));
            return local_reply(
                [&](resp_writer& w) { argv.size() == 2 ? w.bulk(argv[1]) : w.simple("PONG"); });
        case resp_cmd::echo:
            return local_reply([&](resp_writer& w) { w.bulk(argv[1]); });
        case resp_cmd::auth:
            return cmd_auth(argv);
        case resp_cmd::hello:
            return cmd_hello(argv);
        case resp_cmd::select: {
            long long db = 0;
            if (!parse_strict_int(argv[1], db) || db < INT32_MIN || db > INT32_MAX) {
                return local_error(resp_errors::not_integer);
            }
            if (db != 0) return local_error("ERR DB index is out of range");
            return local_reply([](resp_writer& w) { w.ok(); });
        }
        case resp_cmd::client:
            return cmd_client(argv);
        case resp_cmd::command:
            return cmd_command(argv);
        case resp_cmd::config:
            return cmd_config(argv);
        case resp_cmd::quit:
            closing_ = true;
            return local_reply([](resp_writer& w) { w.ok(); });
        case resp_cmd::shutdown:
            logger().warn("resp: SHUTDOWN from client id={}", id_);
            closing_ = true;
            request_app_stop();
            return;  // Redis closes without a reply
        case resp_cmd::time: {
            timeval tv{};
            gettimeofday(&tv, nullptr);
            return local_reply([&](resp_writer& w) {
                w.array(2);
                w.bulk(std::to_string(tv.tv_sec));
                w.bulk(std::to_string(tv.tv_usec));
            });
        }
        default:
            return local_error("ERR internal: not a connection command");
    }
}

// Checks a password as Redis's default user does; false after replying.
bool resp_session::check_credentials(std::string_view user, std::string_view pass) {
    const auto& required = shared_.config.requirepass;
    if (user == "default" && (required.empty() || pass == required)) {
        authenticated_ = true;
        parser_.set_authenticated(true);
        return true;
    }
    local_error("WRONGPASS invalid username-password pair or user is disabled.");
    return false;
}

void resp_session::cmd_auth(const resp_args& argv) {
    if (argv.size() > 3) return local_error(resp_errors::syntax);
    if (argv.size() == 2 && shared_.config.requirepass.empty()) {
        return local_error(
            "ERR AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?");
    }
    const bool ok = argv.size() == 2 ? check_credentials("default", argv[1])
                                     : check_credentials(argv[1], argv[2]);
    if (ok) local_reply([](resp_writer& w) { w.ok(); });
}

bool resp_session::valid_client_name(std::string_view name) {
    return std::all_of(name.begin(), name.end(), [](char c) { return c >= '!' && c <= '~'; });
}

void resp_session::cmd_hello(const resp_args& argv) {
    if (argv.size() >= 2) {
        long long version = 0;
        if (!parse_strict_int(argv[1], version)) {
            return local_error("ERR Protocol version is not an integer or out of range");
        }
        // Only RESP2 here: RESP3 is not implemented.
        if (version != 2) return local_error("NOPROTO unsupported protocol version");
    }
    std::optional<std::string_view> user, pass, name;
    for (std::size_t j = 2; j < argv.size(); ++j) {
        const std::size_t more = argv.size() - 1 - j;
        if (iequals(argv[j], "auth") && more >= 2) {
            user = argv[j + 1];
            pass = argv[j + 2];
            j += 2;
        } else if (iequals(argv[j], "setname") && more >= 1) {
            name = argv[j + 1];
            if (!valid_client_name(*name)) {
                return local_error(
                    "ERR Client names cannot contain spaces, newlines or special characters.");
            }
            ++j;
        } else {
            return local_error("ERR Syntax error in HELLO option '" +
                               std::string(c_str_view(argv[j])) + "'");
        }
    }
    if (user && !check_credentials(*user, *pass)) return;
    if (!authenticated_) {
        return local_error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client "
            "and "
            "select the RESP protocol version at the same time");
    }
    if (name) name_.assign(*name);
    local_reply([&](resp_writer& w) {
        w.array(14);
        w.bulk("server");
        w.bulk("redis");
        w.bulk("version");
        w.bulk(redis_version);
        w.bulk("proto");
        w.integer(2);
        w.bulk("id");
        w.integer(static_cast<long long>(id_));
        w.bulk("mode");
        w.bulk("standalone");
        w.bulk("role");
        w.bulk("master");
        w.bulk("modules");
        w.array(0);
    });
}

std::string resp_session::client_info_line() const {
    std::string addr = "?";
    try {
        addr = conn_->peer_address().to_string();
    } catch (const std::exception& e) {
        addr = std::string("? (") + e.what() + ")";
    }
    return "id=" + std::to_string(id_) + " addr=" + addr + " name=" + name_ + " db=0 resp=2\n";
}

void resp_session::cmd_client(const resp_args& argv) {
    const std::string_view sub = argv[1];
    auto arity = [&](std::string_view name, std::size_t n) {
        if (argv.size() == n) return true;
        local_error(arity_error("client|" + std::string(name)));
        return false;
    };
    if (iequals(sub, "id")) {
        if (arity("id", 2))
            local_reply([&](resp_writer& w) { w.integer(static_cast<long long>(id_)); });
    } else if (iequals(sub, "setname")) {
        if (!arity("setname", 3)) return;
        if (!valid_client_name(argv[2])) {
            return local_error(
                "ERR Client names cannot contain spaces, newlines or special characters.");
        }
        name_.assign(argv[2]);
        local_reply([](resp_writer& w) { w.ok(); });
    } else if (iequals(sub, "getname")) {
        if (arity("getname", 2)) {
            local_reply([&](resp_writer& w) { name_.empty() ? w.null_bulk() : w.bulk(name_); });
        }
    } else if (iequals(sub, "info")) {
        if (arity("info", 2)) local_reply([&](resp_writer& w) { w.bulk(client_info_line()); });
    } else if (iequals(sub, "help")) {
        local_reply([](resp_writer& w) {
            w.array(5);
            w.simple("CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:");
            w.simple("ID: Return the ID of the current connection.");
            w.simple("GETNAME: Return the name of the current connection.");
            w.simple("SETNAME <name>: Assign the name <name> to the current connection.");
            w.simple("INFO: Return information about the current client connection.");
        });
    } else {
        local_error("ERR unknown subcommand '" + std::string(c_str_view(sub).substr(0, 128)) +
                    "'. Try " + upper(argv[0]) + " HELP.");
    }
}

void resp_session::command_info(resp_writer& w, const resp_command_info& c) {
    w.array(10);
    w.bulk(c.name);
    w.integer(c.arity);
    const bool data = c.kind != resp_kind::connection;
    w.array((data ? 1 : 0) + (c.no_auth ? 1 : 0));
    if (data) w.simple(c.write ? "write" : "readonly");
    if (c.no_auth) w.simple("no_auth");
    w.integer(c.first_key);
    w.integer(c.last_key);
    w.integer(c.key_step);
    w.array(1);
    w.simple("@" + std::string(c.group));
    w.array(0);  // tips
    w.array(0);  // key specs
    w.array(0);  // subcommands
}

void resp_session::cmd_command(const resp_args& argv) {
    const auto all = resp_command_table();
    if (argv.size() == 1) {
        return local_reply([&](resp_writer& w) {
            w.array(all.size());
            for (const auto& c : all) command_info(w, c);
        });
    }
    const std::string_view sub = argv[1];
    if (iequals(sub, "count")) {
        if (argv.size() != 2) return local_error(arity_error("command|count"));
        return local_reply([&](resp_writer& w) { w.integer(static_cast<long long>(all.size())); });
    }
    if (iequals(sub, "list")) {
        return local_reply([&](resp_writer& w) {
            w.array(all.size());
            for (const auto& c : all) w.bulk(c.name);
        });
    }
    if (iequals(sub, "info")) {
        return local_reply([&](resp_writer& w) {
            if (argv.size() == 2) {
                w.array(all.size());
                for (const auto& c : all) command_info(w, c);
                return;
            }
            w.array(argv.size() - 2);
            for (std::size_t i = 2; i < argv.size(); ++i) {
                const auto* c = find_resp_command(argv[i]);
                c ? command_info(w, *c) : w.null_bulk();
            }
        });
    }
    if (iequals(sub, "docs")) {
        std::vector<const resp_command_info*> wanted;
        if (argv.size() == 2) {
            for (const auto& c : all) wanted.push_back(&c);
        } else {
            for (std::size_t i = 2; i < argv.size(); ++i) {
                if (const auto* c = find_resp_command(argv[i])) wanted.push_back(c);
            }
        }
        return local_reply([&](resp_writer& w) {
            w.array(wanted.size() * 2);
            for (const auto* c : wanted) {
                w.bulk(c->name);
                w.array(6);
                w.bulk("summary");
                w.bulk(c->summary);
                w.bulk("since");
                w.bulk("1.0.0");
                w.bulk("group");
                w.bulk(c->group);
            }
        });
    }
    local_error("ERR unknown subcommand '" + std::string(c_str_view(sub).substr(0, 128)) +
                "'. Try " + upper(argv[0]) + " HELP.");
}

void resp_session::cmd_config(const resp_args& argv) {
    const std::string_view sub = argv[1];
    if (!iequals(sub, "get")) {
        return local_error("ERR unknown subcommand '" +
                           std::string(c_str_view(sub).substr(0, 128)) + "'. Try " +
                           upper(argv[0]) + " HELP.");
    }
    if (argv.size() < 3) return local_error(arity_error("config|get"));
    // What clients such as redis-benchmark ask for; the rest is not configurable at run time.
    // appendonly: whether changes go to a log (--data-dir); save: no RDB
    // snapshots are ever written (the log is the only persistence).
    const shard_log* log = shared_.database->local().log();
    const std::pair<std::string_view, std::string> params[] = {
        {"save", ""},
        {"appendonly", log ? "yes" : "no"},
        {"appendfsync",
         shared_.database->local().config().persistence.data_dir.empty()
             ? "everysec"
             : std::string(fsync_mode_name(shared_.database->local().config().persistence.fsync))},
        {"databases", "1"},
        {"requirepass", shared_.config.requirepass},
        {"proto-max-bulk-len", std::to_string(shared_.config.proto_max_bulk_len)},
        {"client-query-buffer-limit", std::to_string(shared_.config.client_query_buffer_limit)},
        {"maxclients", std::to_string(shared_.database->local().config().max_connections)},
        {"port", std::to_string(fe_->port())},
    };
    std::vector<const std::pair<std::string_view, std::string>*> hits;
    for (const auto& p : params) {
        for (std::size_t i = 2; i < argv.size(); ++i) {
            std::string lower(argv[i]);
            for (char& c : lower)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (resp_glob_match(lower, p.first)) {
                hits.push_back(&p);
                break;
            }
        }
    }
    local_reply([&](resp_writer& w) {
        w.array(hits.size() * 2);
        for (const auto* p : hits) {
            w.bulk(p->first);
            w.bulk(p->second);
        }
    });
}

}  // namespace percore::kv
