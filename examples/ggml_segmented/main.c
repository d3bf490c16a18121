/*
 * The original scenario, end to end: a KV cache held in ggml tensors, the older tokens in Q8_0 and the recent
 * ones in F16, attended segment by segment (ggml_view_4d views) through fst_ggml_flash_attn_ext_with_state inside
 * a ggml graph; then ggml's own ggml_flash_attn_ext over the whole cache (as F32 holding exactly the stored
 * values, since one ggml op reads one K type) and a double-precision reference. Prints both errors and the time of
 * each; exits 1 if ours is outside flashstate's 2e-6 bound.
 */
#include <flashstate/ggml.h>
#include <ggml-cpu.h>
#include <ggml.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { D = 128, N_HEAD = 8, N_HEAD_KV = 2, N_Q = 4, N_OLD = 3072, N_RECENT = 1024, N_KV = N_OLD + N_RECENT,
       SEGMENT = 1024, N_THREADS = 2, REPEATS = 5 };

static uint64_t rng_state = 42;
static float uniform(void) { /* xorshift64*, in [-1, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (float)((rng_state * 2685821657736338717ull) >> 40) / (float)(1 << 23) - 1.0f;
}

static char *row_of(const struct ggml_tensor *t, int64_t i1, int64_t i2) {
    return (char *)t->data + i1 * t->nb[1] + i2 * t->nb[2];
}

/* Random rows stored in t's type (flashstate's converter quantizes Q8_0 exactly as ggml's reference does). */
static void fill(struct ggml_tensor *t, float amplitude) {
    float row[D];
    for (int64_t h = 0; h < t->ne[2]; ++h)
        for (int64_t j = 0; j < t->ne[1]; ++j) {
            for (int i = 0; i < t->ne[0]; ++i) row[i] = amplitude * uniform();
            fst_quantize_row((fst_type)t->type, row, row_of(t, j, h), t->ne[0]);
        }
}

/* Rows [j0, j0 + part->ne[1]) of all as the exact floats part stores. */
static void decode_into(struct ggml_tensor *all, int64_t j0, const struct ggml_tensor *part) {
    for (int64_t h = 0; h < part->ne[2]; ++h)
        for (int64_t j = 0; j < part->ne[1]; ++j)
            fst_dequantize_row((fst_type)part->type, row_of(part, j, h), (float *)row_of(all, j0 + j, h), part->ne[0]);
}

static double now_ms(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Mean wall time of one compute of the graph, in ms. */
static double time_graph(struct ggml_context *ctx, struct ggml_cgraph *graph) {
    double t0 = now_ms();
    for (int i = 0; i < REPEATS; ++i) ggml_graph_compute_with_ctx(ctx, graph, N_THREADS);
    return (now_ms() - t0) / REPEATS;
}

/* Query row r sits at position N_KV - N_Q + r and sees keys j <= its position. */
static int visible(int64_t r, int64_t j) { return j <= N_KV - N_Q + r; }

/* max |out - ref| / max |ref| over out [D, N_HEAD, N_Q] (ggml's permuted layout). */
static double rel_error(const struct ggml_tensor *out, const double *ref) {
    double diff = 0, norm = 0;
    for (int64_t r = 0; r < N_Q; ++r)
        for (int64_t h = 0; h < N_HEAD; ++h)
            for (int c = 0; c < D; ++c) {
                double x = ((const float *)row_of(out, h, r))[c], y = ref[(r * N_HEAD + h) * D + c];
                diff = fmax(diff, fabs(x - y));
                norm = fmax(norm, fabs(y));
            }
    return diff / norm;
}

/* Softmax attention in double over the stored values, one row at a time. */
static void reference(const struct ggml_tensor *q, const struct ggml_tensor *k, const struct ggml_tensor *v,
                      float scale, double *ref) {
    static double logits[N_KV];
    for (int64_t r = 0; r < N_Q; ++r)
        for (int64_t h = 0; h < N_HEAD; ++h) {
            const int64_t hk = h / (N_HEAD / N_HEAD_KV);
            const float *qr = (const float *)row_of(q, r, h);
            double max = -INFINITY, sum = 0, *o = ref + (r * N_HEAD + h) * D;
            for (int64_t j = 0; j < N_KV; ++j) {
                const float *kr = (const float *)row_of(k, j, hk);
                double dot = 0;
                for (int i = 0; i < D; ++i) dot += (double)qr[i] * kr[i];
                logits[j] = visible(r, j) ? scale * dot : -INFINITY;
                max = fmax(max, logits[j]);
            }
            memset(o, 0, D * sizeof *o);
            for (int64_t j = 0; j < N_KV; ++j) {
                if (logits[j] == -INFINITY) continue;
                const double w = exp(logits[j] - max);
                const float *vr = (const float *)row_of(v, j, hk);
                sum += w;
                for (int c = 0; c < D; ++c) o[c] += w * vr[c];
            }
            for (int c = 0; c < D; ++c) o[c] /= sum;
        }
}

int main(void) {
    struct ggml_init_params params = {256u << 20, NULL, false};
    struct ggml_context *ctx = ggml_init(params);
    const float scale = 1.0f / sqrtf((float)D);

    /* The cache: older tokens Q8_0, recent ones F16; a causal F16 mask over all of it. */
    struct ggml_tensor *q = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, N_Q, N_HEAD, 1);
    struct ggml_tensor *k_old = ggml_new_tensor_4d(ctx, GGML_TYPE_Q8_0, D, N_OLD, N_HEAD_KV, 1);
    struct ggml_tensor *v_old = ggml_new_tensor_4d(ctx, GGML_TYPE_Q8_0, D, N_OLD, N_HEAD_KV, 1);
    struct ggml_tensor *k_new = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, D, N_RECENT, N_HEAD_KV, 1);
    struct ggml_tensor *v_new = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, D, N_RECENT, N_HEAD_KV, 1);
    struct ggml_tensor *mask = ggml_new_tensor_4d(ctx, GGML_TYPE_F16, N_KV, N_Q, 1, 1);
    fill(q, 4.0f);
    fill(k_old, 1.0f);
    fill(v_old, 1.0f);
    fill(k_new, 1.0f);
    fill(v_new, 1.0f);
    for (int64_t r = 0; r < N_Q; ++r)
        for (int64_t j = 0; j < N_KV; ++j) ((ggml_fp16_t *)row_of(mask, r, 0))[j] = ggml_fp32_to_fp16(visible(r, j) ? 0.0f : -INFINITY);

    /* Ours: state and out carried through one node per segment of at most SEGMENT keys. */
    struct ggml_tensor *state = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, 2, N_HEAD, N_Q, 1);
    struct ggml_tensor *out = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, N_HEAD, N_Q, 1);
    struct ggml_tensor *cur = fst_ggml_state_init(ctx, state, out);
    int n_segments = 0;
    for (int64_t j0 = 0; j0 < N_KV; j0 += SEGMENT, ++n_segments) {
        struct ggml_tensor *k = j0 < N_OLD ? k_old : k_new, *v = j0 < N_OLD ? v_old : v_new;
        const int64_t first = j0 < N_OLD ? j0 : j0 - N_OLD; /* row in its own cache tensor */
        struct ggml_tensor *k_seg = ggml_view_4d(ctx, k, D, SEGMENT, N_HEAD_KV, 1, k->nb[1], k->nb[2], k->nb[3], first * k->nb[1]);
        struct ggml_tensor *v_seg = ggml_view_4d(ctx, v, D, SEGMENT, N_HEAD_KV, 1, v->nb[1], v->nb[2], v->nb[3], first * v->nb[1]);
        /* The mask is viewed over the same keys: its columns j0 .. j0 + SEGMENT. */
        struct ggml_tensor *mask_seg = ggml_view_4d(ctx, mask, SEGMENT, N_Q, 1, 1, mask->nb[1], mask->nb[2], mask->nb[3],
                                                    j0 * mask->nb[0]);
        cur = fst_ggml_flash_attn_ext_with_state(ctx, q, k_seg, v_seg, mask_seg, NULL, state, cur, scale, 0.0f, 0.0f);
        if (cur == NULL) {
            fprintf(stderr, "segment at %lld: %s\n", (long long)j0, fst_last_error());
            return 1;
        }
    }
    struct ggml_cgraph *ours_graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(ours_graph, cur);
    const double ours_ms = time_graph(ctx, ours_graph);

    /* ggml: one flash_attn_ext over the whole cache, as F32 holding the stored values. */
    struct ggml_tensor *k_all = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, N_KV, N_HEAD_KV, 1);
    struct ggml_tensor *v_all = ggml_new_tensor_4d(ctx, GGML_TYPE_F32, D, N_KV, N_HEAD_KV, 1);
    decode_into(k_all, 0, k_old);
    decode_into(k_all, N_OLD, k_new);
    decode_into(v_all, 0, v_old);
    decode_into(v_all, N_OLD, v_new);
    struct ggml_tensor *ggml_out = ggml_flash_attn_ext(ctx, q, k_all, v_all, mask, scale, 0.0f, 0.0f);
    ggml_flash_attn_ext_set_prec(ggml_out, GGML_PREC_F32);
    struct ggml_cgraph *ggml_graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(ggml_graph, ggml_out);
    const double ggml_ms = time_graph(ctx, ggml_graph);

    static double ref[N_Q * N_HEAD * D];
    double t0 = now_ms();
    reference(q, k_all, v_all, scale, ref);
    const double ref_ms = now_ms() - t0;

    const double ours_err = rel_error(out, ref), ggml_err = rel_error(ggml_out, ref);
    printf("KV cache: %d keys (%d Q8_0 + %d F16), D = %d, %d heads over %d KV heads, %d queries, %d threads\n", N_KV,
           N_OLD, N_RECENT, D, N_HEAD, N_HEAD_KV, N_Q, N_THREADS);
    printf("flashstate op, %d segments: error vs double reference %.2e (bound 2e-6), %.3f ms\n", n_segments, ours_err,
           ours_ms);
    printf("ggml_flash_attn_ext, whole cache as F32: error vs double reference %.2e, %.3f ms\n", ggml_err, ggml_ms);
    printf("double reference: %.1f ms\n", ref_ms);
    ggml_free(ctx);
    return ours_err <= 2e-6 ? 0 : 1;
}
