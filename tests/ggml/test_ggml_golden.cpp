// The ggml op against real ggml, on every case of shared/golden (tests/test_golden.cpp checks the C API there).
// The case's arrays become ggml tensors (K and V as the bytes ggml read); per case:
//   (a) the op vs the double reference                                <= 1e-5 (SPEC section 4)
//   (b) the op vs ggml's out.npy (and the second build's output)       <= ggml's own stated error + 1e-5
//   (c) the op vs fst_attn_with_state on the same memory               bit for bit (output and state)
//   (d) three uneven KV segments, ggml_view_4d views in one graph       == the unsplit op, to 4e-6
//   (e) that graph with 1 and with 2 threads                            bit for bit
// It also runs this ggml build's own ggml_flash_attn_ext on the same tensors and prints how far that is from
// out.npy and from the reference (information about the local build, not a property of flashstate).
#include "ggml_support.h"
#include "support/buffer.h"
#include "support/npy.h"

#include <cstdio>
#include <filesystem>

namespace {

using fst_ggml_test::bits_differing;
using fst_ggml_test::rel_diff;
using fst_ggml_test::view;

const std::string kGoldenDir = FLASHSTATE_GOLDEN_DIR;

ggml_type type_named(const std::string &name) {
    if (name == "f32") return GGML_TYPE_F32;
    if (name == "f16") return GGML_TYPE_F16;
    if (name == "bf16") return GGML_TYPE_BF16;
    if (name == "q8_0") return GGML_TYPE_Q8_0;
    if (name == "q4_0") return GGML_TYPE_Q4_0;
    throw std::runtime_error("unknown type name " + name);
}

// A ggml tensor holding an array's bytes. The numpy shape is the ggml ne reversed; quantized arrays are uint8 rows
// of blocks, whose innermost numpy axis is the row's byte count.
ggml_tensor *tensor_from(ggml_context *ctx, const fst_test::Npy &a, ggml_type type) {
    const char *dtype = type == GGML_TYPE_F32 ? "<f4" : type == GGML_TYPE_F16 ? "<f2" : type == GGML_TYPE_BF16 ? "<u2" : "|u1";
    if (a.descr != dtype) throw std::runtime_error("array dtype " + a.descr + ", expected " + dtype);
    if (a.shape.empty() || a.shape.size() > 4) throw std::runtime_error("array rank must be 1..4");
    int64_t ne[4] = {1, 1, 1, 1};
    for (size_t i = 0; i < a.shape.size(); ++i) ne[i] = a.shape[a.shape.size() - 1 - i];
    if (ggml_is_quantized(type)) ne[0] = ne[0] / int64_t(ggml_type_size(type)) * ggml_blck_size(type);
    ggml_tensor *t = ggml_new_tensor_4d(ctx, type, ne[0], ne[1], ne[2], ne[3]);
    if (ggml_nbytes(t) != a.bytes.size()) throw std::runtime_error("array bytes do not make whole rows of the type");
    std::memcpy(t->data, a.bytes.data(), a.bytes.size());
    return t;
}

// The same mask as F16 (ggml's op asserts an F16 mask); the golden F32 masks hold F16-exact values.
ggml_tensor *as_f16(ggml_context *ctx, ggml_tensor *mask) {
    if (mask->type == GGML_TYPE_F16) return mask;
    ggml_tensor *h = ggml_new_tensor(ctx, GGML_TYPE_F16, 4, mask->ne);
    for (int64_t i3 = 0; i3 < mask->ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < mask->ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < mask->ne[1]; ++i1) {
                const float *row = reinterpret_cast<const float *>(static_cast<char *>(mask->data) + i1 * mask->nb[1] +
                                                                   i2 * mask->nb[2] + i3 * mask->nb[3]);
                fst_ggml_test::set_row(h, row, i1, i2, i3);
            }
    return h;
}

struct Worst {
    double ours_vs_ref = 0, ours_vs_ggml_excess = -INFINITY, split = 0;
};

void check_case(const fst_test::Json &c, Worst &worst) {
    using fst_test::read_npy;
    const std::string name = c["name"].string(), dir = kGoldenDir + "/" + c["dir"].string() + "/";
    const fst_test::Json &files = c["files"];
    const int64_t DV = c["DV"].integer(), n_q = c["n_q"].integer(), n_kv = c["n_kv"].integer();
    const int64_t n_head = c["n_head"].integer(), n_seq = c["n_seq"].integer();
    const ggml_type type_k = type_named(c["type_k"].string()), type_v = type_named(c["type_v"].string());
    const float scale = float(c["scale"].number()), max_bias = float(c["max_bias"].number());
    const float softcap = float(c["softcap"].number());
    const double ggml_err = c["ggml_rel_err_vs_f64_ref"].number();

    const fst_test::Npy q_npy = read_npy(dir + files["q"].string());
    const fst_test::Npy k_npy = read_npy(dir + files[type_k == GGML_TYPE_F32 ? "k" : "k_raw"].string());
    const fst_test::Npy v_npy = read_npy(dir + files[type_v == GGML_TYPE_F32 ? "v" : "v_raw"].string());
    const fst_test::Npy out_npy = read_npy(dir + files["out"].string());
    fst_test::Npy mask_npy, sinks_npy;
    if (files.has("mask")) mask_npy = read_npy(dir + files["mask"].string());
    if (c["sinks"].boolean()) sinks_npy = read_npy(dir + files["sinks"].string());

    fst_ggml_test::Context C(4 * (q_npy.bytes.size() + k_npy.bytes.size() + v_npy.bytes.size() + mask_npy.bytes.size() +
                                  8 * out_npy.bytes.size()));
    ggml_context *ctx = C.ctx;
    ggml_tensor *q = tensor_from(ctx, q_npy, GGML_TYPE_F32), *k = tensor_from(ctx, k_npy, type_k);
    ggml_tensor *v = tensor_from(ctx, v_npy, type_v), *golden = tensor_from(ctx, out_npy, GGML_TYPE_F32);
    // Our op gets the mask as stored (F32 masks are accepted); ggml's op gets it as F16.
    ggml_tensor *mask = nullptr, *sinks = nullptr;
    if (files.has("mask")) mask = tensor_from(ctx, mask_npy, mask_npy.descr == "<f2" ? GGML_TYPE_F16 : GGML_TYPE_F32);
    if (c["sinks"].boolean()) sinks = tensor_from(ctx, sinks_npy, GGML_TYPE_F32);
    ggml_tensor *state = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 2, n_head, n_q, n_seq);
    ggml_tensor *out = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, DV, n_head, n_q, n_seq);
    ASSERT_EQ(ggml_nbytes(golden), ggml_nbytes(out)) << "out.npy has the wrong shape";

    // The whole KV range through the op.
    ggml_tensor *whole = fst_ggml_test::segment_chain(ctx, q, k, v, mask, sinks, state, out, {0, n_kv}, scale,
                                                      max_bias, softcap);
    ASSERT_NE(whole, nullptr);
    fst_ggml_test::compute(ctx, whole, 2);
    const fst_tensor ours = view(out), ours_state = view(state);

    fst_attn_params p = fst_attn_default_params();
    p.scale = scale;
    p.max_bias = max_bias;
    p.softcap = softcap;
    const fst_tensor qv = view(q), kv = view(k), vv = view(v), mv = mask ? view(mask) : fst_tensor{};
    const fst_tensor sv = sinks ? view(sinks) : fst_tensor{};
    const ref::Result expected = ref::attention(p, qv, kv, vv, mask ? &mv : nullptr, sinks ? &sv : nullptr);
    double ref_norm = 0;
    for (double x : expected.O) ref_norm = std::max(ref_norm, std::fabs(x));

    // (a), (b)
    const double ours_vs_ref = ref::rel_error(expected, ours);
    EXPECT_LE(ours_vs_ref, 1e-5) << "op vs the double reference";
    const double ours_vs_ggml = rel_diff(ours, view(golden), ref_norm);
    EXPECT_LE(ours_vs_ggml, ggml_err + 1e-5) << "op vs ggml's out.npy";
    if (files.has("out_avx512_nofp16")) {
        const fst_test::Npy other_npy = read_npy(dir + files["out_avx512_nofp16"].string());
        const double other_bound = ggml_err + 1e-5 + c["other_build"]["max_rel_diff_vs_out"].number() * (1 + ggml_err) * 1.01;
        EXPECT_LE(rel_diff(ours, view(tensor_from(ctx, other_npy, GGML_TYPE_F32)), ref_norm), other_bound)
            << "op vs ggml's out_avx512_nofp16.npy";
    }

    // (c) The C API on the same inputs, into buffers of its own.
    fst_test::Buffer api_state(FST_TYPE_F32, {2, n_head, n_q, n_seq}), api_out(FST_TYPE_F32, {DV, n_head, n_q, n_seq});
    ASSERT_EQ(fst_state_init(&api_state.t, &api_out.t), FST_OK) << fst_last_error();
    ASSERT_EQ(fst_attn_with_state(&p, &qv, &kv, &vv, mask ? &mv : nullptr, sinks ? &sv : nullptr, &api_state.t,
                                  &api_out.t),
              FST_OK)
        << fst_last_error();
    EXPECT_EQ(bits_differing(ours, api_out.t), 0) << "op vs fst_attn_with_state: output elements that differ";
    EXPECT_EQ(bits_differing(ours_state, api_state.t), 0) << "op vs fst_attn_with_state: state elements that differ";

    // (d), (e) Three uneven segments in one graph (sinks with the last), computed with 1 and with 2 threads.
    const int64_t cut1 = std::max<int64_t>(1, n_kv / 7), cut2 = std::max<int64_t>(cut1 + 1, n_kv * 5 / 8);
    ggml_tensor *split_state = ggml_dup_tensor(ctx, state), *split_out = ggml_dup_tensor(ctx, out);
    ggml_tensor *split = fst_ggml_test::segment_chain(ctx, q, k, v, mask, sinks, split_state, split_out,
                                                      {0, cut1, cut2, n_kv}, scale, max_bias, softcap);
    ASSERT_NE(split, nullptr);
    fst_ggml_test::compute(ctx, split, 1);
    fst_test::Buffer one_thread(FST_TYPE_F32, {DV, n_head, n_q, n_seq});
    std::memcpy(one_thread.t.data, split_out->data, ggml_nbytes(split_out));
    fst_ggml_test::compute(ctx, split, 2);
    EXPECT_EQ(bits_differing(view(split_out), one_thread.t), 0) << "1 vs 2 threads: output elements that differ";
    const double split_vs_whole = rel_diff(view(split_out), ours, fst_ggml_test::max_abs(ours));
    EXPECT_LE(split_vs_whole, 4e-6) << "segments [0," << cut1 << ") [" << cut1 << "," << cut2 << ") [" << cut2 << ","
                                    << n_kv << ") vs the unsplit op";

    // This build's ggml_flash_attn_ext on the same tensors: printed, not asserted.
    ggml_tensor *g = ggml_flash_attn_ext(ctx, q, k, v, mask ? as_f16(ctx, mask) : nullptr, scale, max_bias, softcap);
    ggml_flash_attn_ext_set_prec(g, GGML_PREC_F32);
    if (sinks) ggml_flash_attn_ext_add_sinks(g, sinks);
    fst_ggml_test::compute(ctx, g, 2);

    std::printf("%-30s op-ref %.2e | op-ggml %.2e (<= %.2e) | split %.2e | local ggml: -ref %.2e, -out.npy %.2e\n",
                name.c_str(), ours_vs_ref, ours_vs_ggml, ggml_err + 1e-5, split_vs_whole,
                ref::rel_error(expected, view(g)), rel_diff(view(g), view(golden), ref_norm));
    worst.ours_vs_ref = std::max(worst.ours_vs_ref, ours_vs_ref);
    worst.ours_vs_ggml_excess = std::max(worst.ours_vs_ggml_excess, ours_vs_ggml - ggml_err);
    worst.split = std::max(worst.split, split_vs_whole);
}

TEST(GgmlGolden, OpMatchesGgmlTheReferenceAndTheCApiOnEveryCase) {
    ASSERT_TRUE(std::filesystem::is_directory(kGoldenDir))
        << "golden data directory missing: " << kGoldenDir << " (set FLASHSTATE_GOLDEN_DIR)";
    std::vector<fst_test::Json> cases;
    ASSERT_NO_THROW(cases = fst_test::read_json_lines(kGoldenDir + "/cases.jsonl"));
    ASSERT_FALSE(cases.empty());
    Worst worst;
    for (const fst_test::Json &c : cases) {
        SCOPED_TRACE("case " + c["name"].string());
        try {
            check_case(c, worst);
        } catch (const std::exception &e) {
            ADD_FAILURE() << e.what();
        }
    }
    std::printf("overall (%zu cases): op-ref %.2e | op-ggml minus ggml's own error %.2e | split %.2e\n", cases.size(),
                worst.ours_vs_ref, worst.ours_vs_ggml_excess, worst.split);
}

} // namespace
