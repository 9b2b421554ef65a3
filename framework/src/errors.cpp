#include "percore/errors.hpp"

#include <cerrno>

namespace percore {

int throw_if_error(int result, const char* what) {
    if (result >= 0) return result;
    int err = result == -1 ? errno : -result;
    throw io_error(err, what);
}

}  // namespace percore
