// `flashstate cache-study`: the numbers of docs/cache-accuracy.md.
//   accuracy (default): attention over the mixed cache (hot F16 window + cold Q8_0 or Q4_0) vs over all-F16 copies of
//                       the same tokens, for several hot windows, with and without K outlier channels;
//   --speed:            decode time of fst_cache_attn vs fst_attn_with_state over one flat buffer of the same tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flashstate_tool {

struct StudyOptions {
    bool speed = false;
    std::string csv;                                // accuracy: also write the rows to this file ("" = no)
    int64_t n_head = 32, n_head_kv = 8, dim = 128;
    int64_t tokens = 4096;                          // accuracy: tokens streamed through each cache
    int64_t queries = 32;                           // accuracy: query positions, spread over the second half
    std::vector<int64_t> windows = {0, 64, 256, 1024}; // accuracy: hot F16 windows (0 = none)
    int64_t outliers = 4;                           // K outlier channels per KV head (the study also runs 0)
    std::vector<int64_t> speed_tokens = {4096, 32768}; // speed: cache lengths
    int runs = 15;                                  // speed: timed runs per case, the median is reported
    uint64_t seed = 42;
    int32_t threads = 0;                            // 0 = every hardware thread
};

int run_accuracy_study(const StudyOptions &o); // 0; 1 if an error is not finite; 2 on invalid options / CSV file
int run_speed_study(const StudyOptions &o);    // 0, or 1 when a cache result differs from its flat-buffer twin

} // namespace flashstate_tool
