/*
 * flashstate — exact segmented attention with carried softmax state.
 *
 * The C API. SPEC.md (the contract) fixes the names of section 6; everything else here is ours and may still
 * grow before 1.0 — in particular fst_attn_params gains fields: always start from fst_attn_default_params().
 *
 * Conventions: tensors are ggml-style views (type, ne[4], nb[4] in bytes, data owned by the caller).
 * Every function validates all of its arguments before it writes anything; on failure it returns a status
 * other than FST_OK, leaves every output byte untouched, and fst_last_error() describes the problem
 * (naming the tensor, the dimension, the expected and the actual value).
 * Thread safety: every function may be called from any number of threads at once, provided that no two calls
 * write the same state/out memory. fst_last_error() is per thread. An attention call with n_threads != 1 runs on
 * the calling thread plus a process-wide pool of worker threads created once, on first use; the pool serves one
 * call at a time, and a call that finds it busy runs on its own thread alone. Results never depend on the number
 * of threads (nor on ith/nth in the _part entries): the work is cut, and partial results merged, in an order fixed
 * by the problem. In steady state (same shapes as an earlier call on the same thread) a call allocates no memory.
 */
#ifndef FLASHSTATE_FLASHSTATE_H
#define FLASHSTATE_FLASHSTATE_H

#include <stddef.h>
#include <stdint.h>

#define FLASHSTATE_VERSION_MAJOR 0
#define FLASHSTATE_VERSION_MINOR 1
#define FLASHSTATE_VERSION_PATCH 0
#define FLASHSTATE_VERSION_STRING "0.1.0"

#if defined(_WIN32) && defined(FLASHSTATE_SHARED)
#  if defined(FLASHSTATE_BUILDING)
#    define FST_API __declspec(dllexport)
#  else
#    define FST_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__)
#  define FST_API __attribute__((visibility("default")))
#else
#  define FST_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fst_status {
    FST_OK = 0,
    FST_ERR_INVALID_ARGUMENT,
    FST_ERR_UNSUPPORTED,
    FST_ERR_OUT_OF_MEMORY,
    FST_ERR_IO,
    FST_ERR_CORRUPT,
    FST_ERR_DISTRIBUTED
} fst_status;

/* Same numeric values as ggml_type, so a ggml tensor's type field converts by cast. */
typedef enum fst_type {
    FST_TYPE_F32 = 0,
    FST_TYPE_F16 = 1,
    FST_TYPE_Q4_0 = 2,
    FST_TYPE_Q8_0 = 8,
    FST_TYPE_I32 = 26, /* positions only (fst_attn_params.q_pos / kv_pos) */
    FST_TYPE_BF16 = 30
} fst_type;

typedef struct fst_tensor {
    fst_type type;
    int64_t ne[4]; /* extents, ne[0] innermost */
    size_t nb[4];  /* byte strides; nb[0] = element size, or block size for Q8_0 (34) / Q4_0 (18) */
    void *data;
} fst_tensor;

/* Which kernel family runs. AUTO picks the best this CPU has; a named level is an upper bound (a CPU without it
 * runs the best level below). The environment variable FLASHSTATE_ISA=portable|avx2|avx512 lowers AUTO. */
typedef enum fst_isa { FST_ISA_AUTO = 0, FST_ISA_PORTABLE = 1, FST_ISA_AVX2 = 2, FST_ISA_AVX512 = 3 } fst_isa;

/* FST_PRECISION_EXACT: F32 logits, max, sum and accumulator; K/V converted exactly as stored (SPEC section 4). */
typedef enum fst_precision { FST_PRECISION_EXACT = 0 } fst_precision;

/* Masks that are never materialized (SPEC section 3), defined by token positions. */
typedef enum fst_virtual_mask {
    FST_MASK_NONE = 0,
    FST_MASK_CAUSAL = 1,          /* hide key j when pos_k(j) > pos_q(r) */
    FST_MASK_SLIDING_WINDOW = 2   /* causal, and also hide key j when pos_q(r) - pos_k(j) >= window */
} fst_virtual_mask;

