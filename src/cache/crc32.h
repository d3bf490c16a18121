// CRC-32 (the IEEE / zlib polynomial, reflected) for the checksums of saved cache files.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fst {

// crc32(data) == crc32_update(0, data); crc32_update(crc32_update(0, a), b) == crc32(a then b).
uint32_t crc32_update(uint32_t crc, const void *data, size_t n);

} // namespace fst
