// fst_cache_save / fst_cache_load: one file holding a whole cache (docs/cache.md, "File format").
#pragma once

#include "cache/cache.h"

#include <memory>

namespace fst {

// Writes to a temporary file next to `path`, fsyncs it, renames it over `path` and fsyncs the directory, so `path`
// holds either the old file or the complete new one. Takes every layer's read lock (a consistent snapshot).
// Throws FST_ERR_IO naming the path and the system's reason.
void save_cache(const fst_cache &cache, const char *path);

// Checks the header and every section's checksum before it creates anything, then every count against the config.
// Throws FST_ERR_IO (cannot read), FST_ERR_CORRUPT (truncated, checksum, inconsistent), FST_ERR_UNSUPPORTED
// (a well-formed file of another format version).
std::unique_ptr<fst_cache> load_cache(const char *path, const char *file_tier_path);

} // namespace fst
