/*
 * flashstate for ggml — flash_attn_ext with a carried softmax state, as a ggml custom op (docs/ggml.md).
 *
 * Built only when CMake is given FLASHSTATE_GGML_DIR (library flashstate_ggml). Include ggml.h before or after
 * this header; it only needs the two struct names.
 *
 * Pattern, one graph or one graph per segment alike:
 *   out = fst_ggml_state_init(ctx, state, out);                    // M = -inf, S = 0, O = 0
 *   for each KV segment i (ggml_view_4d of the cache, the mask viewed over the same columns):
 *       out = fst_ggml_flash_attn_ext_with_state(ctx, q, k_i, v_i, mask_i, i == last ? sinks : NULL,
 *                                                state, out, scale, max_bias, softcap);
 *   ggml_build_forward_expand(graph, out);
 * Each call returns a view of `out` whose sources are the previous node (through `out`) and `state`, so the nodes
 * run in segment order. Pass sinks to exactly one segment's node. After compute, out holds ggml's permuted result
 * [DV, n_head, n_q, n_seq] and state the (M, S) of every row.
 *
 * Errors: the builders check every argument that a graph fixes (types, extents, strides, overlaps between views
 * of one allocation) and return NULL, with fst_last_error() saying what is wrong, instead of a node. The compute
 * callback checks again with the real addresses; if that fails (e.g. memory placed so that out overlaps an input)
 * it aborts through GGML_ABORT with the message, as a ggml op does, because a callback cannot return an error.
 */
#ifndef FLASHSTATE_GGML_H
#define FLASHSTATE_GGML_H

#include <flashstate/flashstate.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ggml_context;
struct ggml_tensor;

/* *view := the fst_tensor of t (type by value, ne, nb, data; any ggml view: offsets, permutes, transposes).
 * ggml types flashstate does not read (q4_1, k-quants, ...) give FST_ERR_UNSUPPORTED naming the type; *view is
 * then untouched. data may be NULL (a tensor not allocated yet): the view is then not usable for a call. */
fst_status fst_ggml_tensor(const struct ggml_tensor *t, fst_tensor *view);

/* A node that sets state (F32 [2, n_head, n_q, n_seq]) to the empty state and out (F32 [DV, n_head, n_q, n_seq])
 * to zero. Returns a view of out (use it as the next node's out), or NULL on bad arguments. */
struct ggml_tensor *fst_ggml_state_init(struct ggml_context *ctx, struct ggml_tensor *state, struct ggml_tensor *out);

/* A node computing (state, out) ⊕= flash_attn_ext(q, k, v, mask, sinks; scale, max_bias, softcap), split over
 * ggml's compute threads (n_tasks = every thread; the bits do not depend on their number).
 *   q     [D, n_q, n_head, n_seq]          F32, F16, BF16
 *   k     [D, n_kv, n_head_kv, n_seq_kv]   F32, F16, BF16, Q8_0, Q4_0; n_head % n_head_kv == 0, n_seq % n_seq_kv == 0
 *   v     [DV, n_kv, n_head_kv, n_seq_kv]  same types, independently of k
 *   mask  [n_kv, >= n_q, m2, m3]           F16 or F32, nullable; ne[0] is exactly this segment's n_kv
 *   sinks [n_head]                         F32, nullable
 * Returns a view of out (use it as the next node's out), or NULL on bad arguments. */
struct ggml_tensor *fst_ggml_flash_attn_ext_with_state(struct ggml_context *ctx, struct ggml_tensor *q,
                                                       struct ggml_tensor *k, struct ggml_tensor *v,
                                                       struct ggml_tensor *mask, struct ggml_tensor *sinks,
                                                       struct ggml_tensor *state, struct ggml_tensor *out, float scale,
                                                       float max_bias, float softcap);

#ifdef __cplusplus
}
#endif

#endif /* FLASHSTATE_GGML_H */
