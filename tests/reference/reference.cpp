// The double-precision oracle. Deliberately naive: one query row at a time, every element read through read(),
// every formula written as in SPEC.md sections 1-3. Nothing here is shared with src/.
#include "reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace ref {

namespace {

const double kInf = std::numeric_limits<double>::infinity();

uint16_t load_u16(const unsigned char *p) { return uint16_t(p[0] | (p[1] << 8)); } // little-endian, as stored

// Address of the row (i1, i2, i3) of a view.
const unsigned char *row_address(const fst_tensor &t, int64_t i1, int64_t i2, int64_t i3) {
    return static_cast<const unsigned char *>(t.data) + size_t(i1) * t.nb[1] + size_t(i2) * t.nb[2] +
           size_t(i3) * t.nb[3];
}

// Position of query row r (or key j) of sequence s: an explicit I32 tensor [n, m] read at column s % m, or start + i.
int64_t position(const fst_tensor *positions, int64_t start, int64_t i, int64_t s) {
    if (positions == nullptr) return start + i;
    return int64_t(read(*positions, i, s % positions->ne[1]));
}

} // namespace

double f16_to_double(uint16_t bits) {
    const double sign = (bits & 0x8000) ? -1.0 : 1.0;
    const int exponent = (bits >> 10) & 0x1f;
    const int mantissa = bits & 0x3ff;
    if (exponent == 0x1f) return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * kInf;
    if (exponent == 0) return sign * std::ldexp(double(mantissa), -24); // subnormal: m * 2^-24
    return sign * std::ldexp(double(1024 + mantissa), exponent - 15 - 10);
}

double bf16_to_double(uint16_t bits) {
    // BF16 is the upper half of an F32.
    const uint32_t f32_bits = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &f32_bits, sizeof f);
    return double(f);
}

double read(const fst_tensor &t, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    const unsigned char *row = row_address(t, i1, i2, i3);
    switch (t.type) {
    case FST_TYPE_F32: {
        float f;
        std::memcpy(&f, row + size_t(i0) * t.nb[0], sizeof f);
        return double(f);
    }
    case FST_TYPE_I32: {
        int32_t i;
        std::memcpy(&i, row + size_t(i0) * t.nb[0], sizeof i);
        return double(i);
    }
    case FST_TYPE_F16: return f16_to_double(load_u16(row + size_t(i0) * t.nb[0]));
    case FST_TYPE_BF16: return bf16_to_double(load_u16(row + size_t(i0) * t.nb[0]));
    case FST_TYPE_Q8_0: {
        // 34-byte block: F16 scale d, then 32 int8 q; value d * q.
        const unsigned char *block = row + size_t(i0 / 32) * t.nb[0];
        const double d = f16_to_double(load_u16(block));
        const int8_t q = int8_t(block[2 + i0 % 32]);
        return d * double(q);
    }
    case FST_TYPE_Q4_0: {
        // 18-byte block: F16 scale d, then 16 bytes; byte j holds element j (low nibble) and j + 16 (high nibble).
        const unsigned char *block = row + size_t(i0 / 32) * t.nb[0];
        const double d = f16_to_double(load_u16(block));
        const int64_t j = i0 % 32;
        const int nibble = j < 16 ? (block[2 + j] & 0x0f) : (block[2 + j - 16] >> 4);
        return d * double(nibble - 8);
    }
    }
    throw std::invalid_argument("ref::read: unknown tensor type");
}

double alibi_slope(int64_t n_head, double max_bias, int64_t h) {
    if (max_bias <= 0) return 1.0;
    int64_t n2 = 1; // 2^floor(log2(n_head)), by doubling so no floating log is involved
    while (n2 * 2 <= n_head) n2 *= 2;
    const double m0 = std::pow(2.0, -max_bias / double(n2));
    const double m1 = std::pow(2.0, -(max_bias / 2.0) / double(n2));
    return h < n2 ? std::pow(m0, double(h + 1)) : std::pow(m1, double(2 * (h - n2) + 1));
}

