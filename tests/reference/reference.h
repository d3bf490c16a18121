// Double-precision attention written for clarity, not speed. It shares no code with src/: it decodes the stored
// bytes itself (F16, BF16, Q8_0, Q4_0) and follows SPEC.md sections 1-3 literally, one query row at a time.
#pragma once

#include <flashstate/flashstate.h>

#include <cstdint>
#include <vector>

namespace ref {

double f16_to_double(uint16_t bits);
double bf16_to_double(uint16_t bits);

// Element (i0, i1, i2, i3) of a view, exactly as stored (quantized blocks dequantized: d * q, d * (nibble - 8));
// also reads F32 out/state views and I32 position tensors.
double read(const fst_tensor &t, int64_t i0, int64_t i1 = 0, int64_t i2 = 0, int64_t i3 = 0);

// ALiBi slope of query head h (SPEC section 1); 1 when max_bias <= 0.
double alibi_slope(int64_t n_head, double max_bias, int64_t h);

// The exact state of every query row after seeing the whole KV range (and the sinks, if given):
// M = max visible logit, S = sum exp(x - M), O = normalized output; a row that sees nothing: M=-inf, S=0, O=0.
struct Result {
    int64_t DV = 0, n_head = 0, n_q = 0, n_seq = 0;
    std::vector<double> O;    // index ((s * n_q + r) * n_head + h) * DV + c, ggml's permuted output order
    std::vector<double> M, S; // index (s * n_q + r) * n_head + h
    double o(int64_t c, int64_t h, int64_t r, int64_t s) const { return O[((s * n_q + r) * n_head + h) * DV + c]; }
};

// Reads scale, max_bias, softcap, virtual_mask, window, q_pos0, kv_pos0, q_pos, kv_pos from p.
Result attention(const fst_attn_params &p, const fst_tensor &q, const fst_tensor &k, const fst_tensor &v,
                 const fst_tensor *mask, const fst_tensor *sinks);

// SPEC section 4: max |out - ref| / max(1e-6, max |ref|), out an F32 view [DV, n_head, n_q, n_seq].
double rel_error(const Result &ref, const fst_tensor &out);

} // namespace ref
