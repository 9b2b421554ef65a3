#include "percore/log.hpp"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <memory>
#include <string>

#include "percore/errors.hpp"
#include "percore/reactor.hpp"

namespace percore {

namespace {

// %* in the pattern: "shard N" on a reactor thread, "main" elsewhere.
class shard_flag final : public spdlog::custom_flag_formatter {
  public:
    void format(const spdlog::details::log_msg&, const std::tm&,
                spdlog::memory_buf_t& dest) override {
        auto* r = reactor::local_or_null();
        std::string text = r ? "shard " + std::to_string(r->shard_id()) : std::string("main");
        dest.append(text.data(), text.data() + text.size());
    }
    std::unique_ptr<custom_flag_formatter> clone() const override {
        return std::make_unique<shard_flag>();
    }
};

std::shared_ptr<spdlog::logger> make_logger() {
    auto sink =
        std::make_shared<spdlog::sinks::stderr_color_sink_mt>(spdlog::color_mode::automatic);
    auto log = std::make_shared<spdlog::logger>("percore", sink);
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<shard_flag>('*').set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [%*] %v");
    log->set_formatter(std::move(formatter));
    log->set_level(spdlog::level::info);
    log->flush_on(spdlog::level::info);
    return log;
}

}  // namespace

spdlog::logger& logger() {
    static std::shared_ptr<spdlog::logger> instance = make_logger();
    return *instance;
}

void set_log_level(std::string_view level) {
    auto parsed = spdlog::level::from_str(std::string(level));
    if (parsed == spdlog::level::off && level != "off") {
        throw config_error("unknown log level '" + std::string(level) +
                           "' (use trace, debug, info, warn, error, critical or off)");
    }
    logger().set_level(parsed);
}

}  // namespace percore
