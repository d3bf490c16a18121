// SPEC section 5, bad input. Every public entry point starts from a valid problem (checked to succeed first), one
// thing is broken, and the call must (a) return the expected status, (b) leave a message that names the function,
// the tensor field with its dimension, the actual and the expected value, and (c) write no byte anywhere: out, state
// and lse are filled with a canary and every buffer, padding included, is compared before and after.
// Also the positive controls: the valid problem computes the reference result, permuted views are accepted, and an
// empty KV segment is accepted, leaves the state untouched and still merges sinks.
#include "reference/reference.h"
#include "support/buffer.h"

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

namespace {

const unsigned char kCanary = 0xA5;
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();
const int64_t k2pow62 = int64_t(1) << 62;                 // printed 4611686018427387904
// About SIZE_MAX / 2, rounded down to a multiple of 64 so that only the size is wrong, not the alignment.
const size_t kHugeStride = (std::numeric_limits<size_t>::max() / 2) & ~size_t(63); // printed 9223372036854775744

// ---- The valid problem ----

struct Dims {
    int64_t D = 64, DV = 64, n_q = 3, n_kv = 10, n_head = 4, n_head_kv = 2, n_seq = 2, n_seq_kv = 2;
    int64_t mask_rows = 4, m2 = 2, m3 = 1; // mask rows padded past n_q, as ggml pads them
    fst_type q_type = FST_TYPE_F32, k_type = FST_TYPE_F16, v_type = FST_TYPE_F32, mask_type = FST_TYPE_F16;
};

// An I32 [n, m] position tensor: column c holds start + c + i (sequences at different positions).
Buffer positions(int64_t n, int64_t m, int64_t start) {
    Buffer b(FST_TYPE_F32, {n, m, 1, 1});
    b.t.type = FST_TYPE_I32; // same size and alignment as F32
    for (int64_t c = 0; c < m; ++c)
        for (int64_t i = 0; i < n; ++i) {
            const int32_t pos = int32_t(start + c + i);
            std::memcpy(b.row(c) + i * 4, &pos, 4);
        }
    return b;
}

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