typedef struct fst_attn_params {
    float scale, max_bias, softcap; /* as ggml_flash_attn_ext; softcap 0 = off, max_bias 0 = no ALiBi */

    /* Virtual mask. Positions: query row r has position q_pos0 + r, key j of this segment kv_pos0 + j,
     * unless an explicit I32 position tensor is given:
     *   q_pos  [n_q, m]  with n_seq % m == 0; sequence s reads column s % m
     *   kv_pos [n_kv, m] with n_seq % m == 0; sequence s reads column s % m
     * Combines with a mask tensor (both apply). */
    fst_virtual_mask virtual_mask;
    int64_t window;                /* FST_MASK_SLIDING_WINDOW only; >= 1 */
    int64_t q_pos0, kv_pos0;
    const fst_tensor *q_pos;       /* nullable */
    const fst_tensor *kv_pos;      /* nullable */

    int32_t n_threads;             /* 0 = every hardware thread */
    fst_isa isa;
    fst_precision precision;
} fst_attn_params;

/* scale 1, max_bias 0, softcap 0, no virtual mask, every hardware thread, the best ISA, exact precision. */
FST_API fst_attn_params fst_attn_default_params(void);

/* The empty state: M = -inf, S = 0 in state [2, n_head, n_q, n_seq]; O = 0 in out [DV, n_head, n_q, n_seq]. */
FST_API fst_status fst_state_init(fst_tensor *state, fst_tensor *out);

/* (state, out) ⊕= attention of q over this KV segment (and the sinks, when given, exactly once).
 *   q     [D, n_q, n_head, n_seq]          F32, F16, BF16
 *   k     [D, n_kv, n_head_kv, n_seq_kv]   F32, F16, BF16, Q8_0, Q4_0
 *   v     [DV, n_kv, n_head_kv, n_seq_kv]  same types, independently of k
 *   mask  [n_kv, >= n_q, m2, m3]           F16, F32; n_head % m2 == 0, n_seq % m3 == 0 (nullable)
 *   sinks [n_head]                         F32 (nullable)
 *   state [2, n_head, n_q, n_seq] F32; out [DV, n_head, n_q, n_seq] F32. */
FST_API fst_status fst_attn_with_state(const fst_attn_params *p, const fst_tensor *q, const fst_tensor *k,
                                       const fst_tensor *v, const fst_tensor *mask, const fst_tensor *sinks,
                                       fst_tensor *state, fst_tensor *out);

/* One KV segment of a multi-segment call: any K/V types, its own mask column range and positions. */
typedef struct fst_segment {
    const fst_tensor *k, *v;   /* [D, n_kv_i, n_head_kv, n_seq_kv], [DV, n_kv_i, n_head_kv, n_seq_kv]; n_kv_i may be 0 */
    const fst_tensor *mask;    /* nullable; [n_kv_i, >= n_q, m2, m3] */
    int64_t kv_pos0;           /* position of key 0 of this segment (virtual masks); replaces params->kv_pos0 */
    const fst_tensor *kv_pos;  /* nullable I32 [n_kv_i, m]; replaces params->kv_pos */
} fst_segment;

/* (state, out) ⊕= segment 0 ⊕ segment 1 ⊕ ... ⊕ sinks: bit for bit the same as calling fst_attn_with_state on each
 * segment in order (sinks with the last), scheduled together in one call. params->kv_pos0 and kv_pos are ignored. */
FST_API fst_status fst_attn_segments(const fst_attn_params *p, const fst_tensor *q, const fst_segment *segments,
                                     int64_t n_segments, const fst_tensor *sinks, fst_tensor *state, fst_tensor *out);

/* Part ith of nth of the same call, on the calling thread only (for a host engine's own thread pool, e.g. ggml's
 * compute callbacks with their ith/nth): parts write disjoint rows, and all nth parts together produce exactly the bits
 * of the whole call, for any nth. p->n_threads is ignored. Every part validates the whole call, so either every part
 * fails (writing nothing) or none does. 0 <= ith < nth. */
FST_API fst_status fst_attn_with_state_part(const fst_attn_params *p, const fst_tensor *q, const fst_tensor *k,
                                            const fst_tensor *v, const fst_tensor *mask, const fst_tensor *sinks,
                                            fst_tensor *state, fst_tensor *out, int ith, int nth);
