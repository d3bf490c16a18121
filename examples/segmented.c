/* Segmented attention with the C API: a KV range in three parts of different storage, one of them computed
 * independently and merged, the sinks merged once - then checked against a single call over the whole range.
 * Shapes: q [D, N_Q, N_HEAD], K/V [D, n_kv, N_HEAD_KV], state [2, N_HEAD, N_Q], out [D, N_HEAD, N_Q]. */
#include <flashstate/flashstate.h>

#include <math.h>
#include <stdio.h>

enum { D = 64, N_HEAD = 4, N_HEAD_KV = 2, N_Q = 2, N_A = 32, N_B = 32, N_C = 16, N_KV = N_A + N_B + N_C };

#define CHECK(call)                                                                                                \
    do {                                                                                                           \
        if ((call) != FST_OK) {                                                                                    \
            fprintf(stderr, "%s failed: %s\n", #call, fst_last_error());                                           \
            return 1;                                                                                              \
        }                                                                                                          \
    } while (0)

static float q[N_HEAD * N_Q * D], k[N_HEAD_KV * N_KV * D], v[N_HEAD_KV * N_KV * D], sinks[N_HEAD];
static unsigned char k_a[N_HEAD_KV * N_A * (D / 32) * 34], v_a[N_HEAD_KV * N_A * (D / 32) * 34]; /* Q8_0 */
static unsigned char k_b[N_HEAD_KV * N_B * D * 2], v_b[N_HEAD_KV * N_B * D * 2];                 /* F16 */

static float uniform(unsigned *seed) { /* in [-1, 1) */
    *seed = *seed * 1664525u + 1013904223u;
    return (float)(*seed >> 8) / 8388608.0f - 1.0f;
}

/* Stores tokens [first, first + n) of the dense F32 cache x [D, N_KV, N_HEAD_KV] as `type` into dst, returns a
 * view of them, and writes the stored values back into x so that the final check compares like with like. */
static fst_tensor store(fst_type type, float *x, int first, int n, unsigned char *dst) {
    size_t row = fst_type_size(type) * (size_t)(D / fst_type_block_size(type));
    for (int g = 0; g < N_HEAD_KV; ++g)
        for (int j = 0; j < n; ++j) {
            float *dense = x + ((size_t)g * N_KV + (size_t)(first + j)) * D;
            unsigned char *stored = dst + ((size_t)g * n + (size_t)j) * row;
            fst_quantize_row(type, dense, stored, D);
            fst_dequantize_row(type, stored, dense, D);
        }
    return fst_tensor_contiguous(type, D, n, N_HEAD_KV, 1, dst);
}

/* Tokens [first, first + n) of a view: the same strides with a smaller ne[1]. */
static fst_tensor segment(fst_tensor t, int first, int n) {
    t.data = (unsigned char *)t.data + (size_t)first * t.nb[1];
    t.ne[1] = n;
    return t;
}

int main(void) {
    unsigned seed = 1;
    for (int i = 0; i < N_HEAD * N_Q * D; ++i) q[i] = 2.0f * uniform(&seed);
    for (int i = 0; i < N_HEAD_KV * N_KV * D; ++i) k[i] = uniform(&seed), v[i] = uniform(&seed);
    for (int h = 0; h < N_HEAD; ++h) sinks[h] = uniform(&seed);

    fst_attn_params p = fst_attn_default_params(); /* always start from the defaults: the struct may grow */
    p.scale = 1.0f / sqrtf((float)D);

    fst_tensor qt = fst_tensor_contiguous(FST_TYPE_F32, D, N_Q, N_HEAD, 1, q);
    fst_tensor st = fst_tensor_contiguous(FST_TYPE_F32, N_HEAD, 1, 1, 1, sinks);
    fst_tensor k_all = fst_tensor_contiguous(FST_TYPE_F32, D, N_KV, N_HEAD_KV, 1, k);
    fst_tensor v_all = fst_tensor_contiguous(FST_TYPE_F32, D, N_KV, N_HEAD_KV, 1, v);

    /* The cache: tokens 0..31 stored as Q8_0, 32..63 as F16, 64..79 kept as F32 (a view of the dense cache). */
    fst_tensor ka = store(FST_TYPE_Q8_0, k, 0, N_A, k_a), va = store(FST_TYPE_Q8_0, v, 0, N_A, v_a);
    fst_tensor kb = store(FST_TYPE_F16, k, N_A, N_B, k_b), vb = store(FST_TYPE_F16, v, N_A, N_B, v_b);
    fst_tensor kc = segment(k_all, N_A + N_B, N_C), vc = segment(v_all, N_A + N_B, N_C);

    /* Sequential: the empty state, then one segment after the other. */
    float state[2 * N_HEAD * N_Q], out[D * N_HEAD * N_Q];
    fst_tensor s = fst_tensor_contiguous(FST_TYPE_F32, 2, N_HEAD, N_Q, 1, state);
    fst_tensor o = fst_tensor_contiguous(FST_TYPE_F32, D, N_HEAD, N_Q, 1, out);
    CHECK(fst_state_init(&s, &o));
    CHECK(fst_attn_with_state(&p, &qt, &ka, &va, NULL, NULL, &s, &o));
    CHECK(fst_attn_with_state(&p, &qt, &kb, &vb, NULL, NULL, &s, &o));

    /* Parallel: a partial computed on its own (another thread, device or machine), then merged in. */
    float state_c[2 * N_HEAD * N_Q], out_c[D * N_HEAD * N_Q];
    fst_tensor sc = fst_tensor_contiguous(FST_TYPE_F32, 2, N_HEAD, N_Q, 1, state_c);
    fst_tensor oc = fst_tensor_contiguous(FST_TYPE_F32, D, N_HEAD, N_Q, 1, out_c);
    CHECK(fst_state_init(&sc, &oc));
    CHECK(fst_attn_with_state(&p, &qt, &kc, &vc, NULL, NULL, &sc, &oc));
    CHECK(fst_state_merge(&s, &o, &sc, &oc));

    /* Sinks: one virtual key per head, merged exactly once per result. */
    CHECK(fst_state_add_sinks(&st, &s, &o));

    /* The same result from one call over the whole range (the stored values, as F32) with the sinks. */
    float state_1[2 * N_HEAD * N_Q], out_1[D * N_HEAD * N_Q];
    fst_tensor s1 = fst_tensor_contiguous(FST_TYPE_F32, 2, N_HEAD, N_Q, 1, state_1);
    fst_tensor o1 = fst_tensor_contiguous(FST_TYPE_F32, D, N_HEAD, N_Q, 1, out_1);
    CHECK(fst_state_init(&s1, &o1));
    CHECK(fst_attn_with_state(&p, &qt, &k_all, &v_all, NULL, &st, &s1, &o1));

    float max_diff = 0.0f, max_ref = 0.0f;
    for (int i = 0; i < D * N_HEAD * N_Q; ++i) {
        if (isnan(out[i]) || isnan(out_1[i])) {
            fprintf(stderr, "NaN at out[%d]: segmented %f, one call %f\n", i, out[i], out_1[i]);
            return 1;
        }
        max_diff = fmaxf(max_diff, fabsf(out[i] - out_1[i]));
        max_ref = fmaxf(max_ref, fabsf(out_1[i]));
    }
    float error = max_diff / fmaxf(1e-6f, max_ref);
    printf("flashstate %s: out[0..3] = %.6f %.6f %.6f %.6f; segmented vs one call: %.2e\n", fst_version(), out[0],
           out[1], out[2], out[3], error);
    return error <= 4e-6f ? 0 : 1; /* SPEC section 4: segmented vs unsegmented */
}
