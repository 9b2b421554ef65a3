// Runs a child process for tests of the shipped binaries: captures its output
// and exit status, with a timeout so a hang fails the test instead of hanging it.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace percore::testing {

struct process_result {
    int exit_code = -1;  // -1: killed by a signal or by the timeout
    bool timed_out = false;
    std::string out;
    std::string err;
};

class child_process {
  public:
    explicit child_process(const std::vector<std::string>& argv) {
        static int counter = 0;
        std::string base =
            "/tmp/percore-test-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
        out_path_ = base + ".out";
        err_path_ = base + ".err";
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, out_path_.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0600);
        posix_spawn_file_actions_addopen(&actions, 2, err_path_.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0600);
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        int r = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        if (r != 0) throw std::runtime_error("cannot start " + argv[0]);
    }
    ~child_process() {
        if (pid_ > 0) {
            kill(pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        unlink(out_path_.c_str());
        unlink(err_path_.c_str());
    }

    void signal(int sig) { kill(pid_, sig); }

    std::string current_out() const { return slurp(out_path_); }

    // Waits until stdout contains `text`; false on timeout or exit.
    bool wait_for_output(const std::string& text, std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (current_out().find(text) != std::string::npos) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        return false;
    }

    process_result wait(std::chrono::milliseconds timeout) {
        process_result result;
        auto deadline = std::chrono::steady_clock::now() + timeout;
        int status = 0;
        for (;;) {
            pid_t r = waitpid(pid_, &status, WNOHANG);
            if (r == pid_) break;
            if (std::chrono::steady_clock::now() >= deadline) {
                kill(pid_, SIGKILL);
                waitpid(pid_, &status, 0);
                result.timed_out = true;
                break;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        pid_ = -1;
        if (!result.timed_out && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
        result.out = slurp(out_path_);
        result.err = slurp(err_path_);
        return result;
    }

  private:
    static std::string slurp(const std::string& path) {
        std::ifstream in(path);
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }

    pid_t pid_ = -1;
    std::string out_path_;
    std::string err_path_;
};

inline process_result run_process(const std::vector<std::string>& argv,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    child_process child(argv);
    return child.wait(timeout);
}

// A binary built by meson, passed to the test through the environment.
inline std::string built_binary(const char* variable) {
    const char* path = std::getenv(variable);
    if (!path)
        throw std::runtime_error(std::string("environment variable ") + variable +
                                 " not set (run through meson test)");
    return path;
}

}  // namespace percore::testing
