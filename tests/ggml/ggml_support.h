// Helpers for the ggml adapter's tests: a ggml context that owns its memory, graphs of segment nodes over
// ggml_view_4d views, and comparisons of F32 [DV, n_head, n_q, n_seq] results.
#pragma once

#include "reference/reference.h"
#include "support/cases.h"

#include <flashstate/flashstate.h>
#include <flashstate/ggml.h>
#include <ggml-cpu.h>
#include <ggml.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace fst_ggml_test {

// A ggml context holding its tensors' memory (no_alloc = false); freed with the object.
struct Context {
    ggml_context *ctx = nullptr;
    explicit Context(size_t data_bytes) {
        ggml_init_params params{data_bytes + 256 * ggml_tensor_overhead() + 4 * ggml_graph_overhead() + (8u << 20), nullptr,
                                false};
        ctx = ggml_init(params);
        if (ctx == nullptr) throw std::runtime_error("ggml_init failed");
    }
    ~Context() { ggml_free(ctx); }
    Context(const Context &) = delete;
    Context &operator=(const Context &) = delete;
};

// The adapter's view of a tensor; fails the test if the type is not mapped.
inline fst_tensor view(const ggml_tensor *t) {
    fst_tensor v{};
    EXPECT_EQ(fst_ggml_tensor(t, &v), FST_OK) << fst_last_error();
    return v;
}

// Keys [j0, j0 + n) of a K or V tensor (dimension 1), and the same columns of a mask (dimension 0).
inline ggml_tensor *kv_range(ggml_context *ctx, ggml_tensor *t, int64_t j0, int64_t n) {
    return ggml_view_4d(ctx, t, t->ne[0], n, t->ne[2], t->ne[3], t->nb[1], t->nb[2], t->nb[3], size_t(j0) * t->nb[1]);
}
inline ggml_tensor *mask_columns(ggml_context *ctx, ggml_tensor *mask, int64_t j0, int64_t n) {
    return ggml_view_4d(ctx, mask, n, mask->ne[1], mask->ne[2], mask->ne[3], mask->nb[1], mask->nb[2], mask->nb[3],
                        size_t(j0) * mask->nb[0]);
}

// A chain init -> segment 0 -> segment 1 -> ... over the KV cuts [cuts[i], cuts[i + 1]) of k and v; the sinks
// go with the last segment. Returns the last node (a view of out).
inline ggml_tensor *segment_chain(ggml_context *ctx, ggml_tensor *q, ggml_tensor *k, ggml_tensor *v, ggml_tensor *mask,
                                  ggml_tensor *sinks, ggml_tensor *state, ggml_tensor *out,
                                  const std::vector<int64_t> &cuts, float scale, float max_bias, float softcap) {
    ggml_tensor *cur = fst_ggml_state_init(ctx, state, out);
    EXPECT_NE(cur, nullptr) << fst_last_error();
    for (size_t i = 0; cur != nullptr && i + 1 < cuts.size(); ++i) {
        const int64_t n = cuts[i + 1] - cuts[i];
        ggml_tensor *seg_mask = mask != nullptr ? mask_columns(ctx, mask, cuts[i], n) : nullptr;
        cur = fst_ggml_flash_attn_ext_with_state(ctx, q, kv_range(ctx, k, cuts[i], n), kv_range(ctx, v, cuts[i], n),
                                                 seg_mask, i + 2 == cuts.size() ? sinks : nullptr, state, cur, scale,
                                                 max_bias, softcap);
        EXPECT_NE(cur, nullptr) << "segment " << i << ": " << fst_last_error();
    }
    return cur;
}

// Builds the graph of `result` and computes it on ggml's CPU thread pool.
inline ggml_cgraph *compute(ggml_context *ctx, ggml_tensor *result, int n_threads) {
    ggml_cgraph *graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, result);
    EXPECT_EQ(ggml_graph_compute_with_ctx(ctx, graph, n_threads), GGML_STATUS_SUCCESS);
    return graph;
}

// Row i of a tensor (dimensions 1..3) as floats, through the library's converter, e.g. to fill from N(0, 1).
inline void set_row(ggml_tensor *t, const float *values, int64_t i1, int64_t i2, int64_t i3) {
    char *row = static_cast<char *>(t->data) + i1 * t->nb[1] + i2 * t->nb[2] + i3 * t->nb[3];
    ASSERT_EQ(fst_quantize_row(fst_type(t->type), values, row, t->ne[0]), FST_OK) << fst_last_error();
}

using fst_test::max_abs;
using fst_test::rel_diff;

// Number of F32 elements whose bits differ (same extents; any strides).
inline int64_t bits_differing(const fst_tensor &a, const fst_tensor &b) {
    int64_t n = 0;
    for (int64_t i3 = 0; i3 < a.ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < a.ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < a.ne[1]; ++i1) {
                const char *ra = static_cast<const char *>(a.data) + i1 * a.nb[1] + i2 * a.nb[2] + i3 * a.nb[3];
                const char *rb = static_cast<const char *>(b.data) + i1 * b.nb[1] + i2 * b.nb[2] + i3 * b.nb[3];
                for (int64_t i0 = 0; i0 < a.ne[0]; ++i0) n += std::memcmp(ra + 4 * i0, rb + 4 * i0, 4) != 0;
            }
    return n;
}

} // namespace fst_ggml_test
