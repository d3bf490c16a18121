// SPEC section 5, bad input. Every public entry point starts from a valid problem (checked to succeed first), one
// thing is broken, and the call must (a) return the expected status, (b) leave a message that names the function,
// the tensor field with its dimension, the actual and the expected value, and (c) write no byte anywhere: out, state
// and lse are filled with a canary and every buffer, padding included, is compared before and after.
// The valid problem is tests/support/validation_problem.h; what validation must accept is tests/test_valid_input.cpp.
#include "reference/reference.h"
#include "support/buffer.h"
#include "support/validation_problem.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <set>
#include <string>
#include <vector>

using fst_test::Buffer;
using fst_test::call;
using fst_test::Dims;
using fst_test::Entry;
using fst_test::function_name;
using fst_test::kCanary;
using fst_test::positions;
using fst_test::Problem;
using fst_test::Snapshot;
using fst_test::snapshot;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();
const int64_t k2pow62 = int64_t(1) << 62;                 // printed 4611686018427387904
// About SIZE_MAX / 2, rounded down to a multiple of 64 so that only the size is wrong, not the alignment.
const size_t kHugeStride = (std::numeric_limits<size_t>::max() / 2) & ~size_t(63); // printed 9223372036854775744

// ---- Edits ----

// Writes a raw value into an enum field: values such as 99 are outside the enum's range in C++.
template <class Enum> void set_raw(Enum &field, int value) {
    static_assert(sizeof(Enum) == sizeof(int));
    std::memcpy(&field, &value, sizeof value);
}

// Changes a view's type, and nb[0] with it when the new type is known, so only the type is wrong. (An unknown
// value is never read back through the enum here: that load would be undefined behaviour in C++.)
void set_type(fst_tensor &t, int type) {
    set_raw(t.type, type);
    if (type != 99) t.nb[0] = fst_type_size(static_cast<fst_type>(type));
}

unsigned char *bytes(void *p) { return static_cast<unsigned char *>(p); }

// ---- Messages ----

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// True when `needle` occurs in `text` as a whole token: not glued to word characters, a number not inside a larger
// number, an index or a decimal ("1" does not match "-1", "ne[1]" or "1.5"; "-1" matches "-1" and "-1.000000").
bool contains_token(const std::string &text, const std::string &needle) {
    const bool numeric_start = std::isdigit(static_cast<unsigned char>(needle.front()));
    const bool numeric_end = std::isdigit(static_cast<unsigned char>(needle.back()));
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
        const char before = at > 0 ? text[at - 1] : ' ';
        size_t end = at + needle.size();
        if (numeric_end && end < text.size() && text[end] == '.') { // trailing zeros of a printed float
            ++end;
            while (end < text.size() && text[end] == '0') ++end;
        }
        const char after = end < text.size() ? text[end] : ' ';
        if (is_word_char(needle.front()) && is_word_char(before)) continue;
        if (numeric_start && (before == '-' || before == '.' || before == '[')) continue;
        if (is_word_char(needle.back()) && is_word_char(after)) continue;
        if (numeric_end && after == ']') continue;
        return true;
    }
    return false;
}