Result attention(const fst_attn_params &p, const fst_tensor &q, const fst_tensor &k, const fst_tensor &v,
                 const fst_tensor *mask, const fst_tensor *sinks) {
    const int64_t D = q.ne[0], n_q = q.ne[1], n_head = q.ne[2], n_seq = q.ne[3];
    const int64_t n_kv = k.ne[1], n_head_kv = k.ne[2], n_seq_kv = k.ne[3];
    const int64_t DV = v.ne[0];
    const int64_t heads_per_kv_head = n_head / n_head_kv;

    Result res;
    res.DV = DV;
    res.n_head = n_head;
    res.n_q = n_q;
    res.n_seq = n_seq;
    res.O.assign(size_t(DV * n_head * n_q * n_seq), 0.0);
    res.M.assign(size_t(n_head * n_q * n_seq), -kInf);
    res.S.assign(size_t(n_head * n_q * n_seq), 0.0);

    std::vector<double> q_row(static_cast<size_t>(D));
    std::vector<double> logit(static_cast<size_t>(n_kv));
    std::vector<bool> visible(static_cast<size_t>(n_kv));

    for (int64_t s = 0; s < n_seq; ++s) {
        const int64_t s_kv = s % n_seq_kv;
        for (int64_t r = 0; r < n_q; ++r) {
            for (int64_t h = 0; h < n_head; ++h) {
                const int64_t h_kv = h / heads_per_kv_head;
                const double slope = alibi_slope(n_head, double(p.max_bias), h);
                for (int64_t i = 0; i < D; ++i) q_row[size_t(i)] = read(q, i, r, h, s);

                // Logits of the visible keys, and their maximum (with the sink, which is one more logit).
                double M = -kInf;
                for (int64_t j = 0; j < n_kv; ++j) {
                    visible[size_t(j)] = false;
                    if (p.virtual_mask != FST_MASK_NONE) {
                        const int64_t pos_q = position(p.q_pos, p.q_pos0, r, s);
                        const int64_t pos_k = position(p.kv_pos, p.kv_pos0, j, s);
                        if (pos_k > pos_q) continue;
                        if (p.virtual_mask == FST_MASK_SLIDING_WINDOW && pos_q - pos_k >= p.window) continue;
                    }
                    double dot = 0;
                    for (int64_t i = 0; i < D; ++i) dot += q_row[size_t(i)] * read(k, i, j, h_kv, s_kv);
                    double x = double(p.scale) * dot;
                    if (p.softcap > 0) x = double(p.softcap) * std::tanh(x / double(p.softcap));
                    if (mask != nullptr) {
                        const double m = read(*mask, j, r, h % mask->ne[2], s % mask->ne[3]);
                        if (m == -kInf) continue;
                        x += slope * m;
                    }
                    visible[size_t(j)] = true;
                    logit[size_t(j)] = x;
                    if (x > M) M = x;
                }
                const double sink = sinks != nullptr ? read(*sinks, h) : -kInf;
                if (sink > M) M = sink;

                const size_t row_index = size_t((s * n_q + r) * n_head + h);
                if (M == -kInf) continue; // nothing visible: M = -inf, S = 0, O = 0 as initialized

                double S = sink != -kInf ? std::exp(sink - M) : 0.0; // the sink's value vector is zero
                double *O = &res.O[row_index * size_t(DV)];
                for (int64_t j = 0; j < n_kv; ++j) {
                    if (!visible[size_t(j)]) continue;
                    const double w = std::exp(logit[size_t(j)] - M);
                    S += w;
                    for (int64_t c = 0; c < DV; ++c) O[c] += w * read(v, c, j, h_kv, s_kv);
                }
                for (int64_t c = 0; c < DV; ++c) O[c] /= S;
                res.M[row_index] = M;
                res.S[row_index] = S;
            }
        }
    }
    return res;
}

double rel_error(const Result &ref, const fst_tensor &out) {
    if (out.type != FST_TYPE_F32 || out.ne[0] != ref.DV || out.ne[1] != ref.n_head || out.ne[2] != ref.n_q ||
        out.ne[3] != ref.n_seq)
        return kInf; // a shape mismatch can never pass a tolerance
    double max_diff = 0, max_ref = 0;
    for (int64_t s = 0; s < ref.n_seq; ++s)
        for (int64_t r = 0; r < ref.n_q; ++r)
            for (int64_t h = 0; h < ref.n_head; ++h)
                for (int64_t c = 0; c < ref.DV; ++c) {
                    const double expected = ref.o(c, h, r, s);
                    const double diff = std::fabs(read(out, c, h, r, s) - expected);
                    if (!(diff <= kInf)) return kInf; // NaN in out
                    if (diff > max_diff) max_diff = diff;
                    if (std::fabs(expected) > max_ref) max_ref = std::fabs(expected);
                }
    return max_diff / std::max(1e-6, max_ref);
}

} // namespace ref
