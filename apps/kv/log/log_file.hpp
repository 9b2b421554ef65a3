// The file side of a kv shard log: log_appender writes records at the end
// of a log file through aligned direct writes with space preallocated ahead,
// and scan_log() reads a log back at start-up, deciding what is a torn tail
// (cut) and what is corruption in the middle (an error, or cut with repair).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "log/log_format.hpp"
#include "percore/aligned_buffer.hpp"
#include "percore/dma_file.hpp"
#include "percore/sync.hpp"

namespace percore::kv {

// Appends bytes to a log file. The file is kept preallocated (fallocate, zero
// filled) ahead of the data, so that running out of disk shows up in
// reserve() before it can fail a write of accepted records, and so the data
// ends where the first zero header is. One fiber appends and syncs; another
// may reserve() meanwhile (extending the file ahead without stalling appends).
class log_appender {
  public:
    log_appender() = default;
    // Appends after `end` (the end of the valid data; the partial block
    // there is read back). The file's bytes past `end` must be zero, or, in
    // a `reused` log, records of an older generation (log_format.hpp).
    log_appender(dma_file file, std::uint64_t end, bool reused = false);
    log_appender(log_appender&&) noexcept = default;
    log_appender& operator=(log_appender&&) noexcept = default;

    // Writes `data` after what is there (returns once written, not durable).
    // Extends the preallocation first if needed: io_error(ENOSPC) then, with
    // nothing written.
    void append(std::string_view data);
    // Makes sure at least `room` bytes past the end are preallocated, growing
    // by a chunk (1/8 of the file, 1 to 8 MiB) or just enough when the disk
    // cannot give a chunk; the zeros are written, so appends overwrite written
    // blocks (cheap fdatasync). io_error(ENOSPC) if not even that fits.
    // One extension at a time: a second caller waits for the first, then
    // extends only if still needed.
    void reserve(std::uint64_t room);
    // fdatasync: everything appended so far is durable.
    void sync() { file_.fdatasync(); }
    // Closes the file (no sync). A reused log is cut at its end first, so the
    // next start does not search its older records for valid ones.
    void close();

    std::uint64_t end() const noexcept { return end_; }
    // Preallocated bytes past the end.
    std::uint64_t room() const noexcept { return allocated_ - end_; }
    bool is_open() const noexcept { return file_.is_open(); }
    dma_file& file() noexcept { return file_; }

  private:
    dma_file file_;
    aligned_buffer buf_;  // the partial last block (tail_ bytes), then the data to write
    std::size_t align_ = 4096;
    std::size_t tail_ = 0;         // bytes of the last, partial block
    std::uint64_t end_ = 0;        // end of the data
    std::uint64_t allocated_ = 0;  // file size (preallocated up to here)
    bool reused_ = false;          // older records may follow the end
    // Held while the file is extended (on the heap: the appender moves).
    std::unique_ptr<mutex> extending_ = std::make_unique<mutex>();
};

// What scan_log() found.
struct scan_result {
    std::uint64_t end = 0;         // where the valid records end (append there)
    std::uint64_t records = 0;     // valid records passed to the callback
    std::uint64_t dropped = 0;     // bytes cut after `end` (torn tail or repair), zeros excluded
    bool repaired = false;         // corruption in the middle was cut (repair)
    std::uint32_t generation = 0;  // from the header record (0: version 1 or none)
};

// Reads every valid record of `file` in order and passes it to on_record.
// Stops at the end marker or the end of the file. A record that is not valid
// is a torn tail (cut, logged) when no valid record follows it; when one
// does, it is corruption in the middle: config_error naming the file, the
// offset and the fix, unless `repair`, which cuts the log there (logged with
// how much was dropped). The file is not modified.
scan_result scan_log(dma_file& file, bool repair,
                     const std::function<void(const log_record&)>& on_record);

}  // namespace percore::kv
