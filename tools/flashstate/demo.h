// `flashstate demo`: a model-shaped layer decoded token by token over the mixed-precision KV cache (hot F16, cold
// Q8_0, memory-mapped Q4_0 file), checked against attention over what the cache stores and compared with attention
// over the full-precision originals.
#pragma once

#include <cstdint>

namespace flashstate_tool {

struct DemoOptions {
    int64_t n_head = 32;      // query heads
    int64_t n_head_kv = 8;    // KV heads (grouped-query attention)
    int64_t dim = 128;        // D = DV; a multiple of 32 (quantized blocks)
    int64_t tokens = 4096;    // tokens streamed through the cache, one decode step each
    int64_t hot = 256;        // capacity of the F16 tier
    int64_t warm = 1024;      // capacity of the Q8_0 tier; older tokens go to the Q4_0 file
    int64_t chunk = 32;       // tokens moved between tiers at once (fst_cache_config.migrate_chunk)
    int64_t keep = 0;         // first tokens kept at F16 forever (attention sinks)
    int64_t outliers = 4;     // large-magnitude K channels per KV head (synthetic.h)
    int64_t checkpoints = 8;  // evenly spaced points where the errors are measured
    uint64_t seed = 42;
    int32_t threads = 0;      // 0 = every hardware thread
};

// Runs the demo and prints its tables. Returns 0 when every check holds, 1 when one fails, 2 on invalid options
// (the message goes to stderr). Library failures surface as flashstate::Error.
int run_demo(const DemoOptions &options);

} // namespace flashstate_tool