FST_API fst_status fst_attn_segments_part(const fst_attn_params *p, const fst_tensor *q, const fst_segment *segments,
                                          int64_t n_segments, const fst_tensor *sinks, fst_tensor *state,
                                          fst_tensor *out, int ith, int nth);

/* A paged KV cache (as vLLM's): K and V rows live in pages of page_keys keys, and a page table per KV sequence
 * lists its pages in key order. Key j of KV sequence s is row j % page_keys of page page_table[j / page_keys, s]. */
typedef struct fst_paged_kv {
    const fst_tensor *k, *v;       /* the pages: [D, page_keys, n_head_kv, n_pages], [DV, page_keys, n_head_kv, n_pages];
                                    * any K/V types; page_keys a power of two (1 for token-level pages) */
    const fst_tensor *page_table;  /* I32 [>= ceil(n_kv / page_keys), n_seq_kv], every entry used in [0, n_pages) */
    int64_t n_kv;                  /* keys of each KV sequence, 0 <= n_kv < 2^62 (a mask or positions hide some per row) */
} fst_paged_kv;

/* (state, out) ⊕= attention of q over the n_kv keys of each KV sequence's pages (and the sinks, once): bit for bit
 * fst_attn_with_state with the same keys copied into contiguous K/V [D, n_kv, n_head_kv, n_seq_kv], without the
 * copy. mask [n_kv, >= n_q, m2, m3], params->kv_pos0 and kv_pos as in fst_attn_with_state. (Pages as segments of
 * fst_attn_segments also work, but each segment is then a call's partial result, rounded and merged: 16-key pages
 * took twice the time of one contiguous call.) */
FST_API fst_status fst_attn_paged(const fst_attn_params *p, const fst_tensor *q, const fst_paged_kv *kv,
                                  const fst_tensor *mask, const fst_tensor *sinks, fst_tensor *state, fst_tensor *out);
FST_API fst_status fst_attn_paged_part(const fst_attn_params *p, const fst_tensor *q, const fst_paged_kv *kv,
                                       const fst_tensor *mask, const fst_tensor *sinks, fst_tensor *state,
                                       fst_tensor *out, int ith, int nth);

/* (state, out) ⊕= (other_state, other_out). Shapes must match; the two pairs must not overlap. */
FST_API fst_status fst_state_merge(fst_tensor *state, fst_tensor *out, const fst_tensor *other_state,
                                   const fst_tensor *other_out);

/* Merge one virtual key per head with logit sinks[h] and value zero. Call once per result. */
FST_API fst_status fst_state_add_sinks(const fst_tensor *sinks, fst_tensor *state, fst_tensor *out);

/* LSE = (M + ln S) / ln(base), -inf for the empty state. base is 2 or e (2.718281828f, tolerance 1e-6).
 * lse: F32 [n_head, n_q, n_seq]. */
FST_API fst_status fst_state_export_lse(const fst_tensor *state, float base, fst_tensor *lse);

/* state := (M = lse * ln(base), S = 1); out already holds the partner's normalized O. Rows whose LSE is -inf,
 * +inf or NaN import as the empty state, and their out rows are zeroed. */
FST_API fst_status fst_state_import_lse(const fst_tensor *lse, float base, fst_tensor *state, fst_tensor *out);

/* Message for the calling thread's last failed call ("" if none). Valid until that thread's next call. */
FST_API const char *fst_last_error(void);

/* ---- Beyond SPEC section 6 ---- */

FST_API const char *fst_version(void);           /* "MAJOR.MINOR.PATCH" of the library actually loaded */
FST_API const char *fst_status_name(fst_status); /* "FST_OK", "FST_ERR_INVALID_ARGUMENT", ... */
FST_API const char *fst_type_name(fst_type);     /* "f32", "f16", "q4_0", "q8_0", "i32", "bf16"; NULL if unknown */
FST_API int64_t fst_type_block_size(fst_type);   /* elements per block: 32 for Q8_0/Q4_0, 1 otherwise; 0 if unknown */
FST_API size_t fst_type_size(fst_type);          /* bytes per block: 34, 18, 4, 2; 0 if unknown */

