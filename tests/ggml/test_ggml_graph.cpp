// The ggml op inside ggml graphs, on random problems: segment nodes are ordered by their chain, the result equals
// the C API bit for bit and the double reference to 1e-5, any split equals the unsplit op to 4e-6, the bits do not
// depend on ggml's thread count or on how memory was allocated, views map exactly, and bad arguments give NULL
// with a message.
#include "ggml_support.h"
#include "support/buffer.h"

#include <ggml-alloc.h>
#include <ggml-backend.h>

#include <random>

namespace {

using fst_ggml_test::bits_differing;
using fst_ggml_test::rel_diff;
using fst_ggml_test::segment_chain;
using fst_ggml_test::view;

constexpr int64_t D = 64, DV = 64, n_q = 5, n_head = 4, n_head_kv = 2, n_seq = 2, mask_rows = 8;
constexpr float kScale = 0.125f, kMaxBias = 8.0f, kSoftcap = 20.0f;

void fill_normal(ggml_tensor *t, std::mt19937 &rng, float amplitude) {
    std::normal_distribution<float> nd(0.0f, amplitude);
    std::vector<float> row(size_t(t->ne[0]));
    for (int64_t i3 = 0; i3 < t->ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < t->ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < t->ne[1]; ++i1) {
                for (float &x : row) x = nd(rng);
                fst_ggml_test::set_row(t, row.data(), i1, i2, i3);
            }
}

// A causal mask with an offset per sequence, random biases and about 10% random -inf; row 2 of sequence 1 sees
// nothing.
void fill_mask(ggml_tensor *mask, std::mt19937 &rng) {
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    const int64_t n_kv = mask->ne[0];
    std::vector<float> row(static_cast<size_t>(n_kv));
    for (int64_t s = 0; s < mask->ne[3]; ++s)
        for (int64_t r = 0; r < mask->ne[1]; ++r) {
            for (int64_t j = 0; j < n_kv; ++j) {
                const bool visible = j <= n_kv - n_q - 3 * s + r && u(rng) > 0.1f && !(s == 1 && r == 2);
                row[size_t(j)] = visible ? -2.0f * u(rng) : -INFINITY;
            }
            fst_ggml_test::set_row(mask, row.data(), r, 0, s);
        }
}

// A KV cache in two tensors, older keys in one type and recent ones in another, with a mask and sinks over all
// of it; `whole_k`/`whole_v` hold the same stored values as F32, for the reference.
struct Problem {
    int64_t n_old, n_recent, n_kv;
    fst_ggml_test::Context C;
    ggml_tensor *q, *k_old, *v_old, *k_new, *v_new, *mask, *sinks, *whole_k, *whole_v;

