// Files on a shard: everything through io_uring. One include for the lot:
//   aligned_buffer  memory for direct I/O          (aligned_buffer.hpp)
//   dma_file        O_DIRECT random access          (dma_file.hpp)
//   dma_stream_writer / dma_stream_reader
//                   write-behind / read-ahead       (file_stream.hpp)
//   buffered_file   small non-hot files (config)    (buffered_file.hpp)
#pragma once

#include "percore/aligned_buffer.hpp"
#include "percore/buffered_file.hpp"
#include "percore/dma_file.hpp"
#include "percore/file_stream.hpp"