std::string lower(std::string s) {
    for (char &c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// A needle is a list of alternatives separated by '|'; each is a whole token, or a plain substring when it starts
// with '='. Matching ignores case.
bool message_has(const std::string &message, const std::string &needle) {
    const std::string text = lower(message);
    size_t from = 0;
    while (true) {
        const size_t bar = needle.find('|', from);
        const std::string alt = lower(needle.substr(from, bar == std::string::npos ? std::string::npos : bar - from));
        if (alt[0] == '=' ? text.find(alt.substr(1)) != std::string::npos : contains_token(text, alt)) return true;
        if (bar == std::string::npos) return false;
        from = bar + 1;
    }
}

TEST(MessageMatcher, MatchesWholeTokensOnly) {
    const std::string m = "fst_x: k.ne[1] = -1, expected >= 0; nb[2] = 1.500000, scale = 10.000000, other_state";
    EXPECT_TRUE(message_has(m, "k.ne[1]"));
    EXPECT_TRUE(message_has(m, "-1"));
    EXPECT_FALSE(message_has(m, "1"));  // only inside "ne[1]", "-1" and "1.5"
    EXPECT_FALSE(message_has(m, "2"));  // only inside "nb[2]"
    EXPECT_TRUE(message_has(m, "10"));  // "10.000000"
    EXPECT_TRUE(message_has(m, "0"));
    EXPECT_FALSE(message_has(m, "state")); // only inside "other_state"
    EXPECT_TRUE(message_has(m, "missing|other_state"));
    EXPECT_TRUE(message_has(m, "=pect"));
    EXPECT_FALSE(message_has(m, "pect"));
}

// ---- The cases ----

using Edit = std::function<void(Problem &)>;

struct Case {
    std::string name;
    Entry entry;
    Edit valid;  // turns the default problem into the valid starting point of this case (may be empty)
    Edit broken; // breaks exactly one thing
    fst_status status;
    std::vector<std::string> needles; // each must be in the message, besides the function's name
};

const fst_status kInvalid = FST_ERR_INVALID_ARGUMENT;
const fst_status kUnsupported = FST_ERR_UNSUPPORTED;

Edit dims(Dims d) {
    return [d](Problem &p) { p = Problem(d); };
}
Edit none() { return {}; }

std::vector<Case> attention_cases() {
    const Edit k_f32 = dims(Dims{.k_type = FST_TYPE_F32});
    const Edit mask_f32 = dims(Dims{.mask_type = FST_TYPE_F32});
    const Edit with_positions = [](Problem &p) { p.use_positions(); };
    const Edit four_seqs = dims(Dims{.n_seq = 4, .n_seq_kv = 4});
    const Edit d48 = dims(Dims{.D = 48});
    const Edit dv48 = dims(Dims{.DV = 48, .v_type = FST_TYPE_F16});
    const Edit no_mask = [](Problem &p) { p.with_mask = false; };
    const Edit sliding = [](Problem &p) {
        p.params.virtual_mask = FST_MASK_SLIDING_WINDOW;
        p.params.window = 4;
    };
    const Entry A = Entry::attn;
    return {
        // Types: one the library knows but does not take in that place, or no type at all.
        {"q_type_i32", A, none(), [](Problem &p) { set_type(p.q.t, FST_TYPE_I32); }, kUnsupported, {"q.type", "i32|26", "f32"}},
        {"q_type_q8_0", A, none(), [](Problem &p) { set_type(p.q.t, FST_TYPE_Q8_0); }, kUnsupported, {"q.type", "q8_0", "f32"}},
        {"k_type_i32", A, k_f32, [](Problem &p) { set_type(p.k.t, FST_TYPE_I32); }, kUnsupported, {"k.type", "i32|26", "f16"}},
        {"k_type_99", A, k_f32, [](Problem &p) { set_type(p.k.t, 99); }, kUnsupported, {"k.type", "99", "f16"}},
        {"v_type_i32", A, none(), [](Problem &p) { set_type(p.v.t, FST_TYPE_I32); }, kUnsupported, {"v.type", "i32|26", "f32"}},
        {"v_type_99", A, none(), [](Problem &p) { set_type(p.v.t, 99); }, kUnsupported, {"v.type", "99", "f32"}},
        {"mask_type_bf16", A, none(), [](Problem &p) { set_type(p.mask.t, FST_TYPE_BF16); }, kUnsupported, {"mask.type", "bf16|30", "f16"}},
        {"mask_type_i32", A, mask_f32, [](Problem &p) { set_type(p.mask.t, FST_TYPE_I32); }, kUnsupported, {"mask.type", "i32|26", "f32"}},
        {"sinks_type_f16", A, none(), [](Problem &p) { set_type(p.sinks.t, FST_TYPE_F16); }, kUnsupported, {"sinks.type", "f16", "f32"}},
        {"state_type_f16", A, none(), [](Problem &p) { set_type(p.state.t, FST_TYPE_F16); }, kUnsupported, {"state.type", "f16", "f32"}},
        {"out_type_f16", A, none(), [](Problem &p) { set_type(p.out.t, FST_TYPE_F16); }, kUnsupported, {"out.type", "f16", "f32"}},
        {"out_type_bf16", A, none(), [](Problem &p) { set_type(p.out.t, FST_TYPE_BF16); }, kUnsupported, {"out.type", "bf16", "f32"}},
        {"q_pos_type_f32", A, with_positions, [](Problem &p) { set_type(p.q_pos.t, FST_TYPE_F32); }, kUnsupported, {"q_pos.type", "f32", "i32"}},
        {"kv_pos_type_f32", A, with_positions, [](Problem &p) { set_type(p.kv_pos.t, FST_TYPE_F32); }, kUnsupported, {"kv_pos.type", "f32", "i32"}},

        // Extents that disagree between tensors.
        {"d_mismatch_q_k", A, none(), [](Problem &p) { p.k = Buffer(FST_TYPE_F16, {96, 10, 2, 2}); }, kInvalid,
         {"k.ne[0]", "q.ne[0]", "96", "64"}},
        {"dv_mismatch_v_out", A, none(), [](Problem &p) { p.out = Buffer(FST_TYPE_F32, {32, 4, 3, 2}, {0, 16, 32, 4096}); },
         kInvalid, {"out.ne[0]", "v.ne[0]", "32", "64"}},
        {"n_kv_mismatch_k_v", A, none(), [](Problem &p) { p.v.t.ne[1] = 9; }, kInvalid, {"v.ne[1]", "k.ne[1]", "9", "10"}},
        {"n_head_kv_mismatch_k_v", A, none(), [](Problem &p) { p.v.t.ne[2] = 1; }, kInvalid, {"v.ne[2]", "k.ne[2]", "1", "2"}},
        {"n_seq_kv_mismatch_k_v", A, none(), [](Problem &p) { p.v.t.ne[3] = 1; }, kInvalid, {"v.ne[3]", "k.ne[3]", "1", "2"}},
        {"n_head_not_multiple_of_n_head_kv", A, none(),
         [](Problem &p) {
             p.k = Buffer(FST_TYPE_F16, {64, 10, 3, 2});
             p.v = Buffer(FST_TYPE_F32, {64, 10, 3, 2});
         },
         kInvalid, {"k.ne[2]", "q.ne[2]|n_head", "3", "4"}},
        {"n_seq_not_multiple_of_n_seq_kv", A, none(),
         [](Problem &p) {
             p.k = Buffer(FST_TYPE_F16, {64, 10, 2, 3});
             p.v = Buffer(FST_TYPE_F32, {64, 10, 2, 3});
         },
         kInvalid, {"k.ne[3]", "q.ne[3]|n_seq", "3", "2"}},
        {"mask_ne0_short_of_n_kv", A, none(), [](Problem &p) { p.mask.t.ne[0] = 9; }, kInvalid,
         {"mask.ne[0]", "k.ne[1]|n_kv", "9", "10"}},
        {"mask_ne0_beyond_n_kv", A, none(), [](Problem &p) { p.mask = Buffer(FST_TYPE_F16, {11, 4, 2, 1}); }, kInvalid,
         {"mask.ne[0]", "k.ne[1]|n_kv", "11", "10"}},
        {"mask_rows_fewer_than_n_q", A, none(), [](Problem &p) { p.mask.t.ne[1] = 2; }, kInvalid,
         {"mask.ne[1]", "q.ne[1]|n_q", "2", "3"}},
        {"mask_ne2_not_dividing_n_head", A, none(), [](Problem &p) { p.mask = Buffer(FST_TYPE_F16, {10, 4, 3, 1}); },
         kInvalid, {"mask.ne[2]", "q.ne[2]|n_head", "3", "4"}},
        {"mask_ne3_not_dividing_n_seq", A, none(), [](Problem &p) { p.mask = Buffer(FST_TYPE_F16, {10, 4, 2, 3}); },
         kInvalid, {"mask.ne[3]", "q.ne[3]|n_seq", "3", "2"}},
        {"sinks_ne0_not_n_head", A, none(), [](Problem &p) { p.sinks.t.ne[0] = 3; }, kInvalid,
         {"sinks.ne[0]", "q.ne[2]|n_head", "3", "4"}},
        {"sinks_not_1d", A, none(), [](Problem &p) { p.sinks.t.ne[1] = 2; }, kInvalid, {"sinks.ne[1]", "2", "1"}},
        {"state_ne0_not_2", A, none(), [](Problem &p) { p.state.t.ne[0] = 3; }, kInvalid, {"state.ne[0]", "3", "2"}},
        {"state_out_disagree_on_n_head", A, none(), [](Problem &p) { p.state.t.ne[1] = 3; }, kInvalid,
         {"state.ne[1]", "out.ne[1]", "3", "4"}},
        {"state_and_out_n_head_not_q", A, none(),
         [](Problem &p) { p.state.t.ne[1] = p.out.t.ne[1] = 3; }, kInvalid, {"state.ne[1]|out.ne[1]", "q.ne[2]|n_head", "3", "4"}},
        {"state_and_out_n_q_not_q", A, none(),
         [](Problem &p) { p.state.t.ne[2] = p.out.t.ne[2] = 2; }, kInvalid, {"state.ne[2]|out.ne[2]", "q.ne[1]|n_q", "2", "3"}},
        {"state_and_out_n_seq_not_q", A, none(),
         [](Problem &p) { p.state.t.ne[3] = p.out.t.ne[3] = 1; }, kInvalid, {"state.ne[3]|out.ne[3]", "q.ne[3]|n_seq", "1", "2"}},
        {"out_n_head_wrong", A, none(), [](Problem &p) { p.out.t.ne[1] = 3; }, kInvalid,
         {"out.ne[1]", "state.ne[1]|q.ne[2]|n_head", "3", "4"}},
        {"out_n_q_wrong", A, none(), [](Problem &p) { p.out.t.ne[2] = 2; }, kInvalid,
         {"out.ne[2]", "state.ne[2]|q.ne[1]|n_q", "2", "3"}},
        {"out_n_seq_wrong", A, none(), [](Problem &p) { p.out.t.ne[3] = 1; }, kInvalid,
         {"out.ne[3]", "state.ne[3]|q.ne[3]|n_seq", "1", "2"}},

        // Strides and alignment.
        {"q_f32_nb0_8", A, none(), [](Problem &p) { p.q.t.nb[0] = 8; }, kInvalid, {"q.nb[0]", "8", "4"}},
        {"k_q8_0_nb0_32", A, dims(Dims{.k_type = FST_TYPE_Q8_0}), [](Problem &p) { p.k.t.nb[0] = 32; }, kInvalid,
         {"k.nb[0]", "32", "34"}},
        {"v_q4_0_nb0_16", A, dims(Dims{.v_type = FST_TYPE_Q4_0}), [](Problem &p) { p.v.t.nb[0] = 16; }, kInvalid,
         {"v.nb[0]", "16", "18"}},
        {"k_q8_0_d48", A, d48, [](Problem &p) { set_type(p.k.t, FST_TYPE_Q8_0); }, kInvalid, {"k.ne[0]", "48", "32"}},
        {"k_q4_0_d48", A, d48, [](Problem &p) { set_type(p.k.t, FST_TYPE_Q4_0); }, kInvalid, {"k.ne[0]", "48", "32"}},
        {"v_q8_0_dv48", A, dv48, [](Problem &p) { set_type(p.v.t, FST_TYPE_Q8_0); }, kInvalid, {"v.ne[0]", "48", "32"}},
        {"v_q4_0_dv48", A, dv48, [](Problem &p) { set_type(p.v.t, FST_TYPE_Q4_0); }, kInvalid, {"v.ne[0]", "48", "32"}},
        {"q_f32_data_odd_address", A, none(), [](Problem &p) { p.q.t.data = bytes(p.q.t.data) + 1; }, kInvalid,
         {"q.data", "=align", "4"}},
        {"k_f16_data_odd_address", A, none(), [](Problem &p) { p.k.t.data = bytes(p.k.t.data) + 1; }, kInvalid,
         {"k.data", "=align", "2"}},
        {"q_f32_row_stride_misaligned", A, none(), [](Problem &p) { p.q = Buffer(FST_TYPE_F32, {64, 3, 4, 2}, {0, 2, 0, 0}); },
         kInvalid, {"q.nb[1]", "258", "4"}},
        {"k_f16_head_stride_odd", A, none(), [](Problem &p) { p.k = Buffer(FST_TYPE_F16, {64, 10, 2, 2}, {0, 0, 1, 0}); },
         kInvalid, {"k.nb[2]", "1281", "2"}},
        {"k_rows_overlap", A, none(), [](Problem &p) { p.k.t.nb[1] = 64; }, kInvalid, {"k.nb[1]", "64", "128"}},
        {"k_heads_alias_rows", A, none(), [](Problem &p) { p.k.t.nb[2] = p.k.t.nb[1]; }, kInvalid,
         {"k.nb[1]|k.nb[2]", "128", "=overlap"}},
        {"out_rows_overlap", A, none(), [](Problem &p) { p.out.t.nb[1] = 128; }, kInvalid, {"out.nb[1]", "128", "256"}},
        {"state_rows_overlap", A, none(), [](Problem &p) { p.state.t.nb[1] = 4; }, kInvalid, {"state.nb[1]", "4", "8"}},

        // Extents out of range.
        {"mask_ne3_negative", A, none(), [](Problem &p) { p.mask.t.ne[3] = -1; }, kInvalid, {"mask.ne[3]", "-1", "1"}},
        {"n_kv_negative", A, no_mask, [](Problem &p) { p.k.t.ne[1] = p.v.t.ne[1] = -1; }, kInvalid,
         {"k.ne[1]|v.ne[1]", "-1", "0"}},
        {"n_head_zero", A, none(),
         [](Problem &p) { p.q.t.ne[2] = p.state.t.ne[1] = p.out.t.ne[1] = p.sinks.t.ne[0] = 0; }, kInvalid,
         {"q.ne[2]", "0", "1"}},
        {"d_zero", A, none(), [](Problem &p) { p.q.t.ne[0] = p.k.t.ne[0] = 0; }, kInvalid, {"q.ne[0]|k.ne[0]", "0", "1"}},
        {"mask_rows_2pow62_overflow", A, none(), [](Problem &p) { p.mask.t.ne[1] = k2pow62; }, kInvalid,
         {"mask.ne[1]", "4611686018427387904", "=overflow|=fits"}},
        {"n_kv_2pow62_overflow", A, no_mask, [](Problem &p) { p.k.t.ne[1] = p.v.t.ne[1] = k2pow62; }, kInvalid,
         {"k.ne[1]|v.ne[1]", "4611686018427387904", "=overflow|=fits"}},
        {"q_nb3_huge_overflow", A, none(), [](Problem &p) { p.q.t.nb[3] = kHugeStride; }, kInvalid,
         {"q.nb[3]|q.ne[3]", "9223372036854775744", "=overflow|=fits|=2^63"}},
        {"k_nb3_size_max_half_4_seqs", A, four_seqs,
         [](Problem &p) { p.k.t.nb[3] = std::numeric_limits<size_t>::max() / 2; }, kInvalid, // odd, and far too big
         {"k.nb[3]|k.ne[3]", "9223372036854775807", "=multiple|=overflow|=fits"}},
        {"k_nb3_huge_4_seqs_overflow", A, four_seqs, [](Problem &p) { p.k.t.nb[3] = kHugeStride; }, kInvalid,
         {"k.nb[3]|k.ne[3]", "9223372036854775744", "=overflow|=fits"}},
        {"state_nb3_huge_4_seqs_overflow", A, four_seqs, [](Problem &p) { p.state.t.nb[3] = kHugeStride; },
         kInvalid, {"state.nb[3]|state.ne[3]", "9223372036854775744", "=overflow|=fits"}},

        // NULL data with elements to read or write.
        {"q_data_null", A, none(), [](Problem &p) { p.q.t.data = nullptr; }, kInvalid, {"q.data", "null"}},
        {"k_data_null", A, none(), [](Problem &p) { p.k.t.data = nullptr; }, kInvalid, {"k.data", "null"}},
        {"v_data_null", A, none(), [](Problem &p) { p.v.t.data = nullptr; }, kInvalid, {"v.data", "null"}},
        {"mask_data_null", A, none(), [](Problem &p) { p.mask.t.data = nullptr; }, kInvalid, {"mask.data", "null"}},
        {"sinks_data_null", A, none(), [](Problem &p) { p.sinks.t.data = nullptr; }, kInvalid, {"sinks.data", "null"}},
        {"state_data_null", A, none(), [](Problem &p) { p.state.t.data = nullptr; }, kInvalid, {"state.data", "null"}},
        {"out_data_null", A, none(), [](Problem &p) { p.out.t.data = nullptr; }, kInvalid, {"out.data", "null"}},
        {"q_pos_data_null", A, with_positions, [](Problem &p) { p.q_pos.t.data = nullptr; }, kInvalid, {"q_pos.data", "null"}},

        // Outputs that overlap inputs or each other (inputs are pointed into out's padded storage).
        {"out_overlaps_q", A, none(), [](Problem &p) { p.q.t.data = p.out.t.data; }, kInvalid, {"=overlap", "out", "q"}},
        {"out_overlaps_k", A, none(), [](Problem &p) { p.k.t.data = bytes(p.out.t.data) + 64; }, kInvalid, {"=overlap", "out", "k"}},
        {"out_overlaps_v", A, none(), [](Problem &p) { p.v.t.data = p.out.t.data; }, kInvalid, {"=overlap", "out", "v"}},
        {"out_overlaps_mask", A, none(), [](Problem &p) { p.mask.t.data = bytes(p.out.t.data) + 256; }, kInvalid,
         {"=overlap", "out", "mask"}},
        {"state_overlaps_out", A, none(), [](Problem &p) { p.state.t.data = bytes(p.out.t.data) + 400; }, kInvalid,
         {"=overlap", "state", "out"}},
        {"state_overlaps_q", A, none(), [](Problem &p) { p.state.t.data = bytes(p.q.t.data) + 64; }, kInvalid,
         {"=overlap", "state", "q"}},
        {"state_overlaps_sinks", A, none(), [](Problem &p) { p.sinks.t.data = p.state.t.data; }, kInvalid,
         {"=overlap", "state", "sinks"}},
        {"state_overlaps_kv_pos", A, with_positions, [](Problem &p) { p.kv_pos.t.data = p.state.t.data; }, kInvalid,
         {"=overlap", "state", "kv_pos"}},

        // Parameters.
        {"params_scale_nan", A, none(), [](Problem &p) { p.params.scale = kNaN; }, kInvalid, {"params.scale", "nan", "=finite"}},
        {"params_scale_inf", A, none(), [](Problem &p) { p.params.scale = kInf; }, kInvalid, {"params.scale", "inf", "=finite"}},
        {"params_softcap_negative", A, none(), [](Problem &p) { p.params.softcap = -1.0f; }, kInvalid,
         {"params.softcap", "-1", "0"}},
        {"params_softcap_inf", A, none(), [](Problem &p) { p.params.softcap = kInf; }, kInvalid,
         {"params.softcap", "inf", "=finite"}},
        {"params_softcap_nan", A, none(), [](Problem &p) { p.params.softcap = kNaN; }, kInvalid,
         {"params.softcap", "nan", "=finite"}},
        {"params_max_bias_negative", A, none(), [](Problem &p) { p.params.max_bias = -2.0f; }, kInvalid,
         {"params.max_bias", "-2", "0"}},
        {"params_max_bias_nan", A, none(), [](Problem &p) { p.params.max_bias = kNaN; }, kInvalid,
         {"params.max_bias", "nan", "=finite"}},
        {"params_window_zero", A, sliding, [](Problem &p) { p.params.window = 0; }, kInvalid, {"params.window", "0", "1"}},
        {"params_window_negative", A, sliding, [](Problem &p) { p.params.window = -3; }, kInvalid,
         {"params.window", "-3", "1"}},
        {"params_virtual_mask_7", A, none(), [](Problem &p) { set_raw(p.params.virtual_mask, 7); }, kInvalid,
         {"params.virtual_mask", "7", "=sliding|2"}},
        {"params_n_threads_negative", A, none(), [](Problem &p) { p.params.n_threads = -2; }, kInvalid,
         {"params.n_threads", "-2", "0"}},
        {"params_isa_9", A, none(), [](Problem &p) { set_raw(p.params.isa, 9); }, kInvalid, {"params.isa", "9", "=avx512|3"}},
        {"params_precision_5", A, none(), [](Problem &p) { set_raw(p.params.precision, 5); }, kInvalid,
         {"params.precision", "5", "=exact|0"}},
        {"q_pos_ne0_not_n_q", A, with_positions, [](Problem &p) { p.q_pos.t.ne[0] = 2; }, kInvalid, {"q_pos.ne[0]", "2", "3"}},
        {"q_pos_columns_not_dividing_n_seq", A, with_positions, [](Problem &p) { p.q_pos = positions(3, 3, 7); }, kInvalid,
         {"q_pos.ne[1]", "3", "2"}},
        {"q_pos_not_2d", A, with_positions, [](Problem &p) { p.q_pos.t.ne[2] = 2; }, kInvalid, {"q_pos.ne[2]", "2", "1"}},
        {"kv_pos_ne0_not_n_kv", A, with_positions, [](Problem &p) { p.kv_pos.t.ne[0] = 9; }, kInvalid,
         {"kv_pos.ne[0]", "9", "10"}},
        {"kv_pos_nb0_8", A, with_positions, [](Problem &p) { p.kv_pos.t.nb[0] = 8; }, kInvalid, {"kv_pos.nb[0]", "8", "4"}},

        // Required pointers passed as NULL.
        {"null_q", A, none(), [](Problem &p) { p.null_args = {"q"}; }, kInvalid, {"q", "null"}},
        {"null_k", A, none(), [](Problem &p) { p.null_args = {"k"}; }, kInvalid, {"k", "null"}},
        {"null_v", A, none(), [](Problem &p) { p.null_args = {"v"}; }, kInvalid, {"v", "null"}},
        {"null_state", A, none(), [](Problem &p) { p.null_args = {"state"}; }, kInvalid, {"state", "null"}},
        {"null_out", A, none(), [](Problem &p) { p.null_args = {"out"}; }, kInvalid, {"out", "null"}},
        {"null_params", A, none(), [](Problem &p) { p.null_args = {"params"}; }, kInvalid, {"params", "null"}},
    };
}

// The entry points added beyond SPEC section 6: a call in parts (ith of nth) and several segments in one call.
std::vector<Case> part_and_segment_cases() {
    const Entry P = Entry::attn_part, G = Entry::segments, GP = Entry::segments_part;
    using Views = fst_tensor (&)[2][3];
    return {
        {"ith_equals_nth", P, none(), [](Problem &p) { p.part_ith = 2; }, kInvalid, {"ith", "2", "=[0, 2)|nth"}},
        {"ith_negative", P, none(), [](Problem &p) { p.part_ith = -1; }, kInvalid, {"ith", "-1", "=[0|>= 0"}},
        {"nth_zero", P, none(), [](Problem &p) { p.part_ith = p.part_nth = 0; }, kInvalid, {"nth", "0", "1"}},
        // Every part validates the whole call: a broken tensor fails part 0 too, before it writes its rows.
        {"k_type_i32", P, dims(Dims{.k_type = FST_TYPE_F32}), [](Problem &p) { set_type(p.k.t, FST_TYPE_I32); },
         kUnsupported, {"k.type", "i32|26", "f16"}},
        {"out_overlaps_q", P, none(), [](Problem &p) { p.q.t.data = p.out.t.data; }, kInvalid, {"=overlap", "out", "q"}},
        {"ith_equals_nth", GP, none(), [](Problem &p) { p.part_ith = 3; p.part_nth = 3; }, kInvalid, {"ith", "3"}},
        {"n_segments_negative", G, none(), [](Problem &p) { p.n_segments = -1; }, kInvalid, {"=segments", "-1", "0"}},
        {"null_segments", G, none(), [](Problem &p) { p.null_args = {"segments"}; }, kInvalid, {"=segments", "null"}},
        {"second_k_d_mismatch", G, none(),
         [](Problem &p) { p.edit_segments = [](Problem &pb, Views s) { s[1][0] = fst_test::slice(pb.spare.t, 1, 4, 6); }; },
         kInvalid, {"segments[1].k.ne[0]", "96", "64"}},
        {"second_mask_narrower_than_segment", G, none(),
         [](Problem &p) { p.edit_segments = [](Problem &, Views s) { s[1][2].ne[0] = 5; }; }, kInvalid,
         {"segments[1].mask.ne[0]", "5", "6"}},
        {"second_v_type_i32", G, none(),
         [](Problem &p) { p.edit_segments = [](Problem &, Views s) { set_type(s[1][1], FST_TYPE_I32); }; }, kUnsupported,
         {"segments[1].v.type", "i32|26", "f32"}},
        {"first_k_data_null", G, none(),
         [](Problem &p) { p.edit_segments = [](Problem &, Views s) { s[0][0].data = nullptr; }; }, kInvalid,
         {"segments[0].k.data", "null"}},
        {"out_overlaps_second_v", G, none(),
         [](Problem &p) { p.edit_segments = [](Problem &pb, Views s) { s[1][1].data = pb.out.t.data; }; }, kInvalid,
         {"=overlap", "out", "=segments[1].v|v"}},
    };
}

std::vector<Case> state_cases() {
    const Edit four_seqs = dims(Dims{.n_seq = 4, .n_seq_kv = 4});
    const Entry I = Entry::init, M = Entry::merge, S = Entry::add_sinks;
    return {
        // fst_state_init
        {"null_state", I, none(), [](Problem &p) { p.null_args = {"state"}; }, kInvalid, {"state", "null"}},
        {"null_out", I, none(), [](Problem &p) { p.null_args = {"out"}; }, kInvalid, {"out", "null"}},
        {"state_type_f16", I, none(), [](Problem &p) { set_type(p.state.t, FST_TYPE_F16); }, kUnsupported, {"state.type", "f16", "f32"}},
        {"out_type_99", I, none(), [](Problem &p) { set_type(p.out.t, 99); }, kUnsupported, {"out.type", "99", "f32"}},
        {"state_ne0_not_2", I, none(), [](Problem &p) { p.state.t.ne[0] = 3; }, kInvalid, {"state.ne[0]", "3", "2"}},
        {"state_out_disagree_on_n_head", I, none(), [](Problem &p) { p.state.t.ne[1] = 3; }, kInvalid,
         {"state.ne[1]", "out.ne[1]", "3", "4"}},
        {"state_out_disagree_on_n_q", I, none(), [](Problem &p) { p.out.t.ne[2] = 2; }, kInvalid,
         {"state.ne[2]", "out.ne[2]", "2", "3"}},
        {"state_out_disagree_on_n_seq", I, none(), [](Problem &p) { p.out.t.ne[3] = 1; }, kInvalid,
         {"state.ne[3]", "out.ne[3]", "1", "2"}},
        {"state_and_out_n_q_negative", I, none(), [](Problem &p) { p.state.t.ne[2] = p.out.t.ne[2] = -1; }, kInvalid,
         {"state.ne[2]|out.ne[2]", "-1", "1|0"}},
        {"state_data_null", I, none(), [](Problem &p) { p.state.t.data = nullptr; }, kInvalid, {"state.data", "null"}},
        {"out_data_null", I, none(), [](Problem &p) { p.out.t.data = nullptr; }, kInvalid, {"out.data", "null"}},
        {"state_overlaps_out", I, none(), [](Problem &p) { p.state.t.data = bytes(p.out.t.data) + 400; }, kInvalid,
         {"=overlap", "state", "out"}},
        {"out_rows_overlap", I, none(), [](Problem &p) { p.out.t.nb[1] = 128; }, kInvalid, {"out.nb[1]", "128", "256"}},
        {"out_nb0_8", I, none(), [](Problem &p) { p.out.t.nb[0] = 8; }, kInvalid, {"out.nb[0]", "8", "4"}},
        {"state_data_misaligned", I, none(), [](Problem &p) { p.state.t.data = bytes(p.state.t.data) + 2; }, kInvalid,
         {"state.data", "=align", "4"}},
        {"state_nb3_huge_overflow", I, four_seqs, [](Problem &p) { p.state.t.nb[3] = kHugeStride; }, kInvalid,
         {"state.nb[3]|state.ne[3]", "9223372036854775744", "=overflow|=fits"}},

        // fst_state_merge
        {"other_pair_n_head_differs", M, none(), [](Problem &p) { p.other_state.t.ne[1] = p.other_out.t.ne[1] = 3; },
         kInvalid, {"other_state.ne[1]|other_out.ne[1]", "state.ne[1]|out.ne[1]", "3", "4"}},
        {"other_pair_n_seq_differs", M, none(), [](Problem &p) { p.other_state.t.ne[3] = p.other_out.t.ne[3] = 1; },
         kInvalid, {"other_state.ne[3]|other_out.ne[3]", "state.ne[3]|out.ne[3]", "1", "2"}},
        {"other_out_dv_differs", M, none(), [](Problem &p) { p.other_out.t.ne[0] = 32; }, kInvalid,
         {"other_out.ne[0]", "out.ne[0]", "32", "64"}},
        {"other_pair_disagrees_inside", M, none(), [](Problem &p) { p.other_out.t.ne[2] = 2; }, kInvalid,
         {"other_out.ne[2]", "other_state.ne[2]", "2", "3"}},
        {"first_pair_disagrees_inside", M, none(), [](Problem &p) { p.out.t.ne[2] = 2; }, kInvalid,
         {"out.ne[2]", "state.ne[2]", "2", "3"}},
        {"other_state_type_f16", M, none(), [](Problem &p) { set_type(p.other_state.t, FST_TYPE_F16); }, kUnsupported,
         {"other_state.type", "f16", "f32"}},
        {"other_out_type_bf16", M, none(), [](Problem &p) { set_type(p.other_out.t, FST_TYPE_BF16); }, kUnsupported,
         {"other_out.type", "bf16", "f32"}},
        {"other_state_nb0_8", M, none(), [](Problem &p) { p.other_state.t.nb[0] = 8; }, kInvalid,
         {"other_state.nb[0]", "8", "4"}},
        {"other_state_overlaps_state", M, none(), [](Problem &p) { p.other_state.t.data = p.state.t.data; }, kInvalid,
         {"=overlap", "other_state", "state"}},
        {"other_out_overlaps_out", M, none(), [](Problem &p) { p.other_out.t.data = bytes(p.out.t.data) + 64; }, kInvalid,
         {"=overlap", "other_out", "out"}},
        {"other_state_overlaps_out", M, none(), [](Problem &p) { p.other_state.t.data = bytes(p.out.t.data) + 400; },
         kInvalid, {"=overlap", "other_state", "out"}},
        {"state_overlaps_out", M, none(), [](Problem &p) { p.state.t.data = bytes(p.out.t.data) + 400; }, kInvalid,
         {"=overlap", "state", "out"}},
        {"other_state_data_null", M, none(), [](Problem &p) { p.other_state.t.data = nullptr; }, kInvalid,
         {"other_state.data", "null"}},
        {"null_state", M, none(), [](Problem &p) { p.null_args = {"state"}; }, kInvalid, {"state", "null"}},
        {"null_out", M, none(), [](Problem &p) { p.null_args = {"out"}; }, kInvalid, {"out", "null"}},
        {"null_other_state", M, none(), [](Problem &p) { p.null_args = {"other_state"}; }, kInvalid, {"other_state", "null"}},
        {"null_other_out", M, none(), [](Problem &p) { p.null_args = {"other_out"}; }, kInvalid, {"other_out", "null"}},

        // fst_state_add_sinks
        {"null_sinks", S, none(), [](Problem &p) { p.null_args = {"sinks"}; }, kInvalid, {"sinks", "null"}},
        {"null_state", S, none(), [](Problem &p) { p.null_args = {"state"}; }, kInvalid, {"state", "null"}},
        {"null_out", S, none(), [](Problem &p) { p.null_args = {"out"}; }, kInvalid, {"out", "null"}},
        {"sinks_ne0_not_n_head", S, none(), [](Problem &p) { p.sinks.t.ne[0] = 3; }, kInvalid,
         {"sinks.ne[0]", "state.ne[1]|n_head", "3", "4"}},
        {"sinks_not_1d", S, none(), [](Problem &p) { p.sinks.t.ne[2] = 2; }, kInvalid, {"sinks.ne[2]", "2", "1"}},
        {"sinks_type_f16", S, none(), [](Problem &p) { set_type(p.sinks.t, FST_TYPE_F16); }, kUnsupported,
         {"sinks.type", "f16", "f32"}},
        {"sinks_data_null", S, none(), [](Problem &p) { p.sinks.t.data = nullptr; }, kInvalid, {"sinks.data", "null"}},
        {"sinks_data_misaligned", S, none(), [](Problem &p) { p.sinks.t.data = bytes(p.sinks.t.data) + 1; }, kInvalid,
         {"sinks.data", "=align", "4"}},
        {"sinks_overlaps_state", S, none(), [](Problem &p) { p.sinks.t.data = p.state.t.data; }, kInvalid,
         {"=overlap", "state", "sinks"}},
        {"sinks_overlaps_out", S, none(), [](Problem &p) { p.sinks.t.data = bytes(p.out.t.data) + 128; }, kInvalid,
         {"=overlap", "out", "sinks"}},
        {"state_out_disagree_on_n_q", S, none(), [](Problem &p) { p.state.t.ne[2] = 2; }, kInvalid,
         {"state.ne[2]", "out.ne[2]", "2", "3"}},
    };
}

std::vector<Case> lse_cases() {
    const Edit four_seqs = dims(Dims{.n_seq = 4, .n_seq_kv = 4});
    const Entry X = Entry::export_lse, I = Entry::import_lse;
    std::vector<Case> cases;
    for (Entry e : {X, I}) {
        const std::vector<Case> both = {
            {"base_10", e, none(), [](Problem &p) { p.base = 10.0f; }, kInvalid, {"base", "10", "2"}},
            {"base_0", e, none(), [](Problem &p) { p.base = 0.0f; }, kInvalid, {"base", "0", "2"}},
            {"base_nan", e, none(), [](Problem &p) { p.base = kNaN; }, kInvalid, {"base", "nan", "2"}},
            {"base_just_outside_tolerance_of_e", e, none(), [](Problem &p) { p.base = 2.7183f; }, kInvalid,
             {"base", "=2.7183", "2"}},
            {"lse_ne0_not_n_head", e, none(), [](Problem &p) { p.lse.t.ne[0] = 3; }, kInvalid,
             {"lse.ne[0]", "state.ne[1]|n_head", "3", "4"}},
            {"lse_ne1_not_n_q", e, none(), [](Problem &p) { p.lse.t.ne[1] = 2; }, kInvalid,
             {"lse.ne[1]", "state.ne[2]|n_q", "2", "3"}},
            {"lse_ne2_not_n_seq", e, none(), [](Problem &p) { p.lse.t.ne[2] = 1; }, kInvalid,
             {"lse.ne[2]", "state.ne[3]|n_seq", "1", "2"}},
            {"lse_ne3_not_1", e, none(), [](Problem &p) { p.lse = Buffer(FST_TYPE_F32, {4, 3, 2, 2}); }, kInvalid,
             {"lse.ne[3]", "2", "1"}},
            {"lse_type_f16", e, none(), [](Problem &p) { set_type(p.lse.t, FST_TYPE_F16); }, kUnsupported,
             {"lse.type", "f16", "f32"}},
            {"lse_rows_overlap", e, none(), [](Problem &p) { p.lse.t.nb[1] = 8; }, kInvalid, {"lse.nb[1]", "8", "16"}},
            {"lse_data_null", e, none(), [](Problem &p) { p.lse.t.data = nullptr; }, kInvalid, {"lse.data", "null"}},
            {"lse_data_misaligned", e, none(), [](Problem &p) { p.lse.t.data = bytes(p.lse.t.data) + 1; }, kInvalid,
             {"lse.data", "=align", "4"}},
            {"lse_overlaps_state", e, none(), [](Problem &p) { p.lse.t.data = p.state.t.data; }, kInvalid,
             {"=overlap", "lse", "state"}},
            {"state_type_f16", e, none(), [](Problem &p) { set_type(p.state.t, FST_TYPE_F16); }, kUnsupported,
             {"state.type", "f16", "f32"}},
            {"state_ne0_not_2", e, none(), [](Problem &p) { p.state.t.ne[0] = 1; }, kInvalid, {"state.ne[0]", "1", "2"}},
            {"state_nb3_huge_overflow", e, four_seqs, [](Problem &p) { p.state.t.nb[3] = kHugeStride; },
             kInvalid, {"state.nb[3]|state.ne[3]", "9223372036854775744", "=overflow|=fits"}},
            {"null_lse", e, none(), [](Problem &p) { p.null_args = {"lse"}; }, kInvalid, {"lse", "null"}},
            {"null_state", e, none(), [](Problem &p) { p.null_args = {"state"}; }, kInvalid, {"state", "null"}},
        };
        cases.insert(cases.end(), both.begin(), both.end());
    }
    const std::vector<Case> import_only = {
        {"lse_overlaps_out", I, none(), [](Problem &p) { p.lse.t.data = bytes(p.out.t.data) + 64; }, kInvalid,
         {"=overlap", "lse", "out"}},
        {"state_overlaps_out", I, none(), [](Problem &p) { p.state.t.data = bytes(p.out.t.data) + 400; }, kInvalid,
         {"=overlap", "state", "out"}},
        {"state_out_disagree_on_n_head", I, none(), [](Problem &p) { p.out.t.ne[1] = 3; }, kInvalid,
         {"out.ne[1]", "3", "4"}},
        {"out_data_null", I, none(), [](Problem &p) { p.out.t.data = nullptr; }, kInvalid, {"out.data", "null"}},
        {"null_out", I, none(), [](Problem &p) { p.null_args = {"out"}; }, kInvalid, {"out", "null"}},
    };
    cases.insert(cases.end(), import_only.begin(), import_only.end());
    return cases;
}

std::vector<Case> row_cases() {
    std::vector<Case> cases;
    for (Entry e : {Entry::quantize, Entry::dequantize}) {
        const std::vector<Case> both = {
            {"q8_0_n_48", e, none(), [](Problem &p) { p.row_n = 48; }, kInvalid, {"n", "48", "32"}},
            {"q4_0_n_40", e, [](Problem &p) { p.row_type = FST_TYPE_Q4_0; }, [](Problem &p) { p.row_n = 40; }, kInvalid,
             {"n", "40", "32"}},
            {"n_negative", e, none(), [](Problem &p) { p.row_n = -32; }, kInvalid, {"n", "-32", "0"}},
            {"null_src", e, none(), [](Problem &p) { p.null_args = {"src"}; }, kInvalid, {"src", "null"}},
            {"null_dst", e, none(), [](Problem &p) { p.null_args = {"dst"}; }, kInvalid, {"dst", "null"}},
            {"type_99", e, none(), [](Problem &p) { p.row_type = 99; }, kUnsupported, {"type", "99", "q8_0"}},
            {"type_i32", e, none(), [](Problem &p) { p.row_type = FST_TYPE_I32; }, kUnsupported, {"type", "i32|26", "q8_0"}},
        };
        cases.insert(cases.end(), both.begin(), both.end());
    }
    return cases;
}

// ---- The test ----

void PrintTo(const Case &c, std::ostream *os) { *os << function_name(c.entry) << ": " << c.name; }

class BadInput : public testing::TestWithParam<Case> {};

TEST_P(BadInput, IsRejectedAndWritesNothing) {
    const Case &c = GetParam();

    // Positive control: the problem before the break is valid, so the failure below is caused by the break.
    {
        Problem valid;
        if (c.valid) c.valid(valid);
        ASSERT_EQ(valid.setup_status, FST_OK) << fst_last_error();
        const fst_status s = call(c.entry, valid);
        ASSERT_EQ(s, FST_OK) << "the unbroken problem must be accepted: " << fst_last_error();
    }

    Problem p;
    if (c.valid) c.valid(p);
    c.broken(p);
    for (Buffer *written : {&p.state, &p.out, &p.lse, &p.floats, &p.blocks}) written->fill_bytes(kCanary);
    const Snapshot before = snapshot(p);

    const fst_status s = call(c.entry, p);
    EXPECT_EQ(s, c.status) << "got " << fst_status_name(s) << ", expected " << fst_status_name(c.status);
    const std::string message = fst_last_error();
    EXPECT_TRUE(message_has(message, function_name(c.entry))) << "message: " << message;
    for (const std::string &needle : c.needles)
        EXPECT_TRUE(message_has(message, needle)) << "missing \"" << needle << "\" in message: " << message;

    const Snapshot after = snapshot(p);
    const auto names = p.buffers();
    for (size_t i = 0; i < names.size(); ++i) {
        const auto &a = before.storages[i], &b = after.storages[i];
        const auto diff = std::mismatch(a.begin(), a.end(), b.begin());
        EXPECT_TRUE(diff.first == a.end()) << names[i].first << " changed at byte " << (diff.first - a.begin());
    }
}

// "<function without fst_>_<case>", e.g. state_merge_null_out.
std::string case_name(const testing::TestParamInfo<Case> &info) {
    std::string name = std::string(function_name(info.param.entry) + 4) + "_" + info.param.name;
    for (char &ch : name)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    return name;
}

INSTANTIATE_TEST_SUITE_P(Attention, BadInput, testing::ValuesIn(attention_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(PartsAndSegments, BadInput, testing::ValuesIn(part_and_segment_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(State, BadInput, testing::ValuesIn(state_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Lse, BadInput, testing::ValuesIn(lse_cases()), case_name);
INSTANTIATE_TEST_SUITE_P(Row, BadInput, testing::ValuesIn(row_cases()), case_name);

} // namespace
