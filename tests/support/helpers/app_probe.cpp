// A minimal percore app for the app-shell tests: prints what it was started
// with; with --wait it serves until SIGINT/SIGTERM like a real server.
#include <cstdio>

#include "percore/app.hpp"
#include "percore/reactor.hpp"
#include "percore/runtime.hpp"

int main(int argc, char** argv) {
    percore::app app("app_probe", "prints its shard configuration");
    app.add_options()("wait", boost::program_options::bool_switch(), "wait for a stop signal");
    return app.run(argc, argv, [&] {
        std::string cpus;
        for (unsigned c : app.config().cpus) cpus += (cpus.empty() ? "" : ",") + std::to_string(c);
        std::printf("shards=%u cpus=%s\n", percore::shard_count(),
                    cpus.empty() ? "none" : cpus.c_str());
        std::fflush(stdout);
        if (app.options()["wait"].as<bool>()) {
            std::printf("waiting\n");
            std::fflush(stdout);
            percore::wait_for_stop();
            std::printf("stopped\n");
        }
        return 0;
    });
}