/* A contiguous view of `data` with the given extents (unused trailing extents 1). ne[0] must be a multiple of
 * the block size. */
FST_API fst_tensor fst_tensor_contiguous(fst_type type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3,
                                         void *data);
/* Bytes spanned by a view (0 when any extent is 0). Does not validate: use on well-formed views. */
FST_API size_t fst_tensor_nbytes(const fst_tensor *t);

/* Convert n floats to type (F32, F16, BF16 round to nearest even; Q8_0 / Q4_0 with ggml's reference quantizer,
 * bit for bit; n a multiple of 32 for those) and back (exact). */
FST_API fst_status fst_quantize_row(fst_type type, const float *src, void *dst, int64_t n);
FST_API fst_status fst_dequantize_row(fst_type type, const void *src, float *dst, int64_t n);

/* The ISA that AUTO resolves to on this CPU (after FLASHSTATE_ISA), and a name for an ISA. */
FST_API fst_isa fst_isa_best(void);
FST_API const char *fst_isa_name(fst_isa);

/* ---- The mixed-precision FIFO KV cache (docs/cache.md) ----
 *
 * Per layer and KV head, tokens live in a chain of tiers: tiers[0] is the hot tier (F32 or F16), then one or more
 * cold tiers in RAM (Q8_0 or Q4_0), and optionally, last, a file-backed tier (any K/V type, memory-mapped).
 * Appends write to the hot tier; when a tier would exceed its capacity, its oldest tokens move to the next tier
 * first, migrate_chunk tokens at a time, converted with fst_quantize_row from what the tier before stored (so the
 * bytes are ggml's reference quantizer's). Tokens keep their positions (0, 1, 2, ... in append order, per layer),
 * so virtual masks stay exact after migration. The first n_keep tokens ever appended stay at the hot tier's type
 * and are never moved or evicted (attention sinks); with max_tokens > 0 the oldest other tokens are evicted once
 * more than max_tokens are held (StreamingLLM-style).
 * Concurrency: one writer per layer (append), any number of readers (attn, segments, stats, save) between appends;
 * the cache serializes them per layer with a readers-writer lock (a waiting appender goes before new readers), so
 * concurrent calls are safe, never torn. fst_cache_free must not overlap any other call on the cache. */

typedef struct fst_cache fst_cache; /* opaque */

#define FST_CACHE_MAX_TIERS 8

typedef struct fst_cache_tier {
    fst_type type;      /* hot: F32/F16; cold RAM: Q8_0/Q4_0; file-backed: F32/F16/BF16/Q8_0/Q4_0 */
    int64_t capacity;   /* most tokens this tier holds per layer; >= migrate_chunk before the last tier. 0 = unbounded
                         * (the last tier only; with max_tokens > 0 it then holds max_tokens - n_keep). A bounded last
                         * tier needs max_tokens > 0 and capacity >= max_tokens - n_keep. The hot tier may have
                         * capacity 0 when cold tiers follow: no hot window, tokens are converted straight to tiers[1].
                         * Any tier's storage is limited to 2^46 bytes per layer. */
    const char *path;   /* NULL: RAM; else this tier is the file at path, memory-mapped (the last tier only, not the
                         * hot one). The cache creates or truncates it, locks it (a second live cache on the same
                         * path fails with FST_ERR_IO) and deletes it on fst_cache_free: scratch, not a save. */
} fst_cache_tier;

typedef struct fst_cache_config {
    int32_t n_layer, n_head_kv;
    int64_t head_dim_k, head_dim_v;           /* D and DV (multiples of 32 when a tier is Q8_0 or Q4_0) */
    int32_t n_tiers;                          /* 1 .. FST_CACHE_MAX_TIERS; tiers[0] is the hot tier */
    fst_cache_tier tiers[FST_CACHE_MAX_TIERS];
    int64_t n_keep;                           /* first tokens kept at hot precision forever (0 = none) */
    int64_t max_tokens;                       /* 0 = unlimited; else (> n_keep) a layer holds at most max_tokens:
                                               * the oldest tokens after the n_keep ones are evicted first */
    int64_t migrate_chunk;                    /* tokens moved between tiers at once; >= 1 */
} fst_cache_config;