    Problem(ggml_type old_type, ggml_type new_type, int64_t n_old_, int64_t n_recent_, uint32_t seed)
        : n_old(n_old_), n_recent(n_recent_), n_kv(n_old_ + n_recent_), C(size_t(64) << 20) {
        std::mt19937 rng(seed);
        ggml_context *ctx = C.ctx;
        q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, n_q, n_head, n_seq);
        k_old = ggml_new_tensor_4d(ctx, old_type, D, n_old, n_head_kv, n_seq);
        v_old = ggml_new_tensor_4d(ctx, old_type, DV, n_old, n_head_kv, n_seq);
        k_new = ggml_new_tensor_4d(ctx, new_type, D, n_recent, n_head_kv, n_seq);
        v_new = ggml_new_tensor_4d(ctx, new_type, DV, n_recent, n_head_kv, n_seq);
        mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_kv, mask_rows, 1, n_seq);
        sinks = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, n_head);
        for (ggml_tensor *t : {k_old, v_old, k_new, v_new}) fill_normal(t, rng, 1.0f);
        fill_normal(q, rng, 1.5f);
        fill_normal(sinks, rng, 2.0f);
        fill_mask(mask, rng);
        whole_k = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, n_kv, n_head_kv, n_seq);
        whole_v = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, DV, n_kv, n_head_kv, n_seq);
        decode_rows(whole_k, 0, k_old);
        decode_rows(whole_k, n_old, k_new);
        decode_rows(whole_v, 0, v_old);
        decode_rows(whole_v, n_old, v_new);
    }
    static void decode_rows(ggml_tensor *dst, int64_t j0, const ggml_tensor *src) {
        for (int64_t s = 0; s < src->ne[3]; ++s)
            for (int64_t h = 0; h < src->ne[2]; ++h)
                for (int64_t j = 0; j < src->ne[1]; ++j) {
                    const char *in = static_cast<const char *>(src->data) + j * src->nb[1] + h * src->nb[2] + s * src->nb[3];
                    char *o = static_cast<char *>(dst->data) + (j0 + j) * dst->nb[1] + h * dst->nb[2] + s * dst->nb[3];
                    ASSERT_EQ(fst_dequantize_row(fst_type(src->type), in, reinterpret_cast<float *>(o), src->ne[0]), FST_OK);
                }
    }
    fst_attn_params params() const {
        fst_attn_params p = fst_attn_default_params();
        p.scale = kScale;
        p.max_bias = kMaxBias;
        p.softcap = kSoftcap;
        return p;
    }
    ggml_tensor *new_state() { return ggml_new_tensor_4d(C.ctx, GGML_TYPE_F32, 2, n_head, n_q, n_seq); }
    ggml_tensor *new_out() { return ggml_new_tensor_4d(C.ctx, GGML_TYPE_F32, DV, n_head, n_q, n_seq); }
};

// The mixed cache through the op, segment by segment in one graph: [0, cut) and [cut, n_old) of the old tensor,
// then [0, cut_new) and [cut_new, n_recent) of the recent one; the sinks with the last.
struct MixedGraph {
    ggml_tensor *state, *out, *last;
    std::vector<ggml_tensor *> nodes;
    MixedGraph(Problem &P, int64_t cut, int64_t cut_new) : state(P.new_state()), out(P.new_out()) {
        using fst_ggml_test::kv_range;
        using fst_ggml_test::mask_columns;
        ggml_context *ctx = P.C.ctx;
        struct Range {
            ggml_tensor *k, *v;
            int64_t j0, n, mask_j0;
        };
        const Range ranges[4] = {{P.k_old, P.v_old, 0, cut, 0},
                                 {P.k_old, P.v_old, cut, P.n_old - cut, cut},
                                 {P.k_new, P.v_new, 0, cut_new, P.n_old},
                                 {P.k_new, P.v_new, cut_new, P.n_recent - cut_new, P.n_old + cut_new}};
        last = fst_ggml_state_init(ctx, state, out);
        nodes.push_back(last);
        for (int i = 0; i < 4; ++i) {
            const Range &r = ranges[i];
            last = fst_ggml_flash_attn_ext_with_state(ctx, P.q, kv_range(ctx, r.k, r.j0, r.n), kv_range(ctx, r.v, r.j0, r.n),
                                                      mask_columns(ctx, P.mask, r.mask_j0, r.n), i == 3 ? P.sinks : nullptr,
                                                      state, last, kScale, kMaxBias, kSoftcap);
            EXPECT_NE(last, nullptr) << fst_last_error();
            nodes.push_back(last);
        }
    }
};

