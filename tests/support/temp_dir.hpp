// A fresh directory for one test, removed with everything in it at the end.
#pragma once

#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace percore::testing {

// Made under $PERCORE_TEST_DIR, else /var/tmp: a disk file system (O_DIRECT
// works there; /tmp may be a tmpfs).
struct temp_dir {
    std::string path;
    explicit temp_dir(const std::string& prefix = "percore-test") {
        const char* base = std::getenv("PERCORE_TEST_DIR");
        std::string pattern = std::string(base ? base : "/var/tmp") + "/" + prefix + "-XXXXXX";
        if (!::mkdtemp(pattern.data()))
            throw std::runtime_error("mkdtemp " + pattern + ": " + std::strerror(errno));
        path = pattern;
    }
    ~temp_dir() {
        std::error_code ignored;  // best effort: a leftover directory is harmless
        std::filesystem::remove_all(path, ignored);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    // The path of `name` inside the directory.
    std::string file(const std::string& name) const { return path + "/" + name; }
};

}  // namespace percore::testing
