#include "synthetic.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace flashstate_tool {
namespace {

constexpr float kContextRho = 0.98f;     // AR(1) correlation of the shared context from one token to the next
constexpr float kKeyContext = 0.6f;      // weight of the context in a key's ordinary channels (noise: 0.8)
constexpr float kOutlierOffset = 12.0f;  // |mean| of an outlier K channel
constexpr float kOutlierStd = 3.0f;      // its spread around the mean
constexpr float kValueRho = 0.9f;        // AR(1) correlation of V from one token to the next
constexpr float kQueryNoise = 1.5f;

float innovation(float rho) { return std::sqrt(1.0f - rho * rho); }

} // namespace

SyntheticLayer::SyntheticLayer(const SyntheticShape &shape, uint64_t seed)
    : shape_(shape), kv_rng_(seed), q_rng_(seed + 1),
      signs_(size_t(shape.n_head_kv), std::vector<float>(size_t(shape.dim), 0.0f)),
      context_(size_t(shape.dim * shape.n_head_kv), 0.0f), v_prev_(context_.size(), 0.0f) {
    const int64_t D = shape.dim;
    const int64_t n_outliers = std::min<int64_t>(shape.n_outliers, D);
    for (int64_t g = 0; g < shape.n_head_kv; ++g) {
        std::vector<int64_t> channels(static_cast<size_t>(D));
        std::iota(channels.begin(), channels.end(), int64_t(0));
        std::shuffle(channels.begin(), channels.end(), kv_rng_);
        for (int64_t i = 0; i < n_outliers; ++i)
            signs_[size_t(g)][size_t(channels[size_t(i)])] = std::bernoulli_distribution(0.5)(kv_rng_) ? 1.0f : -1.0f;
    }
}

void SyntheticLayer::next(int64_t n, float *k, float *v, int64_t kv_head_stride, float *q, int64_t q_head_stride) {
    const int64_t D = shape_.dim, group = shape_.n_head / shape_.n_head_kv;
    const float key_noise = innovation(kKeyContext);
    // Token-major, so that the streams do not depend on how they are cut into calls.
    for (int64_t j = 0; j < n; ++j) {
        for (int64_t g = 0; g < shape_.n_head_kv; ++g) {
            float *k_row = k + g * kv_head_stride + j * D;
            float *v_row = v + g * kv_head_stride + j * D;
            float *context = &context_[size_t(g * D)];
            float *v_last = &v_prev_[size_t(g * D)];
            const std::vector<float> &sign = signs_[size_t(g)];
            for (int64_t c = 0; c < D; ++c) {
                const float a = kv_normal_(kv_rng_), b = kv_normal_(kv_rng_), z = kv_normal_(kv_rng_);
                context[c] = first_ ? a : kContextRho * context[c] + innovation(kContextRho) * a;
                v_last[c] = first_ ? b : kValueRho * v_last[c] + innovation(kValueRho) * b;
                k_row[c] = sign[size_t(c)] != 0.0f ? sign[size_t(c)] * kOutlierOffset + kOutlierStd * z
                                                   : kKeyContext * context[c] + key_noise * z;
                v_row[c] = v_last[c];
            }
            for (int64_t i = 0; i < group; ++i) {
                const int64_t h = g * group + i;
                const float beta = float(h % 4) * (2.0f / 3.0f);
                float *q_row = q + h * q_head_stride + j * D;
                for (int64_t c = 0; c < D; ++c) q_row[c] = beta * context[c] + kQueryNoise * q_normal_(q_rng_);
            }
        }
        first_ = false;
    }
}

LayerData generate_layer(const SyntheticShape &shape, uint64_t seed, int64_t tokens) {
    SyntheticLayer generator(shape, seed);
    LayerData layer;
    layer.dim = shape.dim;
    layer.tokens = tokens;
    layer.k.resize(size_t(shape.dim * tokens * shape.n_head_kv));
    layer.v.resize(layer.k.size());
    layer.q.resize(size_t(shape.dim * tokens * shape.n_head));
    generator.next(tokens, layer.k.data(), layer.v.data(), shape.dim * tokens, layer.q.data(), shape.dim * tokens);
    return layer;
}

fst_tensor token_view(const LayerData &layer, const std::vector<float> &data, int64_t heads, int64_t first,
                      int64_t n) {
    const fst_tensor all = flashstate::View::f32(data.data(), layer.dim, layer.tokens, heads);
    return flashstate::View::rows(all, first, n);
}

} // namespace flashstate_tool
