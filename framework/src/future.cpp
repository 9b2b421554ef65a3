#include "percore/future.hpp"

#include "percore/log.hpp"

namespace percore::detail {

void report_unobserved_exception(const std::exception_ptr& error,
                                 const std::string& origin) noexcept {
    try {
        std::rethrow_exception(error);
    } catch (const shutdown_error& e) {
        // Expected while a shard stops: fibers unwind with it.
        logger().debug("fiber unwound at shutdown{}{}: {}", origin.empty() ? "" : " from ", origin,
                       e.what());
    } catch (const std::exception& e) {
        logger().error("unobserved exception{}{}: {}", origin.empty() ? "" : " from ", origin,
                       e.what());
    } catch (...) {
        logger().error("unobserved exception{}{} (not a std::exception)",
                       origin.empty() ? "" : " from ", origin);
    }
}

}  // namespace percore::detail
