// flashstate — the thin C++ layer over the C API (flashstate.h). Header-only; C++17 or later.
//
// Every C entry point has two forms here:
//   flashstate::attn_with_state(...)      throws flashstate::Error on failure
//   flashstate::try_attn_with_state(...)  returns a flashstate::Status instead (never throws)
// Exceptions exist only on this side: the library itself is C and reports through fst_status + fst_last_error().
//
// Params wraps fst_attn_params and always starts from fst_attn_default_params(), which matters because the
// struct may still gain fields before 1.0. View makes fst_tensor views over memory the caller owns.
#ifndef FLASHSTATE_FLASHSTATE_HPP
#define FLASHSTATE_FLASHSTATE_HPP

#include <flashstate/flashstate.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace flashstate {

// The two bases SPEC section 2 allows for log-sum-exp import/export.
inline constexpr float lse_base_e = 2.718281828f;
inline constexpr float lse_base_2 = 2.0f;

// The outcome of one call: a code and, on failure, the library's message (copied, because fst_last_error()
// is only valid until the thread's next call).
class Status {
public:
    Status() = default; // FST_OK
    Status(fst_status code, std::string message) : code_(code), message_(std::move(message)) {}

    // The status of a C call that just returned `code`, with the calling thread's message when it failed.
    static Status from_call(fst_status code) {
        if (code == FST_OK) return Status();
        const char *message = fst_last_error();
        return Status(code, message ? message : "");
    }

    bool ok() const noexcept { return code_ == FST_OK; }
    explicit operator bool() const noexcept { return ok(); }
    fst_status code() const noexcept { return code_; }
    const std::string &message() const noexcept { return message_; }
    // "FST_OK", "FST_ERR_INVALID_ARGUMENT", ...
    const char *name() const noexcept { return fst_status_name(code_); }

private:
    fst_status code_ = FST_OK;
    std::string message_;
};

// Thrown by the throwing forms. what() is the library's message; status() the C status code.
class Error : public std::runtime_error {
public:
    explicit Error(const Status &s)
        : std::runtime_error(s.message().empty() ? std::string(s.name() ? s.name() : "flashstate error")
                                                 : s.message()),
          status_(s.code()) {}
    fst_status status() const noexcept { return status_; }

private:
    fst_status status_;
};

namespace detail {
inline void throw_if_failed(const Status &s) {
    if (!s.ok()) throw Error(s);
}
} // namespace detail

// fst_attn_params with chainable setters, e.g. Params().scale(0.125f).causal(q_pos0, kv_pos0).threads(4).
// Starts from fst_attn_default_params(): scale 1, no ALiBi, no softcap, no virtual mask, every hardware thread,
// the best ISA, the exact precision mode.
class Params {
public:
    Params() : p_(fst_attn_default_params()) {}
    explicit Params(const fst_attn_params &p) : p_(p) {}

    Params &scale(float v) { p_.scale = v; return *this; }
    Params &max_bias(float v) { p_.max_bias = v; return *this; }
    Params &softcap(float v) { p_.softcap = v; return *this; }

    // Virtual masks (SPEC section 3): query row r sits at q_pos0 + r, key j of the segment at kv_pos0 + j.
    Params &no_virtual_mask() { p_.virtual_mask = FST_MASK_NONE; return *this; }
    Params &causal(int64_t q_pos0, int64_t kv_pos0) {
        p_.virtual_mask = FST_MASK_CAUSAL;
        p_.q_pos0 = q_pos0;
        p_.kv_pos0 = kv_pos0;
        return *this;
    }
    Params &sliding_window(int64_t window, int64_t q_pos0, int64_t kv_pos0) {
        p_.virtual_mask = FST_MASK_SLIDING_WINDOW;
        p_.window = window;
        p_.q_pos0 = q_pos0;
        p_.kv_pos0 = kv_pos0;
        return *this;
    }
    // The segment's first key position changes from one segment to the next; the query positions do not.
    Params &q_pos0(int64_t v) { p_.q_pos0 = v; return *this; }
    Params &kv_pos0(int64_t v) { p_.kv_pos0 = v; return *this; }
    // Explicit I32 position tensors (nullable); the tensors must outlive every call made with these params.
    Params &positions(const fst_tensor *q_pos, const fst_tensor *kv_pos) {
        p_.q_pos = q_pos;
        p_.kv_pos = kv_pos;
        return *this;
    }

