// The clock every percore wait and timer uses.
#pragma once

#include <chrono>

namespace percore {

// Monotonic; deadlines are absolute points on it.
using clock = std::chrono::steady_clock;
using time_point = clock::time_point;
using duration = clock::duration;

using namespace std::chrono_literals;

}  // namespace percore