TEST(GgmlGraph, SegmentNodesRunInChainOrderAndMatchTheCApiBitForBit) {
    Problem P(GGML_TYPE_Q8_0, GGML_TYPE_F16, 160, 96, 1);
    MixedGraph G(P, 64, 37);
    ASSERT_NE(G.last, nullptr);
    // Only the last node is expanded; the chain through out brings in every earlier one, in order.
    ggml_cgraph *graph = fst_ggml_test::compute(P.C.ctx, G.last, 2);
    std::vector<int> positions;
    for (ggml_tensor *node : G.nodes)
        for (int i = 0; i < ggml_graph_n_nodes(graph); ++i)
            if (ggml_graph_node(graph, i) == node) positions.push_back(i);
    ASSERT_EQ(positions.size(), G.nodes.size()) << "a segment node is missing from the graph";
    EXPECT_TRUE(std::is_sorted(positions.begin(), positions.end())) << "segment nodes out of chain order";

    // The C API, one call per segment in the same order, into buffers of its own.
    const fst_attn_params p = P.params();
    fst_test::Buffer state(FST_TYPE_F32, {2, n_head, n_q, n_seq}), out(FST_TYPE_F32, {DV, n_head, n_q, n_seq});
    ASSERT_EQ(fst_state_init(&state.t, &out.t), FST_OK);
    const fst_tensor qv = view(P.q), mv = view(P.mask), sv = view(P.sinks);
    const fst_tensor ko = view(P.k_old), vo = view(P.v_old), kn = view(P.k_new), vn = view(P.v_new);
    const int64_t cuts[5] = {0, 64, P.n_old, P.n_old + 37, P.n_kv};
    for (int i = 0; i < 4; ++i) {
        const bool old = i < 2;
        const int64_t j0 = old ? cuts[i] : cuts[i] - P.n_old, n = cuts[i + 1] - cuts[i];
        const fst_tensor k = fst_test::slice(old ? ko : kn, 1, j0, n), v = fst_test::slice(old ? vo : vn, 1, j0, n);
        const fst_tensor m = fst_test::slice(mv, 0, cuts[i], n);
        ASSERT_EQ(fst_attn_with_state(&p, &qv, &k, &v, &m, i == 3 ? &sv : nullptr, &state.t, &out.t), FST_OK)
            << fst_last_error();
    }
    EXPECT_EQ(bits_differing(view(G.out), out.t), 0) << "output elements that differ from the C API";
    EXPECT_EQ(bits_differing(view(G.state), state.t), 0) << "state elements that differ from the C API";

    // The double reference over the same stored values.
    const fst_tensor wk = view(P.whole_k), wv = view(P.whole_v);
    const ref::Result expected = ref::attention(p, qv, wk, wv, &mv, &sv);
    EXPECT_LE(ref::rel_error(expected, view(G.out)), 1e-5);
}

TEST(GgmlGraph, OneTwoAndThreeThreadsGiveTheSameBits) {
    Problem P(GGML_TYPE_Q4_0, GGML_TYPE_BF16, 192, 130, 2);
    MixedGraph G(P, 50, 90);
    ASSERT_NE(G.last, nullptr);
    fst_ggml_test::compute(P.C.ctx, G.last, 1);
    fst_test::Buffer out1(FST_TYPE_F32, {DV, n_head, n_q, n_seq}), state1(FST_TYPE_F32, {2, n_head, n_q, n_seq});
    std::memcpy(out1.t.data, G.out->data, ggml_nbytes(G.out));
    std::memcpy(state1.t.data, G.state->data, ggml_nbytes(G.state));
    for (int n_threads : {2, 3}) {
        fst_ggml_test::compute(P.C.ctx, G.last, n_threads);
        EXPECT_EQ(bits_differing(view(G.out), out1.t), 0) << n_threads << " threads vs 1: output";
        EXPECT_EQ(bits_differing(view(G.state), state1.t), 0) << n_threads << " threads vs 1: state";
    }
}

