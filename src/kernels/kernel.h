// The kernel interface: what every ISA implements. Kernels see only validated, planned work; they never fail,
// allocate or read anything outside the rows they are given.
#pragma once

#include <flashstate/flashstate.h>

#include <cstddef>
#include <cstdint>

namespace fst::kernels {

// Keys a kernel call covers at most: the leaves of the fixed merge tree (see attention/plan.h). 1024 rather than
// 256: a quarter of the per-chunk bookkeeping (normalize, push into the tree) and K/V read in runs of 1024 rows;
// decode from DRAM 5-13 % faster (Zen 5, 2 threads, both builds interleaved in one process; docs/PERFORMANCE.md).
constexpr int64_t kChunkKeys = 1024;

// Attend n_rows query rows (F32, already converted) to the keys [0, n_keys) of one KV head and sequence.
// Row i sees key j when lo[i] <= j < hi[i] and bias (if any) is not -inf there.
// Output per row: the chunk's own unnormalized state m (max logit, -inf if nothing visible), s = sum exp(x - m),
// acc = sum exp(x - m) * v. A hidden key contributes nothing to a row, and its K/V bytes do not affect that row's
// output, even if they hold NaN.
struct ChunkArgs {
    int64_t D = 0, DV = 0;
    float scale = 1.0f, softcap = 0.0f;
    fst_type k_type{}, v_type{};
    const unsigned char *k = nullptr; // row of key 0 of the chunk
    const unsigned char *v = nullptr;
    size_t k_stride = 0, v_stride = 0; // bytes between consecutive keys
    // Paged rows (fst_attn_paged, pages shorter than a chunk): key j at k_pages[j >> page_shift] +
    // (j mod 2^page_shift) * k_stride, V likewise, for j < paged_keys (the chunk's keys and some after them, which
    // the kernels prefetch). nullptr: key j at k + j * k_stride. Use k_row / v_row.
    const unsigned char *const *k_pages = nullptr, *const *v_pages = nullptr;
    int page_shift = 0;
    int64_t paged_keys = 0;
    int64_t n_keys = 0;                // 1..kChunkKeys
    int64_t n_rows = 0;
    const float *q = nullptr;    // n_rows x D, row stride D
    const int32_t *lo = nullptr, *hi = nullptr; // n_rows each: the visible key range (from the virtual mask)
    const float *bias = nullptr; // n_rows x n_keys (row stride bias_stride; 0: one row all rows share), added after
                                 // softcap; nullptr = all zero
    int64_t bias_stride = 0;
    float *m = nullptr, *s = nullptr; // n_rows each
    float *acc = nullptr;             // n_rows x DV, row stride DV
    float *scratch = nullptr;         // scratch_floats(D, DV, n_rows) floats owned by the calling thread
    bool same_q = false;              // q and scratch are those of the previous call on this thread (the next chunk
                                      // of the same rows): a kernel may reuse what it derived from q
};

inline const unsigned char *paged_row(const unsigned char *const *pages, int shift, size_t stride, int64_t j) {
    return pages[j >> shift] + size_t(j & ((int64_t(1) << shift) - 1)) * stride;
}
// The K and V rows of key j of a chunk.
inline const unsigned char *k_row(const ChunkArgs &a, int64_t j) {
    return a.k_pages ? paged_row(a.k_pages, a.page_shift, a.k_stride, j) : a.k + size_t(j) * a.k_stride;
}
inline const unsigned char *v_row(const ChunkArgs &a, int64_t j) {
    return a.v_pages ? paged_row(a.v_pages, a.page_shift, a.v_stride, j) : a.v + size_t(j) * a.v_stride;
}

// Chunks one attend_chunks call takes at most.
constexpr int kMaxBatchChunks = 16;

// Consecutive chunks of the same rows that the planner may hand to one attend_chunks call (each keeping its own
// state, so the results are those of one call per chunk): the kernels then read K and V in runs of up to
// kSpanChunks * kChunkKeys rows, which this Zen 5 streams faster than runs of one chunk (docs/PERFORMANCE.md).
constexpr int kSpanChunks = 4;
static_assert(kSpanChunks <= kMaxBatchChunks);

struct KernelTable {
    fst_isa isa;
    const char *name;
    void (*attend_chunk)(const ChunkArgs &);
    // n <= kMaxBatchChunks chunks of the same rows (n_rows, q, D, DV, scale, softcap), each with its own keys,
    // visibility, bias and m/s/acc: the results of attend_chunk on each, in one pass where the kernel can.
    void (*attend_chunks)(const ChunkArgs *chunks, int n);
    size_t (*scratch_floats)(int64_t D, int64_t DV, int64_t n_rows);
    bool (*supports)(int64_t D, int64_t DV); // shapes this table's kernels handle; others run the portable kernel
    void (*exp_array)(const float *x, float *y, int64_t n); // the kernels' e^x, exposed so tests can measure it
    void (*tanh_array)(const float *x, float *y, int64_t n); // the kernels' tanh (logit softcap), the same for tests
    void (*f16_row_to_f32)(const void *x, float *y, int64_t n); // exact widening (F16 masks, per tile and chunk)
    // y = a * y + b * x rounded as written (two products, one sum, no FMA): the O update of ⊕ (state/merge.h),
    // vectorized for the calls that merge many short segments' results.
    void (*combine_rows)(float *y, float a, const float *x, float b, int64_t n);
    void (*scale_row)(const float *x, float a, float *y, int64_t n); // y = a * x (a partial's O = acc / s); y may be x
};

// How far ahead the decode kernels prefetch K/V rows (in keys: rows of F32/F16/BF16, rows of Q8_0/Q4_0) and into
// which cache level: L1 (prefetcht0) or L2 (prefetcht2). Chosen once per process for the CPU (dispatch.cpp).
struct PrefetchTuning {
    int64_t keys_wide = 12, keys_quantized = 16;
    bool to_l1 = false;
};
const PrefetchTuning &prefetch_tuning();

// The table for an ISA request (AUTO: the best this CPU has, lowered by FLASHSTATE_ISA). Never fails: a level the
// CPU or build lacks falls back to the best one below it.
const KernelTable &select_kernels(fst_isa requested);
fst_isa best_isa();

// Per-ISA tables (each defined in its own folder). The SIMD tables return nullptr from attend_chunk's selector when
// a shape is outside what they handle (see supports), and the caller then uses the portable kernel.
const KernelTable &portable_kernels();
const KernelTable &avx2_kernels();
const KernelTable &avx512_kernels();

} // namespace fst::kernels