    Params &threads(int32_t n) { p_.n_threads = n; return *this; } // 0 = every hardware thread
    Params &isa(fst_isa v) { p_.isa = v; return *this; }
    Params &precision(fst_precision v) { p_.precision = v; return *this; }

    const fst_attn_params &c() const noexcept { return p_; }
    fst_attn_params &c() noexcept { return p_; }
    operator const fst_attn_params &() const noexcept { return p_; }

private:
    fst_attn_params p_;
};

// fst_tensor views over caller-owned memory. The library never writes through q, k, v, mask, sinks or the
// "other" state, so the const overloads cast constness away only to fill fst_tensor::data.
struct View {
    // Contiguous view, unused trailing extents 1. ne0 must be a multiple of the type's block size.
    static fst_tensor contiguous(fst_type type, void *data, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1,
                                 int64_t ne3 = 1) {
        return fst_tensor_contiguous(type, ne0, ne1, ne2, ne3, data);
    }
    static fst_tensor contiguous(fst_type type, const void *data, int64_t ne0, int64_t ne1 = 1,
                                 int64_t ne2 = 1, int64_t ne3 = 1) {
        return fst_tensor_contiguous(type, ne0, ne1, ne2, ne3, const_cast<void *>(data));
    }
    static fst_tensor f32(float *data, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1, int64_t ne3 = 1) {
        return contiguous(FST_TYPE_F32, data, ne0, ne1, ne2, ne3);
    }
    static fst_tensor f32(const float *data, int64_t ne0, int64_t ne1 = 1, int64_t ne2 = 1, int64_t ne3 = 1) {
        return contiguous(FST_TYPE_F32, static_cast<const void *>(data), ne0, ne1, ne2, ne3);
    }

    // The result tensors: state [2, n_head, n_q, n_seq], out [DV, n_head, n_q, n_seq], lse [n_head, n_q, n_seq].
    static fst_tensor state(float *data, int64_t n_head, int64_t n_q, int64_t n_seq = 1) {
        return f32(data, 2, n_head, n_q, n_seq);
    }
    static fst_tensor out(float *data, int64_t dv, int64_t n_head, int64_t n_q, int64_t n_seq = 1) {
        return f32(data, dv, n_head, n_q, n_seq);
    }
    static fst_tensor lse(float *data, int64_t n_head, int64_t n_q, int64_t n_seq = 1) {
        return f32(data, n_head, n_q, n_seq, 1);
    }

    // Rows [first, first + count) along ne[1], same strides: a KV segment of a k or v view.
    static fst_tensor rows(const fst_tensor &t, int64_t first, int64_t count) {
        fst_tensor s = t;
        s.ne[1] = count;
        s.data = static_cast<unsigned char *>(t.data) + static_cast<size_t>(first) * t.nb[1];
        return s;
    }
    // Columns [first, first + count) along ne[0]: the mask slice that goes with a KV segment (F16/F32 masks).
    static fst_tensor columns(const fst_tensor &t, int64_t first, int64_t count) {
        fst_tensor s = t;
        s.ne[0] = count;
        s.data = static_cast<unsigned char *>(t.data) + static_cast<size_t>(first) * t.nb[0];
        return s;
    }
};

// Bytes of one row of n elements stored as `type` (n a multiple of the block size).
inline size_t row_bytes(fst_type type, int64_t n) {
    int64_t block = fst_type_block_size(type);
    return block > 0 ? fst_type_size(type) * static_cast<size_t>(n / block) : 0;
}

inline std::string version() { return fst_version(); } // of the library actually loaded

// ---- The C entry points: try_* returns a Status, the plain form throws Error. ----

inline Status try_state_init(fst_tensor &state, fst_tensor &out) {
    return Status::from_call(fst_state_init(&state, &out));
}
inline void state_init(fst_tensor &state, fst_tensor &out) { detail::throw_if_failed(try_state_init(state, out)); }

