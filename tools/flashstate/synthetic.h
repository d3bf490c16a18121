// Synthetic model-like K, V and queries for `flashstate demo` and `flashstate cache-study`, defined in one place so
// that the demo, the accuracy study and docs/cache-accuracy.md describe the same data.
//
// Per KV head g, token t, channel c (K and V from std::mt19937_64 seeded with `seed`, queries from one seeded with
// seed + 1, so K and V do not depend on the number of query heads):
//   context  C_t = 0.98 C_{t-1} + sqrt(1 - 0.98^2) N(0, 1), C_0 ~ N(0, 1): a slowly drifting unit-variance vector
//            per KV head that keys and queries share, so a query resembles the keys of nearby tokens (recency, as
//            position encodings and local context give real attention heads);
//   K[c]  =  0.6 C_t[c] + 0.8 N(0, 1) (unit variance), except on n_outliers channels per KV head (distinct, drawn
//            uniformly from 0..D-1), where K[c] = sign_c * 12 + 3 N(0, 1), sign_c = +-1 drawn once per channel: real
//            models' keys have a few such large-magnitude channels that keep their sign across tokens, and in a
//            quantized row they set the scale of their 32-value block;
//   V[c]  =  0.9 V_{t-1}[c] + sqrt(1 - 0.81) N(0, 1), V_0 ~ N(0, 1): smooth, unit variance;
//   q[c]  =  beta_h C_t[c] + 1.5 N(0, 1) for query head h of KV head g, beta_h = (h mod 4) * 2/3, i.e. 0, 0.67,
//            1.33, 2: a quarter of the heads attend diffusely over the whole past, the others more and more to
//            recent tokens (with scale 1/sqrt(D), D = 128, a key of the same token scores about 6.8 beta_h higher).
#pragma once

#include <flashstate/flashstate.hpp>

#include <cstdint>
#include <random>
#include <vector>

namespace flashstate_tool {

struct SyntheticShape {
    int64_t n_head = 32;    // query heads
    int64_t n_head_kv = 8;  // KV heads
    int64_t dim = 128;      // D = DV
    int n_outliers = 4;     // large-magnitude K channels per KV head (0 = none)
};

class SyntheticLayer {
public:
    SyntheticLayer(const SyntheticShape &shape, uint64_t seed);

    // The next n tokens: k and v F32 [D, n, n_head_kv], q F32 [D, n, n_head], with the given strides between
    // heads in floats (n * D when contiguous; larger ones write into bigger [D, N, heads] arrays).
    void next(int64_t n, float *k, float *v, int64_t kv_head_stride, float *q, int64_t q_head_stride);

    const SyntheticShape &shape() const { return shape_; }

private:
    SyntheticShape shape_;
    std::mt19937_64 kv_rng_, q_rng_;
    std::normal_distribution<float> kv_normal_, q_normal_; // N(0, 1); members, so that the streams do not depend
                                                           // on how they are cut into calls
    std::vector<std::vector<float>> signs_; // per KV head and channel: +-1 on outlier channels, 0 elsewhere
    std::vector<float> context_, v_prev_;   // [D, n_head_kv]: C and V of the previous token
    bool first_ = true;
};

// A whole stream generated at once: k, v [D, tokens, n_head_kv] and q [D, tokens, n_head], F32.
struct LayerData {
    int64_t dim = 0, tokens = 0;
    std::vector<float> k, v, q;
};
LayerData generate_layer(const SyntheticShape &shape, uint64_t seed, int64_t tokens);

// Tokens [first, first + n) of one of its arrays (heads: n_head_kv for k and v, n_head for q), a strided F32 view.
fst_tensor token_view(const LayerData &layer, const std::vector<float> &data, int64_t heads, int64_t first, int64_t n);

} // namespace flashstate_tool