/* One layer's tier as the cache reports it. */
typedef struct fst_cache_tier_stats {
    fst_type type;
    int64_t n_tokens;  /* tokens held now (the n_keep tokens are reported as their own entry, see fst_cache_stats) */
    int64_t capacity;  /* tokens it can hold (a last tier sized by max_tokens reports that size); 0 = unbounded */
    size_t bytes;      /* bytes of K and V storage this tier holds allocated for this layer (RAM or file) */
} fst_cache_tier_stats;

/* 1 layer, 1 KV head, D = DV = 128, a 256-token F16 hot tier and an unbounded Q8_0 cold tier, migrate_chunk 32. */
FST_API fst_cache_config fst_cache_default_config(void);

FST_API fst_status fst_cache_create(const fst_cache_config *config, fst_cache **cache);
FST_API void fst_cache_free(fst_cache *cache); /* NULL is a no-op */
FST_API fst_status fst_cache_config_of(const fst_cache *cache, fst_cache_config *config); /* paths: the cache's */

/* Append n tokens to a layer: k [D, n, n_head_kv] and v [DV, n, n_head_kv], F32 or F16, any strides; n >= 1.
 * All or nothing: on failure the layer is unchanged. */
FST_API fst_status fst_cache_append(fst_cache *cache, int32_t layer, const fst_tensor *k, const fst_tensor *v);

/* Tokens a layer holds now, and the position the next appended token gets. */
FST_API fst_status fst_cache_n_tokens(const fst_cache *cache, int32_t layer, int64_t *n_tokens, int64_t *next_pos);

/* (state, out) ⊕= attention of q [D, n_q, n_head, 1] (n_head a multiple of n_head_kv) over every token the layer
 * holds, every tier a segment with its positions; sinks (nullable) merged once. p->kv_pos0 / kv_pos are ignored
 * (the cache knows its positions); virtual masks use p->q_pos0 / q_pos. state/out as in fst_attn_with_state. */
FST_API fst_status fst_cache_attn(fst_cache *cache, const fst_attn_params *p, int32_t layer, const fst_tensor *q,
                                  const fst_tensor *sinks, fst_tensor *state, fst_tensor *out);

/* The layer's contents as segments (views into the cache, oldest first; mask NULL, kv_pos0 set), for callers that
 * schedule attention themselves. *n_segments is set to the number needed; when it is <= capacity they are written,
 * their k/v pointing into `views` (2 * capacity tensors), else nothing is written (capacity 0 with NULL arrays asks
 * for the count). The views stay valid until the next append to this layer or fst_cache_free; the caller must not
 * append meanwhile. */
FST_API fst_status fst_cache_segments(fst_cache *cache, int32_t layer, fst_segment *segments, fst_tensor *views,
                                      int64_t capacity, int64_t *n_segments);

/* Per tier of a layer: stats[0] is the hot tier, stats[i] tier i, and stats[n_tiers] the n_keep region; bytes are
 * what each has allocated for this layer (K and V of every KV head, RAM or file). */
FST_API fst_status fst_cache_stats(const fst_cache *cache, int32_t layer, fst_cache_tier_stats *stats,
                                   int32_t n_stats /* must be n_tiers + 1 */);

/* The whole cache to one file (versioned header, CRC-32 per section; crash-safe: temporary file in the same
 * directory, fsync, rename, fsync of the directory), and back: the loaded cache holds the same bytes in the same
 * slots, so it attends bit for bit like the saved one. load: file_tier_path (nullable) is where the loaded cache
 * puts its file-backed tier, if it has one; NULL = the path it was saved with. A missing or unreadable file is
 * FST_ERR_IO; a truncated or corrupted one FST_ERR_CORRUPT; another format version FST_ERR_UNSUPPORTED. */
FST_API fst_status fst_cache_save(const fst_cache *cache, const char *path);
FST_API fst_status fst_cache_load(const char *path, const char *file_tier_path, fst_cache **cache);

#ifdef __cplusplus
}
#endif

#endif /* FLASHSTATE_FLASHSTATE_H */