// (state, out) ⊕= attention of q over this KV segment; sinks (nullable) are merged once, in this call.
inline Status try_attn_with_state(const fst_attn_params &p, const fst_tensor &q, const fst_tensor &k,
                                  const fst_tensor &v, const fst_tensor *mask, const fst_tensor *sinks,
                                  fst_tensor &state, fst_tensor &out) {
    return Status::from_call(fst_attn_with_state(&p, &q, &k, &v, mask, sinks, &state, &out));
}
inline void attn_with_state(const fst_attn_params &p, const fst_tensor &q, const fst_tensor &k, const fst_tensor &v,
                            const fst_tensor *mask, const fst_tensor *sinks, fst_tensor &state, fst_tensor &out) {
    detail::throw_if_failed(try_attn_with_state(p, q, k, v, mask, sinks, state, out));
}
// Without mask tensor and sinks (a virtual mask in p still applies).
inline Status try_attn_with_state(const fst_attn_params &p, const fst_tensor &q, const fst_tensor &k,
                                  const fst_tensor &v, fst_tensor &state, fst_tensor &out) {
    return try_attn_with_state(p, q, k, v, nullptr, nullptr, state, out);
}
inline void attn_with_state(const fst_attn_params &p, const fst_tensor &q, const fst_tensor &k, const fst_tensor &v,
                            fst_tensor &state, fst_tensor &out) {
    attn_with_state(p, q, k, v, nullptr, nullptr, state, out);
}

// (state, out) ⊕= (other_state, other_out).
// Many KV segments in one call (bit for bit the same as one call per segment, in order, sinks with the last).
inline Status try_attn_segments(const fst_attn_params &p, const fst_tensor &q, const fst_segment *segments,
                                int64_t n_segments, const fst_tensor *sinks, fst_tensor &state, fst_tensor &out) {
    return Status::from_call(fst_attn_segments(&p, &q, segments, n_segments, sinks, &state, &out));
}
inline void attn_segments(const fst_attn_params &p, const fst_tensor &q, const fst_segment *segments,
                          int64_t n_segments, const fst_tensor *sinks, fst_tensor &state, fst_tensor &out) {
    detail::throw_if_failed(try_attn_segments(p, q, segments, n_segments, sinks, state, out));
}

// Part ith of nth of a call, on the calling thread (for an engine's own thread pool).
inline Status try_attn_with_state_part(const fst_attn_params &p, const fst_tensor &q, const fst_tensor &k,
                                       const fst_tensor &v, const fst_tensor *mask, const fst_tensor *sinks,
                                       fst_tensor &state, fst_tensor &out, int ith, int nth) {
    return Status::from_call(fst_attn_with_state_part(&p, &q, &k, &v, mask, sinks, &state, &out, ith, nth));
}
inline void attn_with_state_part(const fst_attn_params &p, const fst_tensor &q, const fst_tensor &k,
                                 const fst_tensor &v, const fst_tensor *mask, const fst_tensor *sinks, fst_tensor &state,
                                 fst_tensor &out, int ith, int nth) {
    detail::throw_if_failed(try_attn_with_state_part(p, q, k, v, mask, sinks, state, out, ith, nth));
}
inline Status try_attn_segments_part(const fst_attn_params &p, const fst_tensor &q, const fst_segment *segments,
                                     int64_t n_segments, const fst_tensor *sinks, fst_tensor &state, fst_tensor &out,
                                     int ith, int nth) {
    return Status::from_call(fst_attn_segments_part(&p, &q, segments, n_segments, sinks, &state, &out, ith, nth));
}
inline void attn_segments_part(const fst_attn_params &p, const fst_tensor &q, const fst_segment *segments,
                               int64_t n_segments, const fst_tensor *sinks, fst_tensor &state, fst_tensor &out,
                               int ith, int nth) {
    detail::throw_if_failed(try_attn_segments_part(p, q, segments, n_segments, sinks, state, out, ith, nth));
}

// A paged KV cache (bit for bit the same as one call over the keys copied into contiguous K/V).
inline Status try_attn_paged(const fst_attn_params &p, const fst_tensor &q, const fst_paged_kv &kv, const fst_tensor *mask,
                             const fst_tensor *sinks, fst_tensor &state, fst_tensor &out) {
    return Status::from_call(fst_attn_paged(&p, &q, &kv, mask, sinks, &state, &out));
}
inline void attn_paged(const fst_attn_params &p, const fst_tensor &q, const fst_paged_kv &kv, const fst_tensor *mask,
                       const fst_tensor *sinks, fst_tensor &state, fst_tensor &out) {
    detail::throw_if_failed(try_attn_paged(p, q, kv, mask, sinks, state, out));
}
inline Status try_attn_paged_part(const fst_attn_params &p, const fst_tensor &q, const fst_paged_kv &kv,
                                  const fst_tensor *mask, const fst_tensor *sinks, fst_tensor &state, fst_tensor &out,
                                  int ith, int nth) {
    return Status::from_call(fst_attn_paged_part(&p, &q, &kv, mask, sinks, &state, &out, ith, nth));
}
inline void attn_paged_part(const fst_attn_params &p, const fst_tensor &q, const fst_paged_kv &kv, const fst_tensor *mask,
                            const fst_tensor *sinks, fst_tensor &state, fst_tensor &out, int ith, int nth) {
    detail::throw_if_failed(try_attn_paged_part(p, q, kv, mask, sinks, state, out, ith, nth));
}

