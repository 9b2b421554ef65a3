// The app shell: command-line options (Boost.Program_options), CPU choice and
// pinning, starting the shards, signals, and clear one-line failures.
//
//   int main(int argc, char** argv) {
//       percore::app app("echo", "TCP echo on every shard");
//       app.add_options()("port", po::value<uint16_t>()->default_value(7000), "TCP port");
//       return app.run(argc, argv, [&] { ...; percore::wait_for_stop(); return 0; });
//   }
#pragma once

#include <boost/program_options.hpp>

#include <functional>
#include <string>

#include "percore/runtime.hpp"

namespace percore {

class app {
  public:
    explicit app(std::string name, std::string description = {});

    // Declares app-specific options next to the shell's own (--smp, --cpuset,
    // --overprovisioned, --ring-depth, --task-quota-us, --idle-poll-us,
    // --stall-threshold-ms, --stats, --metrics-port, --log-level, --help).
    boost::program_options::options_description_easy_init add_options();

    // Parses argv, starts the shards and runs `main` in a fiber on shard 0.
    // Returns the exit code: main's value; 0 after --help; 2 after one line
    // on stderr for a bad option or an unusable environment.
    int run(int argc, char** argv, std::function<int()> main);

    // The parsed options; valid inside main.
    const boost::program_options::variables_map& options() const noexcept { return options_; }
    // The shards' configuration derived from the options.
    const runtime_config& config() const noexcept { return config_; }
    const std::string& name() const noexcept { return name_; }

  private:
    void configure();  // options_ -> config_; throws config_error

    std::string name_;
    std::string description_;
    boost::program_options::options_description app_options_;
    boost::program_options::options_description shell_options_;
    boost::program_options::variables_map options_;
    runtime_config config_;
};

// Parses a CPU list like "0-3,6" (sorted, duplicates removed); throws
// config_error naming the bad part.
std::vector<unsigned> parse_cpu_list(const std::string& text);

// Parses a size like "512M", "2G", "4096", "64k" into bytes; throws config_error.
std::size_t parse_size(const std::string& text);

}  // namespace percore
