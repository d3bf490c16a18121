// Every case of shared/golden/cases.jsonl (what real ggml's flash_attn_ext computed) against flashstate and
// against the double reference, on the very bytes ggml read. Per case:
//   decode   our reference decodes k_raw/v_raw to exactly the floats in k.npy/v.npy (checks the oracle's decoders)
//   (a)      flashstate vs the double reference                  <= 1e-5            (SPEC section 4)
//   (b)      flashstate vs ggml's out.npy (and the second build)  <= ggml's own error + 1e-5
//   (c)      the reference vs ggml's out.npy                      <= the manifest's stated ggml error (+1%)
//   state    the (M, S) state vs the reference's M and log-sum-exp
//   (d)      three uneven KV segments carried through the state   == the unsplit call, to 4e-6
#include "reference/reference.h"
#include "support/buffer.h"
#include "support/cases.h"
#include "support/npy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

namespace {

using fst_test::max_abs;
using fst_test::rel_diff;

const std::string kGoldenDir = FLASHSTATE_GOLDEN_DIR;

fst_type type_named(const std::string &name) {
    if (name == "f32") return FST_TYPE_F32;
    if (name == "f16") return FST_TYPE_F16;
    if (name == "bf16") return FST_TYPE_BF16;
    if (name == "q8_0") return FST_TYPE_Q8_0;
    if (name == "q4_0") return FST_TYPE_Q4_0;
    throw std::runtime_error("unknown type name " + name);
}

// A contiguous view over an array's bytes. The numpy shape is the ggml ne reversed; quantized arrays are uint8
// rows of blocks, whose innermost numpy axis is the row's byte count.
fst_tensor view_of(fst_test::Npy &a, fst_type type) {
    const char *dtype = type == FST_TYPE_F32    ? "<f4"
                        : type == FST_TYPE_F16  ? "<f2"
                        : type == FST_TYPE_BF16 ? "<u2"
                                                : "|u1";
    if (a.descr != dtype) throw std::runtime_error("array dtype " + a.descr + ", expected " + dtype);
    if (a.shape.empty() || a.shape.size() > 4) throw std::runtime_error("array rank must be 1..4");
    fst_tensor t{};
    t.type = type;
    for (int i = 0; i < 4; ++i) t.ne[i] = 1;
    for (size_t i = 0; i < a.shape.size(); ++i) t.ne[i] = a.shape[a.shape.size() - 1 - i];
    const size_t row_bytes = size_t(t.ne[0]) * a.item_size;
    if (type == FST_TYPE_Q8_0 || type == FST_TYPE_Q4_0) {
        t.nb[0] = type == FST_TYPE_Q8_0 ? 34 : 18;
        if (row_bytes % t.nb[0] != 0) throw std::runtime_error("quantized row is not whole blocks");
        t.ne[0] = int64_t(row_bytes / t.nb[0]) * 32;
    } else {
        t.nb[0] = a.item_size;
    }
    t.nb[1] = row_bytes;
    t.nb[2] = t.nb[1] * size_t(t.ne[1]);
    t.nb[3] = t.nb[2] * size_t(t.ne[2]);
    t.data = a.bytes.data();
    return t;
}

bool same_extents(const fst_tensor &t, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) {
    return t.ne[0] == ne0 && t.ne[1] == ne1 && t.ne[2] == ne2 && t.ne[3] == ne3;
}

double max_abs(const ref::Result &r) {
    double m = 0;
    for (double x : r.O) m = std::max(m, std::fabs(x));
    return m;
}


// Every element of a raw K/V view, decoded by the reference, equals the float ggml dequantized it to.
void expect_decodes_to(const fst_tensor &raw, const fst_tensor &floats, const char *name) {
    int64_t mismatches = 0;
    for (int64_t i3 = 0; i3 < raw.ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < raw.ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < raw.ne[1]; ++i1)
                for (int64_t i0 = 0; i0 < raw.ne[0]; ++i0) {
                    const double decoded = ref::read(raw, i0, i1, i2, i3), stored = ref::read(floats, i0, i1, i2, i3);
                    if (decoded != stored && mismatches++ < 3)
                        ADD_FAILURE() << name << " element (" << i0 << ", " << i1 << ", " << i2 << ", " << i3
                                      << "): reference decodes " << decoded << ", ggml stored " << stored;
                }
    EXPECT_EQ(mismatches, 0) << name << ": elements the reference decodes differently from ggml";
}

// |M - M_ref| and |LSE - LSE_ref| over every row, relative to 1 + |M_ref|; inf if emptiness disagrees.
double state_error(const ref::Result &r, const fst_tensor &state) {
    double worst = 0;
    for (int64_t s = 0; s < r.n_seq; ++s)
        for (int64_t q = 0; q < r.n_q; ++q)
            for (int64_t h = 0; h < r.n_head; ++h) {
                const size_t i = size_t((s * r.n_q + q) * r.n_head + h);
                const double M = ref::read(state, 0, h, q, s), S = ref::read(state, 1, h, q, s);
                if (r.S[i] == 0 || S == 0) {
                    if (r.S[i] != S) return INFINITY;
                    continue;
                }
                const double scale = 1 + std::fabs(r.M[i]);
                const double lse = M + std::log(S), lse_ref = r.M[i] + std::log(r.S[i]);
                const double e = std::max(std::fabs(M - r.M[i]), std::fabs(lse - lse_ref)) / scale;
                if (std::isnan(e)) return INFINITY;
                worst = std::max(worst, e);
            }
    return worst;
}

struct Maxima {
    double ours_vs_ref = 0, ours_vs_ggml_excess = -INFINITY, ref_vs_ggml_ratio = 0, state = 0, split = 0;
};

void check_case(const fst_test::Json &c, Maxima &overall) {
    using fst_test::read_npy;
    const std::string name = c["name"].string();
    const std::string dir = kGoldenDir + "/" + c["dir"].string() + "/";
    const fst_test::Json &files = c["files"];
    const int64_t D = c["D"].integer(), DV = c["DV"].integer(), n_q = c["n_q"].integer(), n_kv = c["n_kv"].integer();
    const int64_t n_head = c["n_head"].integer(), n_head_kv = c["n_head_kv"].integer();
    const int64_t n_seq = c["n_seq"].integer(), n_seq_kv = c["n_seq_kv"].integer();
    const fst_type type_k = type_named(c["type_k"].string()), type_v = type_named(c["type_v"].string());
    ASSERT_EQ(c["type_q"].string(), "f32");

    // Inputs: K and V as the bytes ggml read (raw files for every type but F32).
    fst_test::Npy q_npy = read_npy(dir + files["q"].string());
    fst_test::Npy k_npy = read_npy(dir + files["k"].string()), v_npy = read_npy(dir + files["v"].string());
    fst_test::Npy k_raw_npy, v_raw_npy, mask_npy, sinks_npy;
    const fst_tensor q = view_of(q_npy, FST_TYPE_F32);
    const fst_tensor k_f32 = view_of(k_npy, FST_TYPE_F32), v_f32 = view_of(v_npy, FST_TYPE_F32);
    fst_tensor k = k_f32, v = v_f32;
    if (type_k != FST_TYPE_F32) {
        k_raw_npy = read_npy(dir + files["k_raw"].string());
        k = view_of(k_raw_npy, type_k);
    }
    if (type_v != FST_TYPE_F32) {
        v_raw_npy = read_npy(dir + files["v_raw"].string());
        v = view_of(v_raw_npy, type_v);
    }
    fst_tensor mask{}, sinks{};
    const fst_tensor *mask_ptr = nullptr, *sinks_ptr = nullptr;
    if (files.has("mask")) {
        mask_npy = read_npy(dir + files["mask"].string());
        mask = view_of(mask_npy, mask_npy.descr == "<f2" ? FST_TYPE_F16 : FST_TYPE_F32);
        mask_ptr = &mask;
    }
    if (c["sinks"].boolean()) {
        sinks_npy = read_npy(dir + files["sinks"].string());
        sinks = view_of(sinks_npy, FST_TYPE_F32);
        sinks_ptr = &sinks;
    }
    fst_test::Npy ggml_npy = read_npy(dir + files["out"].string());
    const fst_tensor ggml_out = view_of(ggml_npy, FST_TYPE_F32);

    ASSERT_TRUE(same_extents(q, D, n_q, n_head, n_seq));
    ASSERT_TRUE(same_extents(k, D, n_kv, n_head_kv, n_seq_kv));
    ASSERT_TRUE(same_extents(v, DV, n_kv, n_head_kv, n_seq_kv));
    ASSERT_TRUE(same_extents(k_f32, D, n_kv, n_head_kv, n_seq_kv));
    ASSERT_TRUE(same_extents(v_f32, DV, n_kv, n_head_kv, n_seq_kv));
    ASSERT_TRUE(same_extents(ggml_out, DV, n_head, n_q, n_seq));
    if (mask_ptr != nullptr) {
        ASSERT_EQ(mask.ne[0], n_kv);
    }

    // The oracle reads the raw bytes; ggml's dequantized floats must be exactly what it decodes.
    if (type_k != FST_TYPE_F32) expect_decodes_to(k, k_f32, "k_raw");
    if (type_v != FST_TYPE_F32) expect_decodes_to(v, v_f32, "v_raw");

    fst_attn_params p = fst_attn_default_params();
    p.scale = float(c["scale"].number());
    p.max_bias = float(c["max_bias"].number());
    p.softcap = float(c["softcap"].number());
    const ref::Result expected = ref::attention(p, q, k, v, mask_ptr, sinks_ptr);
    const double ref_norm = max_abs(expected);
    const double ggml_err = c["ggml_rel_err_vs_f64_ref"].number();

    // (c) The oracle agrees with the harness's own float64 reference: ggml's distance to ours is what it stated.
    const double ref_vs_ggml = ref::rel_error(expected, ggml_out);
    EXPECT_LE(ref_vs_ggml, ggml_err * 1.01 + 1e-7) << "our reference disagrees with the harness's";

    // The whole KV range in one call from the empty state: ordinary flash attention.
    fst_test::Buffer state(FST_TYPE_F32, {2, n_head, n_q, n_seq}), out(FST_TYPE_F32, {DV, n_head, n_q, n_seq});
    ASSERT_EQ(fst_state_init(&state.t, &out.t), FST_OK) << fst_last_error();
    ASSERT_EQ(fst_attn_with_state(&p, &q, &k, &v, mask_ptr, sinks_ptr, &state.t, &out.t), FST_OK)
        << fst_last_error();

    // (a)
    const double ours_vs_ref = ref::rel_error(expected, out.t);
    EXPECT_LE(ours_vs_ref, 1e-5);

    // (b) With every distance measured against max|ref|, the triangle inequality gives
    // |ours - ggml| <= |ours - ref| + |ref - ggml| <= 1e-5 + ggml_err. The second build's output differs from
    // out.npy by other_build.max_rel_diff_vs_out (measured against max|out.npy|, which is at most
    // (1 + ggml_err) max|ref|), so against that build the bound grows by that difference, rescaled.
    const double ours_vs_ggml = rel_diff(out.t, ggml_out, ref_norm);
    const double bound = ggml_err + 1e-5;
    EXPECT_LE(ours_vs_ggml, bound) << "flashstate vs ggml's out.npy";
    double ours_vs_other = -1, other_bound = 0;
    if (files.has("out_avx512_nofp16")) {
        fst_test::Npy other_npy = read_npy(dir + files["out_avx512_nofp16"].string());
        const fst_tensor other_out = view_of(other_npy, FST_TYPE_F32);
        ASSERT_TRUE(same_extents(other_out, DV, n_head, n_q, n_seq));
        const double other_diff = c["other_build"]["max_rel_diff_vs_out"].number();
        other_bound = bound + other_diff * (1 + ggml_err) * 1.01;
        ours_vs_other = rel_diff(out.t, other_out, ref_norm);
        EXPECT_LE(ours_vs_other, other_bound) << "flashstate vs ggml's out_avx512_nofp16.npy";
    }

    // The state (M, S) itself, not only O.
    const double state_err = state_error(expected, state.t);
    EXPECT_LE(state_err, 1e-5) << "state M or log-sum-exp vs the reference";

    // (d) Three uneven segments through the carried state; sinks go with the middle one (merged exactly once).
    const int64_t cut1 = std::max<int64_t>(1, n_kv / 7), cut2 = std::max<int64_t>(cut1 + 1, n_kv * 5 / 8);
    const int64_t starts[3] = {0, cut1, cut2}, ends[3] = {cut1, cut2, n_kv};
    fst_test::Buffer split_state(FST_TYPE_F32, {2, n_head, n_q, n_seq});
    fst_test::Buffer split_out(FST_TYPE_F32, {DV, n_head, n_q, n_seq});
    ASSERT_EQ(fst_state_init(&split_state.t, &split_out.t), FST_OK) << fst_last_error();
    for (int i = 0; i < 3; ++i) {
        const int64_t n = ends[i] - starts[i];
        const fst_tensor k_seg = fst_test::slice(k, 1, starts[i], n), v_seg = fst_test::slice(v, 1, starts[i], n);
        const fst_tensor mask_seg = mask_ptr ? fst_test::slice(mask, 0, starts[i], n) : fst_tensor{};
        ASSERT_EQ(fst_attn_with_state(&p, &q, &k_seg, &v_seg, mask_ptr ? &mask_seg : nullptr,
                                      i == 1 ? sinks_ptr : nullptr, &split_state.t, &split_out.t),
                  FST_OK)
            << "segment " << i << " [" << starts[i] << ", " << ends[i] << "): " << fst_last_error();
    }
    const double split_vs_whole = rel_diff(split_out.t, out.t, max_abs(out.t));
    EXPECT_LE(split_vs_whole, 4e-6) << "segments [0," << cut1 << ") [" << cut1 << "," << cut2 << ") [" << cut2
                                    << "," << n_kv << ")";
    EXPECT_LE(state_error(expected, split_state.t), 1e-5) << "split state vs the reference";

    std::printf("%-30s ours-ref %.2e | ours-ggml %.2e (<= %.2e)", name.c_str(), ours_vs_ref, ours_vs_ggml, bound);
    if (ours_vs_other >= 0) std::printf(" other %.2e (<= %.2e)", ours_vs_other, other_bound);
    std::printf(" | ref-ggml %.2e (stated %.2e) | state %.2e | split %.2e\n", ref_vs_ggml, ggml_err, state_err,
                split_vs_whole);

    overall.ours_vs_ref = std::max(overall.ours_vs_ref, ours_vs_ref);
    overall.ours_vs_ggml_excess = std::max(overall.ours_vs_ggml_excess, ours_vs_ggml - ggml_err);
    overall.ref_vs_ggml_ratio = std::max(overall.ref_vs_ggml_ratio, ref_vs_ggml / std::max(1e-30, ggml_err));
    overall.state = std::max(overall.state, state_err);
    overall.split = std::max(overall.split, split_vs_whole);
}

TEST(Golden, EveryCaseMatchesGgmlAndTheReference) {
    ASSERT_TRUE(std::filesystem::is_directory(kGoldenDir))
        << "golden data directory missing: " << kGoldenDir << " (set FLASHSTATE_GOLDEN_DIR)";
    std::vector<fst_test::Json> cases;
    ASSERT_NO_THROW(cases = fst_test::read_json_lines(kGoldenDir + "/cases.jsonl"));
    ASSERT_FALSE(cases.empty()) << kGoldenDir << "/cases.jsonl holds no case";

    Maxima overall;
    for (const fst_test::Json &c : cases) {
        SCOPED_TRACE("case " + c["name"].string());
        try {
            check_case(c, overall);
        } catch (const std::exception &e) {
            ADD_FAILURE() << e.what();
        }
    }
    std::printf("overall (%zu cases): ours-ref %.2e | ours-ggml minus ggml's own error %.2e | ref-ggml / stated "
                "%.4f | state %.2e | split %.2e\n",
                cases.size(), overall.ours_vs_ref, overall.ours_vs_ggml_excess, overall.ref_vs_ggml_ratio,
                overall.state, overall.split);
}

} // namespace