inline Status try_state_merge(fst_tensor &state, fst_tensor &out, const fst_tensor &other_state,
                              const fst_tensor &other_out) {
    return Status::from_call(fst_state_merge(&state, &out, &other_state, &other_out));
}
inline void state_merge(fst_tensor &state, fst_tensor &out, const fst_tensor &other_state,
                        const fst_tensor &other_out) {
    detail::throw_if_failed(try_state_merge(state, out, other_state, other_out));
}

// One virtual key per head with logit sinks[h] and value zero. Once per result.
inline Status try_state_add_sinks(const fst_tensor &sinks, fst_tensor &state, fst_tensor &out) {
    return Status::from_call(fst_state_add_sinks(&sinks, &state, &out));
}
inline void state_add_sinks(const fst_tensor &sinks, fst_tensor &state, fst_tensor &out) {
    detail::throw_if_failed(try_state_add_sinks(sinks, state, out));
}

// LSE in the named base (lse_base_e or lse_base_2); -inf for empty rows.
inline Status try_export_lse(const fst_tensor &state, float base, fst_tensor &lse) {
    return Status::from_call(fst_state_export_lse(&state, base, &lse));
}
inline void export_lse(const fst_tensor &state, float base, fst_tensor &lse) {
    detail::throw_if_failed(try_export_lse(state, base, lse));
}

// state := (lse * ln(base), 1); out already holds the partner's O (zeroed for rows that import empty).
inline Status try_import_lse(const fst_tensor &lse, float base, fst_tensor &state, fst_tensor &out) {
    return Status::from_call(fst_state_import_lse(&lse, base, &state, &out));
}
inline void import_lse(const fst_tensor &lse, float base, fst_tensor &state, fst_tensor &out) {
    detail::throw_if_failed(try_import_lse(lse, base, state, out));
}

// n floats to `type` (ggml's reference quantizer for Q8_0/Q4_0, n a multiple of 32) and back (exact).
inline Status try_quantize_row(fst_type type, const float *src, void *dst, int64_t n) {
    return Status::from_call(fst_quantize_row(type, src, dst, n));
}
inline void quantize_row(fst_type type, const float *src, void *dst, int64_t n) {
    detail::throw_if_failed(try_quantize_row(type, src, dst, n));
}
inline Status try_dequantize_row(fst_type type, const void *src, float *dst, int64_t n) {
    return Status::from_call(fst_dequantize_row(type, src, dst, n));
}
inline void dequantize_row(fst_type type, const void *src, float *dst, int64_t n) {
    detail::throw_if_failed(try_dequantize_row(type, src, dst, n));
}

// ---- The mixed-precision FIFO KV cache (docs/cache.md) ----

// An owning handle to an fst_cache: created from a config (or loaded from a file), freed on destruction.
// Move-only. Methods throw Error; the try_ forms return a Status. Concurrency as in the C API: one appender per
// layer, any number of readers, serialized per layer by the cache itself.
class Cache {
public:
    static fst_cache_config default_config() { return fst_cache_default_config(); }

    explicit Cache(const fst_cache_config &config) {
        detail::throw_if_failed(Status::from_call(fst_cache_create(&config, &c_)));
    }
    // The cache saved at path; its file-backed tier (if any) goes to file_tier_path (nullptr: where it was saved).
    static Cache load(const char *path, const char *file_tier_path = nullptr) {
        fst_cache *c = nullptr;
        detail::throw_if_failed(Status::from_call(fst_cache_load(path, file_tier_path, &c)));
        return Cache(c);
    }
    static Status try_load(const char *path, const char *file_tier_path, Cache &result) {
        fst_cache *c = nullptr;
        Status s = Status::from_call(fst_cache_load(path, file_tier_path, &c));
        if (s.ok()) result = Cache(c);
        return s;
    }