    explicit Problem(const Dims &d = {}) : dims(d) {
        std::mt19937 rng(1234);
        q = Buffer(d.q_type, {d.D, d.n_q, d.n_head, d.n_seq});
        k = Buffer(d.k_type, {d.D, d.n_kv, d.n_head_kv, d.n_seq_kv});
        v = Buffer(d.v_type, {d.DV, d.n_kv, d.n_head_kv, d.n_seq_kv});
        q.fill_normal(rng);
        k.fill_normal(rng);
        v.fill_normal(rng);
        mask = Buffer(d.mask_type, {d.n_kv, d.mask_rows, d.m2, d.m3}); // zeros: every key visible
        sinks = Buffer(FST_TYPE_F32, {d.n_head, 1, 1, 1});
        for (int64_t h = 0; h < d.n_head; ++h) *sinks.f32(h) = 0.5f * float(h) - 0.7f;
        q_pos = positions(d.n_q, 1, d.n_kv - d.n_q);
        kv_pos = positions(d.n_kv, d.n_seq_kv, 0);
        // state and out with padding in every dimension; out with room for the overlap cases below.
        state = Buffer(FST_TYPE_F32, {2, d.n_head, d.n_q, d.n_seq}, {0, 8, 16, 0});
        out = Buffer(FST_TYPE_F32, {d.DV, d.n_head, d.n_q, d.n_seq}, {0, 16, 32, 4096});
        other_state = state;
        other_out = out;
        lse = Buffer(FST_TYPE_F32, {d.n_head, d.n_q, d.n_seq, 1}, {0, 4, 8, 0});
        for (int64_t s = 0; s < d.n_seq; ++s)
            for (int64_t r = 0; r < d.n_q; ++r)
                for (int64_t h = 0; h < d.n_head; ++h) *lse.f32(h, r, s) = 0.25f * float(h + r - s);
        floats = Buffer(FST_TYPE_F32, {256, 1, 1, 1});
        floats.fill_normal(rng);
        blocks = Buffer(FST_TYPE_F32, {256, 1, 1, 1}); // used as 1 KiB of raw bytes
        spare = Buffer(FST_TYPE_F16, {96, d.n_kv, d.n_head_kv, d.n_seq_kv});
        params = fst_attn_default_params();
        params.n_threads = 1;
        params.scale = 0.125f;
        fst_status a = fst_state_init(&state.t, &out.t);
        fst_status b = fst_state_init(&other_state.t, &other_out.t);
        fst_status c = fst_quantize_row(FST_TYPE_Q8_0, static_cast<const float *>(floats.t.data), blocks.t.data, row_n);
        setup_status = a != FST_OK ? a : b != FST_OK ? b : c;
    }

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

const char *function_name(Entry e) {
    switch (e) {
    case Entry::attn: return "fst_attn_with_state";
    case Entry::attn_part: return "fst_attn_with_state_part";
    case Entry::segments: return "fst_attn_segments";
    case Entry::segments_part: return "fst_attn_segments_part";
    case Entry::init: return "fst_state_init";
    case Entry::merge: return "fst_state_merge";
    case Entry::add_sinks: return "fst_state_add_sinks";
    case Entry::export_lse: return "fst_state_export_lse";
    case Entry::import_lse: return "fst_state_import_lse";
    case Entry::quantize: return "fst_quantize_row";
    case Entry::dequantize: return "fst_dequantize_row";
    }
    return "?";
}

fst_status call(Entry e, Problem &p) {
    auto arg = [&](const char *name, Buffer &b) { return p.null_args.count(name) ? nullptr : &b.t; };
    auto raw = [&](const char *name, Buffer &b) { return p.null_args.count(name) ? nullptr : b.t.data; };
    fst_attn_params params = p.params; // position pointers set here, so copies of a Problem never dangle
    if (p.with_q_pos) params.q_pos = &p.q_pos.t;
    if (p.with_kv_pos) params.kv_pos = &p.kv_pos.t;
    const fst_attn_params *params_arg = p.null_args.count("params") ? nullptr : &params;
    const fst_tensor *mask = p.with_mask ? &p.mask.t : nullptr, *sinks = p.with_sinks ? &p.sinks.t : nullptr;
    fst_tensor views[2][3]; // k, v, mask of each segment
    fst_segment segments[2];
    for (int i = 0; i < 2; ++i) {
        const int64_t j0 = i == 0 ? 0 : p.split, n = i == 0 ? p.split : p.k.t.ne[1] - p.split;
        views[i][0] = fst_test::slice(p.k.t, 1, j0, n);
        views[i][1] = fst_test::slice(p.v.t, 1, j0, n);
        views[i][2] = fst_test::slice(p.mask.t, 0, j0, n);
    }
    if (p.edit_segments) p.edit_segments(p, views);
    for (int i = 0; i < 2; ++i)
        segments[i] = fst_segment{&views[i][0], &views[i][1], p.with_mask ? &views[i][2] : nullptr,
                                  i == 0 ? 0 : p.split, nullptr};
    const fst_segment *segments_arg = p.null_args.count("segments") ? nullptr : segments;
    switch (e) {
    case Entry::attn:
        return fst_attn_with_state(params_arg, arg("q", p.q), arg("k", p.k), arg("v", p.v), mask, sinks,
                                   arg("state", p.state), arg("out", p.out));
    case Entry::attn_part:
        return fst_attn_with_state_part(params_arg, arg("q", p.q), arg("k", p.k), arg("v", p.v), mask, sinks,
                                        arg("state", p.state), arg("out", p.out), p.part_ith, p.part_nth);
    case Entry::segments:
        return fst_attn_segments(params_arg, arg("q", p.q), segments_arg, p.n_segments, sinks, arg("state", p.state),
                                 arg("out", p.out));
    case Entry::segments_part:
        return fst_attn_segments_part(params_arg, arg("q", p.q), segments_arg, p.n_segments, sinks,
                                      arg("state", p.state), arg("out", p.out), p.part_ith, p.part_nth);
    case Entry::init: return fst_state_init(arg("state", p.state), arg("out", p.out));
    case Entry::merge:
        return fst_state_merge(arg("state", p.state), arg("out", p.out), arg("other_state", p.other_state),
                               arg("other_out", p.other_out));
    case Entry::add_sinks: return fst_state_add_sinks(arg("sinks", p.sinks), arg("state", p.state), arg("out", p.out));
    case Entry::export_lse: return fst_state_export_lse(arg("state", p.state), p.base, arg("lse", p.lse));
    case Entry::import_lse:
        return fst_state_import_lse(arg("lse", p.lse), p.base, arg("state", p.state), arg("out", p.out));
    // A C caller may pass any int as the type; C++ can only say so with a cast.
    case Entry::quantize:
        return fst_quantize_row(static_cast<fst_type>(p.row_type), static_cast<const float *>(raw("src", p.floats)),
                                raw("dst", p.blocks), p.row_n);
    case Entry::dequantize:
        return fst_dequantize_row(static_cast<fst_type>(p.row_type), raw("src", p.blocks),
                                  static_cast<float *>(raw("dst", p.floats)), p.row_n);
    }
    return FST_OK;
}

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

struct Snapshot {
    std::vector<std::vector<unsigned char>> storages;
};

Snapshot snapshot(Problem &p) {
    Snapshot s;
    for (auto &[name, b] : p.buffers()) s.storages.push_back(b->storage);
    return s;
}

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

// ---- Positive controls ----

// The (M, S) of every row and the output against the double reference (SPEC section 4 bound).
void expect_matches_reference(const ref::Result &want, Buffer &state, Buffer &out) {
    EXPECT_LT(ref::rel_error(want, out.t), 1e-5);
    for (int64_t s = 0; s < want.n_seq; ++s)
        for (int64_t r = 0; r < want.n_q; ++r)
            for (int64_t h = 0; h < want.n_head; ++h) {
                const size_t i = size_t((s * want.n_q + r) * want.n_head + h);
                const double m = *state.f32(0, h, r, s), sum = *state.f32(1, h, r, s);
                EXPECT_NEAR(m, want.M[i], 1e-5 * std::max(1.0, std::fabs(want.M[i]))) << h << " " << r << " " << s;
                EXPECT_NEAR(sum, want.S[i], 1e-5 * want.S[i]) << h << " " << r << " " << s;
            }
}

TEST(ValidInput, ComputesTheReferenceResult) {
    Problem p;
    ASSERT_EQ(p.setup_status, FST_OK);
    const uint16_t minus_inf = 0xFC00;
    std::memcpy(p.mask.row(2, 1, 0) + 2 * 5, &minus_inf, 2); // one -inf entry in the mask
    ASSERT_EQ(call(Entry::attn, p), FST_OK) << fst_last_error();
    expect_matches_reference(ref::attention(p.params, p.q.t, p.k.t, p.v.t, &p.mask.t, &p.sinks.t), p.state, p.out);
}

// q stored head-major ([D, n_head, n_q, n_seq] in memory) and passed as the permuted view [D, n_q, n_head, n_seq]:
// nb[1] > nb[2] is a legal layout whose rows do not overlap.
TEST(ValidInput, AcceptsAPermutedQueryView) {
    Problem p;
    ASSERT_EQ(p.setup_status, FST_OK);
    const Dims &d = p.dims;
    Buffer stored(FST_TYPE_F32, {d.D, d.n_head, d.n_q, d.n_seq});
    std::mt19937 rng(99);
    stored.fill_normal(rng);
    p.q = stored;
    std::swap(p.q.t.ne[1], p.q.t.ne[2]);
    std::swap(p.q.t.nb[1], p.q.t.nb[2]);
    ASSERT_EQ(call(Entry::attn, p), FST_OK) << fst_last_error();
    expect_matches_reference(ref::attention(p.params, p.q.t, p.k.t, p.v.t, &p.mask.t, &p.sinks.t), p.state, p.out);
}

// The other side of the base cases: 2, e as SPEC writes it, and e rounded to float are all accepted.
TEST(ValidInput, AcceptsBase2AndE) {
    for (float base : {2.0f, 2.718281828f, float(M_E)}) {
        Problem p;
        ASSERT_EQ(p.setup_status, FST_OK);
        p.base = base;
        EXPECT_EQ(call(Entry::export_lse, p), FST_OK) << base << ": " << fst_last_error();
        EXPECT_EQ(call(Entry::import_lse, p), FST_OK) << base << ": " << fst_last_error();
    }
}

// State and out packed in one buffer, each query row's M, S and O side by side ([2 + DV] floats per row, a layout an
// engine may keep for its partial results): the byte ranges of state and out interleave but share no byte. Init,
// the attention call and the merge accept them and give the bits of separate buffers; packed so that they do share
// bytes (O starting on S), they are refused without a byte written.
struct PackedRows {
    Buffer b;
    fst_tensor state{}, out{};
    explicit PackedRows(const Dims &d, int64_t o_offset = 2) : b(FST_TYPE_F32, {2 + d.DV, d.n_head, d.n_q, d.n_seq}) {
        state = out = b.t;
        state.ne[0] = 2;
        out.ne[0] = d.DV;
        out.data = b.f32(o_offset);
    }
};

void expect_same_rows(const Dims &d, Buffer &state, Buffer &out, PackedRows &packed) {
    for (int64_t s = 0; s < d.n_seq; ++s)
        for (int64_t r = 0; r < d.n_q; ++r)
            for (int64_t h = 0; h < d.n_head; ++h) {
                EXPECT_EQ(std::memcmp(state.f32(0, h, r, s), packed.b.f32(0, h, r, s), 8), 0) << h << " " << r << " " << s;
                EXPECT_EQ(std::memcmp(out.f32(0, h, r, s), packed.b.f32(2, h, r, s), size_t(d.DV) * 4), 0)
                    << h << " " << r << " " << s;
            }
}

TEST(ValidInput, AcceptsStateAndOutPackedInOneRow) {
    Problem p;
    ASSERT_EQ(p.setup_status, FST_OK);
    const Dims &d = p.dims;
    PackedRows packed(d), other(d);
    ASSERT_EQ(fst_state_init(&packed.state, &packed.out), FST_OK) << fst_last_error();
    ASSERT_EQ(fst_state_init(&other.state, &other.out), FST_OK) << fst_last_error();
    expect_same_rows(d, p.state, p.out, packed);

    // attention into both layouts, then a second segment computed apart and merged in
    ASSERT_EQ(fst_attn_with_state(&p.params, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, nullptr, &p.state.t, &p.out.t), FST_OK);
    ASSERT_EQ(fst_attn_with_state(&p.params, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, nullptr, &packed.state, &packed.out), FST_OK)
        << fst_last_error();
    expect_same_rows(d, p.state, p.out, packed);
    fst_attn_params shifted = p.params;
    shifted.scale = 0.3f;
    ASSERT_EQ(fst_attn_with_state(&shifted, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, &p.sinks.t, &p.other_state.t, &p.other_out.t), FST_OK);
    ASSERT_EQ(fst_attn_with_state(&shifted, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, &p.sinks.t, &other.state, &other.out), FST_OK)
        << fst_last_error();
    ASSERT_EQ(fst_state_merge(&p.state.t, &p.out.t, &p.other_state.t, &p.other_out.t), FST_OK);
    ASSERT_EQ(fst_state_merge(&packed.state, &packed.out, &other.state, &other.out), FST_OK) << fst_last_error();
    expect_same_rows(d, p.state, p.out, packed);

    // O shifted onto S: every row of out shares its first float with its row's S.
    PackedRows clash(d, 1);
    std::fill(clash.b.storage.begin(), clash.b.storage.end(), kCanary);
    const std::vector<unsigned char> before = clash.b.storage;
    EXPECT_EQ(fst_state_init(&clash.state, &clash.out), FST_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(fst_last_error()).find("out overlaps state"), std::string::npos) << fst_last_error();
    EXPECT_EQ(fst_attn_with_state(&p.params, &p.q.t, &p.k.t, &p.v.t, &p.mask.t, nullptr, &clash.state, &clash.out),
              FST_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(fst_last_error()).find("overlaps"), std::string::npos) << fst_last_error();
    EXPECT_TRUE(clash.b.storage == before);
}

// The rule behind the test above, on random layouts: state and out views of one buffer with random extents, strides
// and offsets. Whenever the views share a byte (found by listing every byte of both), init must refuse them; some
// interleaved layouts must be accepted (else the rule would be unused), and an accepted init writes its values.
TEST(ValidInput, InterleavedOutputsAreAcceptedOnlyWhenNoByteIsShared) {
    std::mt19937 rng(2024);
    auto pick = [&](int lo, int hi) { return int(std::uniform_int_distribution<int>(lo, hi)(rng)); };
    std::vector<float> buf(2048);
    int accepted_interleaved = 0, refused_shared = 0;
    for (int trial = 0; trial < 4000; ++trial) {
        const int64_t n1 = pick(1, 4), n2 = pick(1, 3), dv = pick(1, 6);
        fst_tensor st = fst_tensor_contiguous(FST_TYPE_F32, 2, n1, n2, 1, nullptr);
        fst_tensor o = fst_tensor_contiguous(FST_TYPE_F32, dv, n1, n2, 1, nullptr);
        const bool same_strides = pick(0, 1) == 1; // packed rows share their strides; other layouts need not
        const size_t stride1 = size_t(4 * pick(int(std::max<int64_t>(2, dv)), int(dv + 4)));
        st.nb[1] = same_strides ? stride1 : size_t(4 * pick(2, 8));
        o.nb[1] = same_strides ? stride1 : size_t(4 * pick(int(dv), int(dv + 6)));
        st.nb[2] = st.nb[1] * size_t(n1) + (same_strides ? 0 : size_t(4 * pick(0, 3)));
        o.nb[2] = same_strides ? st.nb[2] : o.nb[1] * size_t(n1) + size_t(4 * pick(0, 3));
        st.nb[3] = st.nb[2] * size_t(n2);
        o.nb[3] = o.nb[2] * size_t(n2);
        const size_t st_off = size_t(4 * pick(0, 16)), o_off = size_t(4 * pick(0, 16));
        st.data = buf.data() + st_off / 4;
        o.data = buf.data() + o_off / 4;
        // Every byte (as a float index) of each view.
        std::vector<char> in_st(buf.size(), 0);
        bool shared = false, ranges_meet = false;
        size_t st_lo = buf.size(), st_hi = 0, o_lo = buf.size(), o_hi = 0;
        for (int64_t j = 0; j < n2; ++j)
            for (int64_t i = 0; i < n1; ++i)
                for (int64_t e = 0; e < 2; ++e) {
                    const size_t f = (st_off + size_t(i) * st.nb[1] + size_t(j) * st.nb[2]) / 4 + size_t(e);
                    in_st[f] = 1;
                    st_lo = std::min(st_lo, f), st_hi = std::max(st_hi, f + 1);
                }
        for (int64_t j = 0; j < n2; ++j)
            for (int64_t i = 0; i < n1; ++i)
                for (int64_t e = 0; e < dv; ++e) {
                    const size_t f = (o_off + size_t(i) * o.nb[1] + size_t(j) * o.nb[2]) / 4 + size_t(e);
                    shared = shared || in_st[f];
                    o_lo = std::min(o_lo, f), o_hi = std::max(o_hi, f + 1);
                }
        ranges_meet = st_lo < o_hi && o_lo < st_hi;
        std::fill(buf.begin(), buf.end(), 7.0f);
        const fst_status status = fst_state_init(&st, &o);
        if (shared) {
            EXPECT_EQ(status, FST_ERR_INVALID_ARGUMENT) << "trial " << trial;
            EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](float x) { return x == 7.0f; })) << "trial " << trial;
            ++refused_shared;
        } else if (status == FST_OK) {
            accepted_interleaved += ranges_meet;
            for (int64_t j = 0; j < n2; ++j)
                for (int64_t i = 0; i < n1; ++i) {
                    const float *srow = buf.data() + (st_off + size_t(i) * st.nb[1] + size_t(j) * st.nb[2]) / 4;
                    const float *orow = buf.data() + (o_off + size_t(i) * o.nb[1] + size_t(j) * o.nb[2]) / 4;
                    EXPECT_EQ(srow[0], -kInf) << "trial " << trial;
                    EXPECT_EQ(srow[1], 0.0f) << "trial " << trial;
                    for (int64_t e = 0; e < dv; ++e) EXPECT_EQ(orow[e], 0.0f) << "trial " << trial;
                }
        }
    }
    EXPECT_GT(accepted_interleaved, 100);
    EXPECT_GT(refused_shared, 100);
}