TEST(GgmlGraph, AnySplitEqualsTheUnsplitOp) {
    std::mt19937 rng(7);
    const ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0};
    for (ggml_type tk : types) {
        // Only the older cache tensor is used here (the recent one holds a single key).
        Problem P(tk, GGML_TYPE_F16, 200, 1, 10 + uint32_t(tk));
        ggml_tensor *mask = ggml_view_4d(P.C.ctx, P.mask, P.n_old, mask_rows, 1, n_seq, P.mask->nb[1], P.mask->nb[2],
                                         P.mask->nb[3], 0);
        ggml_tensor *whole_out = P.new_out();
        ggml_tensor *whole = segment_chain(P.C.ctx, P.q, P.k_old, P.v_old, mask, P.sinks, P.new_state(), whole_out,
                                           {0, P.n_old}, kScale, kMaxBias, kSoftcap);
        ASSERT_NE(whole, nullptr);
        fst_ggml_test::compute(P.C.ctx, whole, 2);
        const fst_tensor reference = view(whole_out);
        for (int trial = 0; trial < 4; ++trial) {
            std::vector<int64_t> cuts{0, P.n_old};
            const int n_cuts = 1 + int(rng() % 6);
            for (int i = 0; i < n_cuts; ++i) cuts.push_back(1 + int64_t(rng() % uint32_t(P.n_old - 1)));
            std::sort(cuts.begin(), cuts.end());
            cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
            ggml_tensor *split_out = P.new_out();
            ggml_tensor *split = segment_chain(P.C.ctx, P.q, P.k_old, P.v_old, mask, P.sinks, P.new_state(), split_out,
                                               cuts, kScale, kMaxBias, kSoftcap);
            ASSERT_NE(split, nullptr);
            fst_ggml_test::compute(P.C.ctx, split, 2);
            EXPECT_LE(rel_diff(view(split_out), reference, fst_ggml_test::max_abs(reference)), 4e-6)
                << ggml_type_name(tk) << ", " << cuts.size() - 1 << " segments";
        }
    }
}

// An engine's path: tensors in a no_alloc context (no memory while the graph is built), placed by ggml-alloc in a
// CPU backend buffer, computed by the CPU backend. Same bits as the allocated-context path.
TEST(GgmlGraph, NoAllocContextOnTheCpuBackendGivesTheSameBits) {
    Problem P(GGML_TYPE_Q8_0, GGML_TYPE_F16, 160, 96, 3);
    MixedGraph G(P, 64, 37);
    ASSERT_NE(G.last, nullptr);
    fst_ggml_test::compute(P.C.ctx, G.last, 2);

    ggml_init_params params{64 * ggml_tensor_overhead() + ggml_graph_overhead(), nullptr, true};
    ggml_context *ctx = ggml_init(params);
    ggml_tensor *inputs[7], *sources[7] = {P.q, P.k_old, P.v_old, P.k_new, P.v_new, P.mask, P.sinks};
    for (int i = 0; i < 7; ++i) inputs[i] = ggml_dup_tensor(ctx, sources[i]);
    ggml_tensor *state = ggml_dup_tensor(ctx, G.state), *out = ggml_dup_tensor(ctx, G.out);
    ggml_tensor *cur = fst_ggml_state_init(ctx, state, out);
    ASSERT_NE(cur, nullptr) << fst_last_error();
    const int64_t cuts[5] = {0, 64, P.n_old, P.n_old + 37, P.n_kv};
    for (int i = 0; i < 4; ++i) {
        const bool old = i < 2;
        const int64_t j0 = old ? cuts[i] : cuts[i] - P.n_old, n = cuts[i + 1] - cuts[i];
        cur = fst_ggml_flash_attn_ext_with_state(
            ctx, inputs[0], fst_ggml_test::kv_range(ctx, inputs[old ? 1 : 3], j0, n),
            fst_ggml_test::kv_range(ctx, inputs[old ? 2 : 4], j0, n), fst_ggml_test::mask_columns(ctx, inputs[5], cuts[i], n),
            i == 3 ? inputs[6] : nullptr, state, cur, kScale, kMaxBias, kSoftcap);
        ASSERT_NE(cur, nullptr) << "segment " << i << " (built before any memory exists): " << fst_last_error();
    }
    ggml_backend_t backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend, 2);
    ggml_backend_buffer_t buffer = ggml_backend_alloc_ctx_tensors(ctx, backend);
    ASSERT_NE(buffer, nullptr);
    for (int i = 0; i < 7; ++i) ggml_backend_tensor_set(inputs[i], sources[i]->data, 0, ggml_nbytes(sources[i]));
    ggml_cgraph *graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, cur);
    EXPECT_EQ(ggml_backend_graph_compute(backend, graph), GGML_STATUS_SUCCESS);
    EXPECT_EQ(bits_differing(view(out), view(G.out)), 0) << "output elements that differ";
    EXPECT_EQ(bits_differing(view(state), view(G.state)), 0) << "state elements that differ";
    ggml_backend_buffer_free(buffer);
    ggml_backend_free(backend);
    ggml_free(ctx);
}