    Cache(Cache &&o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
    Cache &operator=(Cache &&o) noexcept {
        if (this != &o) {
            fst_cache_free(c_);
            c_ = std::exchange(o.c_, nullptr);
        }
        return *this;
    }
    Cache(const Cache &) = delete;
    Cache &operator=(const Cache &) = delete;
    ~Cache() { fst_cache_free(c_); }
    Cache() = default; // empty; assign a created or loaded cache to it

    fst_cache *handle() const noexcept { return c_; }
    explicit operator bool() const noexcept { return c_ != nullptr; }

    fst_cache_config config() const {
        fst_cache_config c{};
        detail::throw_if_failed(Status::from_call(fst_cache_config_of(c_, &c)));
        return c;
    }

    // k [D, n, n_head_kv], v [DV, n, n_head_kv], F32 or F16. All or nothing.
    Status try_append(int32_t layer, const fst_tensor &k, const fst_tensor &v) {
        return Status::from_call(fst_cache_append(c_, layer, &k, &v));
    }
    void append(int32_t layer, const fst_tensor &k, const fst_tensor &v) {
        detail::throw_if_failed(try_append(layer, k, v));
    }

    int64_t n_tokens(int32_t layer) const {
        int64_t n = 0;
        detail::throw_if_failed(Status::from_call(fst_cache_n_tokens(c_, layer, &n, nullptr)));
        return n;
    }
    int64_t next_pos(int32_t layer) const {
        int64_t pos = 0;
        detail::throw_if_failed(Status::from_call(fst_cache_n_tokens(c_, layer, nullptr, &pos)));
        return pos;
    }

    // (state, out) ⊕= attention of q [D, n_q, n_head, 1] over the layer; sinks (nullable) merged once.
    Status try_attn(const fst_attn_params &p, int32_t layer, const fst_tensor &q, const fst_tensor *sinks,
                    fst_tensor &state, fst_tensor &out) {
        return Status::from_call(fst_cache_attn(c_, &p, layer, &q, sinks, &state, &out));
    }
    void attn(const fst_attn_params &p, int32_t layer, const fst_tensor &q, const fst_tensor *sinks, fst_tensor &state,
              fst_tensor &out) {
        detail::throw_if_failed(try_attn(p, layer, q, sinks, state, out));
    }

    // Per tier of the layer, then the n_keep region last (n_tiers + 1 entries).
    std::vector<fst_cache_tier_stats> stats(int32_t layer) const {
        std::vector<fst_cache_tier_stats> s(size_t(config().n_tiers) + 1);
        detail::throw_if_failed(Status::from_call(fst_cache_stats(c_, layer, s.data(), int32_t(s.size()))));
        return s;
    }
    // Bytes of K/V storage the layer holds allocated, every tier and the n_keep region together.
    size_t bytes(int32_t layer) const {
        size_t total = 0;
        for (const fst_cache_tier_stats &t : stats(layer)) total += t.bytes;
        return total;
    }

    // The layer's contents as segments (views into the cache, valid until the next append to the layer).
    struct Segments {
        std::vector<fst_segment> segments;
        std::vector<fst_tensor> views; // segments[i].k == &views[2i], .v == &views[2i + 1]
    };
    Segments segments(int32_t layer) const {
        Segments s;
        int64_t n = 0;
        detail::throw_if_failed(Status::from_call(fst_cache_segments(c_, layer, nullptr, nullptr, 0, &n)));
        // An append between the two calls (from another thread) could change the count: retry until it fits.
        for (;;) {
            s.segments.resize(size_t(n));
            s.views.resize(2 * size_t(n));
            int64_t needed = 0;
            detail::throw_if_failed(Status::from_call(
                fst_cache_segments(c_, layer, s.segments.data(), s.views.data(), n, &needed)));
            if (needed <= n) {
                s.segments.resize(size_t(needed));
                s.views.resize(2 * size_t(needed));
                return s;
            }
            n = needed;
        }
    }

    Status try_save(const char *path) const { return Status::from_call(fst_cache_save(c_, path)); }
    void save(const char *path) const { detail::throw_if_failed(try_save(path)); }

private:
    explicit Cache(fst_cache *c) : c_(c) {}
    fst_cache *c_ = nullptr;
};

} // namespace flashstate

#endif // FLASHSTATE_FLASHSTATE_HPP