// An empty segment of a KV cache: no keys, NULL data, zero-width mask and kv_pos slices.
struct EmptySegment {
    fst_tensor k, v, mask, kv_pos;
    explicit EmptySegment(const Problem &p) : k(p.k.t), v(p.v.t), mask(p.mask.t), kv_pos(p.kv_pos.t) {
        k.ne[1] = v.ne[1] = mask.ne[0] = kv_pos.ne[0] = 0;
        k.data = v.data = mask.data = kv_pos.data = nullptr;
    }
};

TEST(EmptySegment, IsAcceptedAndLeavesStateAndOutputBitIdentical) {
    for (const char *variant : {"zero-width mask", "no mask", "causal with position tensors"}) {
        SCOPED_TRACE(variant);
        Problem p;
        ASSERT_EQ(p.setup_status, FST_OK);
        p.with_sinks = false;
        p.with_mask = std::string(variant) != "no mask";
        if (std::string(variant) == "causal with position tensors") p.use_positions();
        ASSERT_EQ(call(Entry::attn, p), FST_OK) << fst_last_error(); // a real first segment
        const Snapshot before = snapshot(p);
        const EmptySegment e(p);
        fst_attn_params params = p.params;
        if (p.with_q_pos) params.q_pos = &p.q_pos.t;
        if (p.with_kv_pos) params.kv_pos = &e.kv_pos;
        const fst_status s = fst_attn_with_state(&params, &p.q.t, &e.k, &e.v, p.with_mask ? &e.mask : nullptr, nullptr,
                                                 &p.state.t, &p.out.t);
        ASSERT_EQ(s, FST_OK) << fst_last_error();
        const Snapshot after = snapshot(p);
        EXPECT_TRUE(before.storages == after.storages);
    }
}

TEST(EmptySegment, StillMergesSinksOnce) {
    Problem p;
    ASSERT_EQ(p.setup_status, FST_OK);
    p.with_sinks = false;
    ASSERT_EQ(call(Entry::attn, p), FST_OK) << fst_last_error(); // the whole KV range, without sinks
    const EmptySegment e(p);
    ASSERT_EQ(fst_attn_with_state(&p.params, &p.q.t, &e.k, &e.v, &e.mask, &p.sinks.t, &p.state.t, &p.out.t), FST_OK)
        << fst_last_error();
    expect_matches_reference(ref::attention(p.params, p.q.t, p.k.t, p.v.t, &p.mask.t, &p.sinks.t), p.state, p.out);
}

} // namespace
