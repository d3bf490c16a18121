// `flashstate bench`: the cases it times (decode, prefill, segmented, paged and mixed caches in the model shape of
// issue 4) and ggml's times for them from issue 4's table.
#pragma once

#include <flashstate/flashstate.h>

#include <cstdint>
#include <string>
#include <vector>

namespace flashstate_tool::bench {

// The model shape of issue 4: 32 query heads over 8 KV heads (GQA groups of 4), D = DV = 128.
constexpr int64_t kHeads = 32, kHeadsKv = 8, kDim = 128;
constexpr int kTargetThreads = 2; // the targets and the ggml table are for 2 threads

// Tokens stored in one type, cut into `segments` calls of equal length (the last may be shorter).
struct Tier {
    fst_type type;
    int64_t n_kv;
    int64_t segments;
};

struct Case {
    std::string name;
    std::vector<Tier> tiers; // oldest tokens first
    int64_t n_q = 1;
    bool causal = false;     // virtual causal mask, query rows at the last n_q positions
    float softcap = 0;       // fst_attn_params.softcap (0: off)
    bool one_call = false;   // all segments in one fst_attn_segments call, not one fst_attn_with_state call each
    int64_t page_keys = 0;   // > 0: the (one) tier as a paged cache, its pages in a random order, one fst_attn_paged call
    int threads = 1;
    double ggml_ms = 0;      // ggml's time for this case (issue 4), 0 if none
    // Cache-resident: one copy read again and again, so the time is the kernels' arithmetic alone, compared with
    // the FMA peak; each timed run makes `repeats` calls (a call is too short to time alone).
    bool cached = false;
    int repeats = 1;

    int64_t n_kv() const {
        int64_t n = 0;
        for (const Tier &t : tiers) n += t.n_kv;
        return n;
    }
    int64_t q_pos0() const { return n_kv() - n_q; }
};

// "32k" for 32768, the number itself when not a multiple of 1024.
std::string kilo(int64_t n);

// Every case of issue 4's list at the given thread counts (small ones with quick).
std::vector<Case> make_cases(bool quick, const std::vector<int> &thread_counts);

// Whether a case's name contains one of the filters (every case when there are none).
bool selected(const Case &c, const std::vector<std::string> &filters);

// The cases of issue 4's split target: the 32k F16 cache in one call, in 64 calls, in one 64-segment call.
struct SplitCases {
    std::string one, calls, multiseg;
};

SplitCases split_cases();

} // namespace flashstate_tool::bench