// Views map field for field; a permuted K cache and an F16 Q with KV broadcast over sequences and an F32 mask
// (none of which ggml's own op takes) match the reference.
TEST(GgmlGraph, ViewsPermutesBroadcastAndF32MasksWork) {
    fst_ggml_test::Context C(size_t(16) << 20);
    ggml_context *ctx = C.ctx;
    std::mt19937 rng(5);
    const int64_t n_kv = 70;
    // K stored [D, n_head_kv, n_kv, 1] (head-major rows), used through a permute; one KV sequence for two.
    ggml_tensor *k_stored = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, D, n_head_kv, n_kv, 1);
    ggml_tensor *v = ggml_new_tensor_4d(ctx, GGML_TYPE_Q8_0, DV, n_kv, n_head_kv, 1);
    ggml_tensor *q = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, D, n_q, n_head, n_seq);
    ggml_tensor *mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, n_kv, n_q, 1, n_seq);
    for (ggml_tensor *t : {k_stored, v, q}) fill_normal(t, rng, 1.0f);
    fill_mask(mask, rng);
    ggml_tensor *k = ggml_permute(ctx, k_stored, 0, 2, 1, 3);

    for (ggml_tensor *t : {k, ggml_transpose(ctx, mask), ggml_view_4d(ctx, v, 32, 5, 2, 1, v->nb[1], v->nb[2], v->nb[3], 3 * v->nb[1])}) {
        const fst_tensor f = view(t);
        EXPECT_EQ(int(f.type), int(t->type));
        EXPECT_EQ(f.data, t->data);
        for (int i = 0; i < 4; ++i) {
            EXPECT_EQ(f.ne[i], t->ne[i]) << "ne[" << i << "]";
            EXPECT_EQ(f.nb[i], t->nb[i]) << "nb[" << i << "]";
        }
    }

    ggml_tensor *state = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 2, n_head, n_q, n_seq);
    ggml_tensor *out = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, DV, n_head, n_q, n_seq);
    ggml_tensor *node = segment_chain(ctx, q, k, v, mask, nullptr, state, out, {0, 30, n_kv}, kScale, 0.0f, 0.0f);
    ASSERT_NE(node, nullptr);
    fst_ggml_test::compute(ctx, node, 2);
    fst_attn_params p = fst_attn_default_params();
    p.scale = kScale;
    const fst_tensor qv = view(q), kv = view(k), vv = view(v), mv = view(mask);
    EXPECT_LE(ref::rel_error(ref::attention(p, qv, kv, vv, &mv, nullptr), view(out)), 1e-5);
}

