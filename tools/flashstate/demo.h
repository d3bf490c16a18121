// `flashstate demo`: a model-shaped KV cache in mixed storage, processed segment by segment with carried state,
// checked against the unsplit call and a double-precision softmax over the same stored values.
#pragma once

#include <cstdint>

namespace flashstate_tool {

struct DemoOptions {
    int64_t n_head = 32;     // query heads
    int64_t n_head_kv = 8;   // KV heads (grouped-query attention)
    int64_t dim = 128;       // D = DV; a multiple of 32 (quantized blocks)
    int64_t n_kv = 4096;     // tokens in the cache
    int64_t n_q = 16;        // query rows, at the last n_q positions, causal
    int64_t segment = 256;   // tokens per segment (a storage tier's last segment may be shorter)
    int64_t hot = -1;        // newest tokens stored as F16; -1 = n_kv / 4
    int64_t warm = -1;       // next-newest tokens stored as Q8_0; -1 = n_kv / 4; the oldest rest is Q4_0
    uint64_t seed = 42;
    int32_t threads = 0;     // 0 = every hardware thread
    int runs = 5;            // timed repetitions; the median is reported
};

// Runs the demo and prints its table. Returns 0 when both bounds hold, 1 when one fails, 2 on invalid options
// (the message goes to stderr). Library failures surface as flashstate::Error.
int run_demo(const DemoOptions &options);

} // namespace flashstate_tool
