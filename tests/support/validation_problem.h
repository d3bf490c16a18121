// The valid problem the validation tests start from (tests/test_validation.cpp breaks one thing of it per case,
// tests/test_valid_input.cpp checks what it must accept): every buffer any public entry point reads or writes, and
// a call of each entry point with them.
#pragma once

#include "support/buffer.h"

#include <flashstate/flashstate.h>

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace fst_test {

// The byte the tests fill outputs with before a call that must write nothing.
constexpr unsigned char kCanary = 0xA5;

// An I32 [n, m] position tensor: column c holds start + c + i (sequences at different positions).
Buffer positions(int64_t n, int64_t m, int64_t start);

struct Dims {
    int64_t D = 64, DV = 64, n_q = 3, n_kv = 10, n_head = 4, n_head_kv = 2, n_seq = 2, n_seq_kv = 2;
    int64_t mask_rows = 4, m2 = 2, m3 = 1; // mask rows padded past n_q, as ggml pads them
    fst_type q_type = FST_TYPE_F32, k_type = FST_TYPE_F16, v_type = FST_TYPE_F32, mask_type = FST_TYPE_F16;
};

// Everything any entry point reads or writes. Breakers edit the views (or swap buffers); call() passes them.
struct Problem {
    Dims dims;
    fst_attn_params params{};
    Buffer q, k, v, mask, sinks, q_pos, kv_pos;
    Buffer state, out, other_state, other_out, lse;
    Buffer floats, blocks; // fst_quantize_row: floats -> blocks; fst_dequantize_row: blocks -> floats
    bool with_mask = true, with_sinks = true, with_q_pos = false, with_kv_pos = false;
    std::set<std::string> null_args; // arguments passed as NULL pointers
    float base = 2.0f;
    int row_type = FST_TYPE_Q8_0; // an int, so that 99 can be held without undefined behaviour
    int64_t row_n = 64;
    int part_ith = 0, part_nth = 2; // the *_part entry points
    // fst_attn_segments: the KV range cut at `split` into two segments, each with its k, v and mask column range;
    // edit_segments may break those views (spare is a buffer to point them at).
    int64_t n_segments = 2, split = 4;
    std::function<void(Problem &, fst_tensor (&)[2][3])> edit_segments;
    Buffer spare;
    fst_status setup_status = FST_OK;

    // Random q, k, v; a mask of zeros, sinks, positions, lse values; state and out (padded) initialized.
    explicit Problem(const Dims &d = {});

    // Sets up the causal virtual mask with explicit position tensors (the base of the q_pos / kv_pos cases).
    void use_positions() {
        params.virtual_mask = FST_MASK_CAUSAL;
        with_q_pos = with_kv_pos = true;
    }

    std::vector<std::pair<const char *, Buffer *>> buffers() {
        return {{"q", &q},         {"k", &k},         {"v", &v},           {"mask", &mask},
                {"sinks", &sinks}, {"q_pos", &q_pos}, {"kv_pos", &kv_pos}, {"state", &state},
                {"out", &out},     {"other_state", &other_state},          {"other_out", &other_out},
                {"lse", &lse},     {"floats", &floats},                    {"blocks", &blocks},
                {"spare", &spare}};
    }
};

enum class Entry {
    attn, attn_part, segments, segments_part, init, merge, add_sinks, export_lse, import_lse, quantize, dequantize
};

// The entry point's C name ("fst_attn_with_state").
const char *function_name(Entry e);

// Calls entry point e with the problem's views (NULL for the names in null_args).
fst_status call(Entry e, Problem &p);

// Every buffer's bytes, padding included: what a rejected call must leave as it was.
struct Snapshot {
    std::vector<std::vector<unsigned char>> storages;
};
Snapshot snapshot(Problem &p);

} // namespace fst_test