TEST(GgmlGraph, BadArgumentsGiveNullAndSayWhy) {
    fst_ggml_test::Context C(size_t(4) << 20);
    ggml_context *ctx = C.ctx;
    const int64_t n_kv = 40;
    ggml_tensor *q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, n_q, n_head, 1);
    ggml_tensor *k = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, D, n_kv, n_head_kv, 1);
    ggml_tensor *v = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, DV, n_kv, n_head_kv, 1);
    ggml_tensor *k_q4_1 = ggml_new_tensor_4d(ctx, GGML_TYPE_Q4_1, D, n_kv, n_head_kv, 1);
    ggml_tensor *mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, n_kv, n_q, 1, 1);
    ggml_tensor *state = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 2, n_head, n_q, 1);
    ggml_tensor *out = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, DV, n_head, n_q, 1);
    auto expect_null = [&](ggml_tensor *node, const char *needle) {
        EXPECT_EQ(node, nullptr);
        EXPECT_NE(std::string(fst_last_error()).find(needle), std::string::npos)
            << "message \"" << fst_last_error() << "\" should contain \"" << needle << "\"";
    };

    // The mapping names the ggml tensor and its type, and leaves the view untouched.
    ggml_tensor *k_quant = ggml_new_tensor_4d(ctx, GGML_TYPE_Q4_K, 256, 4, 1, 1);
    ggml_set_name(k_quant, "blk.0.attn_k");
    fst_tensor untouched{};
    untouched.ne[0] = 12345;
    EXPECT_EQ(fst_ggml_tensor(k_quant, &untouched), FST_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(fst_last_error()).find("blk.0.attn_k.type = q4_K"), std::string::npos) << fst_last_error();
    EXPECT_EQ(untouched.ne[0], 12345);
    EXPECT_EQ(fst_ggml_tensor(nullptr, &untouched), FST_ERR_INVALID_ARGUMENT);

    const float s = kScale;
    expect_null(fst_ggml_flash_attn_ext_with_state(ctx, q, k_q4_1, v, nullptr, nullptr, state, out, s, 0, 0), "k.type = q4_1");
    // The whole mask with a segment of K/V: the mask must be viewed over the same columns.
    ggml_tensor *k_seg = fst_ggml_test::kv_range(ctx, k, 10, 20), *v_seg = fst_ggml_test::kv_range(ctx, v, 10, 20);
    expect_null(fst_ggml_flash_attn_ext_with_state(ctx, q, k_seg, v_seg, mask, nullptr, state, out, s, 0, 0), "mask.ne[0] = 40");
    // out overlapping q: two views of one allocation.
    ggml_tensor *shared = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, D * n_q * n_head + DV * n_head * n_q);
    ggml_tensor *q_in = ggml_view_4d(ctx, shared, D, n_q, n_head, 1, D * 4, D * n_q * 4, D * n_q * n_head * 4, 0);
    ggml_tensor *out_in = ggml_view_4d(ctx, shared, DV, n_head, n_q, 1, DV * 4, DV * n_head * 4, DV * n_head * n_q * 4, 64);
    expect_null(fst_ggml_flash_attn_ext_with_state(ctx, q_in, k, v, nullptr, nullptr, state, out_in, s, 0, 0), "overlaps");
    ggml_tensor *state_f16 = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, 2, n_head, n_q, 1);
    expect_null(fst_ggml_flash_attn_ext_with_state(ctx, q, k, v, nullptr, nullptr, state_f16, out, s, 0, 0), "state.type");
    expect_null(fst_ggml_state_init(ctx, state_f16, out), "state.type");
    expect_null(fst_ggml_flash_attn_ext_with_state(ctx, q, k, v, nullptr, nullptr, state, out, s, -1.0f, 0), "max_bias");
    expect_null(fst_ggml_flash_attn_ext_with_state(nullptr, q, k, v, nullptr, nullptr, state, out, s, 0, 0), "ctx");
    expect_null(fst_ggml_flash_attn_ext_with_state(ctx, q, k, nullptr, nullptr, nullptr, state, out, s, 0, 0), "v.pointer");
    // The same arguments, repaired, give a node.
    EXPECT_NE(fst_ggml_flash_attn_ext_with_state(ctx, q, k_seg, v_seg, fst_ggml_test::mask_columns(ctx, mask, 10, 20),
                                                 nullptr, state, out, s, 0, 0),
              nullptr)
        << fst_last_error();
}

} // namespace
