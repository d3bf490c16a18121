#include "support/cases.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <limits>

namespace fst_test {

namespace {

const float inf = std::numeric_limits<float>::infinity();

int64_t uniform(std::mt19937 &rng, int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}
bool chance(std::mt19937 &rng, double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; }
template <class T> T pick(std::mt19937 &rng, std::initializer_list<T> xs) {
    return *(xs.begin() + uniform(rng, 0, int64_t(xs.size()) - 1));
}

// Every row of b gets N(mean, sd^2) values, stored through the library's converter (the reference decodes the
// stored bytes itself, so a conversion bug cannot hide).
void fill(Buffer &b, std::mt19937 &rng, float mean, float sd) {
    std::normal_distribution<float> nd(mean, sd);
    std::vector<float> row(size_t(b.t.ne[0]));
    if (row.empty()) return;
    for (int64_t i3 = 0; i3 < b.t.ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < b.t.ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < b.t.ne[1]; ++i1) {
                for (auto &x : row) x = nd(rng);
                b.set_row(row.data(), i1, i2, i3);
            }
}

// Raises a running maximum; NaN counts as infinitely wrong (std::max would silently drop it).
void raise(double &acc, double err) {
    if (std::isnan(err)) err = inf;
    acc = std::max(acc, err);
}

fst_tensor swap_dims_1_2(fst_tensor t) {
    std::swap(t.ne[1], t.ne[2]);
    std::swap(t.nb[1], t.nb[2]);
    return t;
}

void accumulate(StateError &e, double M, double S, double M_ref, double S_ref) {
    if (S_ref == 0 || S == 0) {
        // Empty on both sides, written as M = -inf (SPEC section 2), or a mismatch.
        bool ok = S_ref == 0 && S == 0 && std::isinf(M) && M < 0;
        if (!ok) e.m = e.s = inf;
        return;
    }
    raise(e.m, std::fabs(M - M_ref) / std::max(1.0, std::fabs(M_ref)));
    raise(e.s, std::fabs(S * std::exp(M - M_ref) - S_ref) / S_ref);
}

} // namespace

bool is_quantized(fst_type t) { return t == FST_TYPE_Q8_0 || t == FST_TYPE_Q4_0; }

const std::vector<fst_type> &kv_types() {
    static const std::vector<fst_type> types = {FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0,
                                                FST_TYPE_Q4_0};
    return types;
}

Spec random_spec(std::mt19937 &rng) {
    fst_type k = kv_types()[size_t(uniform(rng, 0, 4))];
    fst_type v = kv_types()[size_t(uniform(rng, 0, 4))];
    return random_spec(rng, k, v);
}

Spec random_spec(std::mt19937 &rng, fst_type k_type, fst_type v_type) {
    Spec s;
    s.k_type = k_type;
    s.v_type = v_type;
    s.q_type = pick(rng, {FST_TYPE_F32, FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16});

    // Odd sizes exercise vector tails; quantized rows need whole blocks of 32.
    auto dim = [&](bool quantized) {
        return quantized ? 32 * uniform(rng, 1, 4) : pick<int64_t>(rng, {1, 5, 16, 24, 40, 64, 72, 96, 128});
    };
    s.D = dim(is_quantized(k_type));
    s.DV = chance(rng, 0.5) && (!is_quantized(v_type) || s.D % 32 == 0) ? s.D : dim(is_quantized(v_type));

    // GQA ratios 1, 2, 3, 4; head counts that are not powers of two (ALiBi's m1 branch).
    auto heads = pick<std::pair<int64_t, int64_t>>(
        rng, {{1, 1}, {2, 1}, {2, 2}, {4, 1}, {4, 2}, {4, 4}, {6, 3}, {6, 6}, {6, 2}, {8, 2}, {12, 3}, {12, 6}});
    s.n_head = heads.first;
    s.n_head_kv = heads.second;
    s.n_seq_kv = pick<int64_t>(rng, {1, 1, 2});
    s.n_seq = s.n_seq_kv * pick<int64_t>(rng, {1, 1, 2});
    s.n_q = chance(rng, 0.35) ? 1 : uniform(rng, 2, 9);
    s.n_kv = chance(rng, 0.03) ? 0 : chance(rng, 0.2) ? uniform(rng, 1, 8) : uniform(rng, 9, 256);
    make_consistent(s);

    s.padded = chance(rng, 0.5);
    s.permute_k = chance(rng, 0.25);
    s.permute_v = chance(rng, 0.25);

    if (chance(rng, 0.6)) {
        s.has_mask = true;
        s.mask_type = pick(rng, {FST_TYPE_F16, FST_TYPE_F32});
        s.mask_rows = s.n_q + (chance(rng, 0.5) ? 0 : uniform(rng, 1, 4));
        s.m2 = pick<int64_t>(rng, {1, s.n_head});
        s.m3 = pick<int64_t>(rng, {1, s.n_seq});
        s.mask_inf_fraction = pick(rng, {0.0, 0.0, 0.2, 0.6});
        s.n_fully_masked_rows = chance(rng, 0.3) ? int(uniform(rng, 1, 2)) : 0;
    }
    if (chance(rng, 0.25)) s.max_bias = pick(rng, {8.0f, 3.5f});
    if (chance(rng, 0.25)) s.softcap = pick(rng, {20.0f, 50.0f});
    s.has_sinks = chance(rng, 0.3);

    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    s.virtual_mask = u < 0.6 ? FST_MASK_NONE : u < 0.8 ? FST_MASK_CAUSAL : FST_MASK_SLIDING_WINDOW;
    if (s.virtual_mask != FST_MASK_NONE) {
        s.window = uniform(rng, 1, std::max<int64_t>(s.n_kv, 1) + 2);
        s.kv_pos0 = uniform(rng, 0, 40);
        // The queries sit at the end of the cache, give or take a few positions: some rows see nothing.
        s.q_pos0 = s.kv_pos0 + s.n_kv - s.n_q + uniform(rng, -6, 3);
        s.q_pos_tensor = chance(rng, 0.4);
        s.kv_pos_tensor = chance(rng, 0.4);
        s.pos_columns = pick<int64_t>(rng, {1, s.n_seq});
    }

    s.logit_max = std::exp(std::uniform_real_distribution<double>(std::log(0.5), std::log(50.0))(rng));
    s.v_mean = chance(rng, 0.2) ? 1.0f : 0.0f;
    return s;
}

void make_consistent(Spec &s) {
    if (s.n_head % s.n_head_kv != 0) s.n_head_kv = 1;
    if (s.n_seq % s.n_seq_kv != 0) s.n_seq_kv = 1;
    if (s.n_head % s.m2 != 0) s.m2 = s.n_head;
    if (s.n_seq % s.m3 != 0) s.m3 = s.n_seq;
    if (s.n_seq % s.pos_columns != 0) s.pos_columns = s.n_seq;
    if (s.mask_rows < s.n_q) s.mask_rows = s.n_q;
    // The reference walks one query row at a time in doubles: keep every problem small enough to be quick.
    while (s.n_q * s.n_head * s.n_seq * std::max<int64_t>(s.n_kv, 1) * (s.D + s.DV) > 2'000'000) {
        if (s.n_kv > 32)
            s.n_kv /= 2;
        else if (s.n_q > 1)
            s.n_q /= 2;
        else
            break;
    }
}

Spec spans_decode_spec(fst_type t, int64_t n_kv, double mask_inf_fraction) {
    Spec s;
    s.D = s.DV = 32;
    s.n_head = 64;
    s.n_head_kv = 32;
    s.k_type = s.v_type = t;
    s.has_mask = true;
    s.mask_inf_fraction = mask_inf_fraction;
    make_consistent(s);
    s.n_kv = n_kv; // after make_consistent, which would cut it to keep the reference quick
    return s;
}

std::string describe(const Spec &s) {
    char buf[640];
    std::snprintf(buf, sizeof buf,
                  "D=%lld DV=%lld n_q=%lld n_kv=%lld heads=%lld/%lld seqs=%lld/%lld q=%s k=%s v=%s padded=%d "
                  "permute_k=%d permute_v=%d mask=%s rows=%lld m2=%lld m3=%lld inf=%.2f full_rows=%d "
                  "max_bias=%g softcap=%g sinks=%d virtual=%d window=%lld q_pos0=%lld kv_pos0=%lld "
                  "q_pos_tensor=%d kv_pos_tensor=%d pos_columns=%lld logit_max=%g v_mean=%g",
                  (long long)s.D, (long long)s.DV, (long long)s.n_q, (long long)s.n_kv, (long long)s.n_head,
                  (long long)s.n_head_kv, (long long)s.n_seq, (long long)s.n_seq_kv, fst_type_name(s.q_type),
                  fst_type_name(s.k_type), fst_type_name(s.v_type), int(s.padded), int(s.permute_k),
                  int(s.permute_v), s.has_mask ? fst_type_name(s.mask_type) : "none", (long long)s.mask_rows,
                  (long long)s.m2, (long long)s.m3, s.mask_inf_fraction, s.n_fully_masked_rows, s.max_bias,
                  s.softcap, int(s.has_sinks), int(s.virtual_mask), (long long)s.window, (long long)s.q_pos0,
                  (long long)s.kv_pos0, int(s.q_pos_tensor), int(s.kv_pos_tensor), (long long)s.pos_columns,
                  s.logit_max, s.v_mean);
    return buf;
}

Problem::Problem(const Spec &spec_, uint32_t seed) : spec(spec_) {
    std::mt19937 rng(seed);
    Spec &s = spec;
    if (s.mask_rows < s.n_q) s.mask_rows = s.n_q;
    // Padding in whole elements (or blocks), so that every row stays aligned for its type.
    auto pad = [&](fst_type t) -> std::array<size_t, 4> {
        if (!s.padded) return {0, 0, 0, 0};
        size_t unit = fst_type_size(t);
        return {0, unit * size_t(uniform(rng, 1, 3)), unit * size_t(uniform(rng, 0, 2)),
                unit * size_t(uniform(rng, 0, 2))};
    };

    q_buf = Buffer(s.q_type, {s.D, s.n_q, s.n_head, s.n_seq}, pad(s.q_type));
    fill(q_buf, rng, 0, 1);
    k_buf = s.permute_k ? Buffer(s.k_type, {s.D, s.n_head_kv, s.n_kv, s.n_seq_kv}, pad(s.k_type))
                        : Buffer(s.k_type, {s.D, s.n_kv, s.n_head_kv, s.n_seq_kv}, pad(s.k_type));
    fill(k_buf, rng, 0, 1);
    v_buf = s.permute_v ? Buffer(s.v_type, {s.DV, s.n_head_kv, s.n_kv, s.n_seq_kv}, pad(s.v_type))
                        : Buffer(s.v_type, {s.DV, s.n_kv, s.n_head_kv, s.n_seq_kv}, pad(s.v_type));
    fill(v_buf, rng, s.v_mean, 1);

    if (s.has_mask) {
        mask_buf = Buffer(s.mask_type, {s.n_kv, s.mask_rows, s.m2, s.m3}, pad(s.mask_type));
        std::normal_distribution<float> nd(0.0f, 1.0f);
        std::vector<float> row(size_t(s.n_kv));
        for (int64_t i3 = 0; i3 < s.m3; ++i3)
            for (int64_t i2 = 0; i2 < s.m2; ++i2)
                for (int64_t r = 0; r < s.mask_rows && !row.empty(); ++r) {
                    for (auto &x : row) x = chance(rng, s.mask_inf_fraction) ? -inf : nd(rng);
                    mask_buf.set_row(row.data(), r, i2, i3);
                }
        std::vector<float> hidden(size_t(s.n_kv), -inf);
        for (int i = 0; i < s.n_fully_masked_rows && !hidden.empty(); ++i)
            mask_buf.set_row(hidden.data(), uniform(rng, 0, s.n_q - 1), uniform(rng, 0, s.m2 - 1),
                             uniform(rng, 0, s.m3 - 1));
    }

    if (s.has_sinks) {
        sinks_buf = Buffer(FST_TYPE_F32, {s.n_head, 1, 1, 1});
        std::normal_distribution<float> nd(float(s.logit_max / 3), float(std::max(1.0, s.logit_max / 3)));
        for (int64_t h = 0; h < s.n_head; ++h) *sinks_buf.f32(h) = nd(rng);
    }

    // Positions with gaps: each column (sequence group) has its own start and holes.
    std::vector<int64_t> kv_end(size_t(s.pos_columns), s.kv_pos0 + s.n_kv);
    if (s.kv_pos_tensor) {
        kv_pos_buf = Buffer(FST_TYPE_I32, {s.n_kv, s.pos_columns, 1, 1}, pad(FST_TYPE_I32));
        for (int64_t c = 0; c < s.pos_columns; ++c) {
            int64_t p = s.kv_pos0 + uniform(rng, 0, 10);
            auto *pos = reinterpret_cast<int32_t *>(kv_pos_buf.row(c));
            for (int64_t j = 0; j < s.n_kv; ++j) {
                pos[j] = int32_t(p);
                p += 1 + (chance(rng, 0.25) ? uniform(rng, 1, 5) : 0);
            }
            kv_end[size_t(c)] = p;
        }
        if (!s.q_pos_tensor) s.q_pos0 = kv_end[0] - s.n_q + uniform(rng, -6, 3);
    }
    if (s.q_pos_tensor) {
        q_pos_buf = Buffer(FST_TYPE_I32, {s.n_q, s.pos_columns, 1, 1}, pad(FST_TYPE_I32));
        for (int64_t c = 0; c < s.pos_columns; ++c) {
            int64_t p = kv_end[size_t(c)] - s.n_q + uniform(rng, -6, 3);
            auto *pos = reinterpret_cast<int32_t *>(q_pos_buf.row(c));
            for (int64_t r = 0; r < s.n_q; ++r) {
                pos[r] = int32_t(p);
                p += 1 + (chance(rng, 0.2) ? uniform(rng, 1, 3) : 0);
            }
        }
    }

    // The scale that makes the largest |logit| (before softcap and mask) exactly logit_max, from the stored values.
    fst_tensor qt = q(), kt = k();
    int64_t group = s.n_head / s.n_head_kv;
    std::vector<double> qd(size_t(s.D)), kd(size_t(s.D * s.n_kv));
    double max_dot = 0;
    for (int64_t sq = 0; sq < s.n_seq; ++sq)
        for (int64_t h = 0; h < s.n_head; ++h) {
            for (int64_t j = 0; j < s.n_kv; ++j)
                for (int64_t i = 0; i < s.D; ++i)
                    kd[size_t(j * s.D + i)] = ref::read(kt, i, j, h / group, sq % s.n_seq_kv);
            for (int64_t r = 0; r < s.n_q; ++r) {
                for (int64_t i = 0; i < s.D; ++i) qd[size_t(i)] = ref::read(qt, i, r, h, sq);
                for (int64_t j = 0; j < s.n_kv; ++j) {
                    double dot = 0;
                    for (int64_t i = 0; i < s.D; ++i) dot += qd[size_t(i)] * kd[size_t(j * s.D + i)];
                    max_dot = std::max(max_dot, std::fabs(dot));
                }
            }
        }
    scale = max_dot > 0 ? float(s.logit_max / max_dot) : 1.0f;
}

fst_tensor Problem::k() const { return spec.permute_k ? swap_dims_1_2(k_buf.t) : k_buf.t; }
fst_tensor Problem::v() const { return spec.permute_v ? swap_dims_1_2(v_buf.t) : v_buf.t; }

fst_attn_params Problem::params() const {
    fst_attn_params p = fst_attn_default_params();
    p.scale = scale;
    p.max_bias = spec.max_bias;
    p.softcap = spec.softcap;
    p.virtual_mask = spec.virtual_mask;
    p.window = spec.window;
    p.q_pos0 = spec.q_pos0;
    p.kv_pos0 = spec.kv_pos0;
    p.q_pos = spec.q_pos_tensor ? &q_pos_buf.t : nullptr;
    p.kv_pos = spec.kv_pos_tensor ? &kv_pos_buf.t : nullptr;
    p.n_threads = 1;
    return p;
}

Buffer Problem::make_state() const {
    std::array<size_t, 4> pad = spec.padded ? std::array<size_t, 4>{0, 4, 8, 12} : std::array<size_t, 4>{};
    return Buffer(FST_TYPE_F32, {2, spec.n_head, spec.n_q, spec.n_seq}, pad);
}

Buffer Problem::make_out() const {
    std::array<size_t, 4> pad = spec.padded ? std::array<size_t, 4>{0, 12, 20, 28} : std::array<size_t, 4>{};
    return Buffer(FST_TYPE_F32, {spec.DV, spec.n_head, spec.n_q, spec.n_seq}, pad);
}

Segment Problem::segment(int64_t j0, int64_t n) const {
    Segment g;
    g.j0 = j0;
    g.n = n;
    g.k = slice(k(), 1, j0, n);
    g.v = slice(v(), 1, j0, n);
    g.has_mask = spec.has_mask;
    if (g.has_mask) g.mask = slice(mask_buf.t, 0, j0, n);
    g.has_kv_pos = spec.kv_pos_tensor;
    if (g.has_kv_pos) g.kv_pos = slice(kv_pos_buf.t, 0, j0, n);
    g.p = params();
    g.p.kv_pos0 = spec.kv_pos0 + j0;
    return g;
}

ref::Result Problem::reference(bool with_sinks) const {
    return ref::attention(params(), q(), k(), v(), mask(), with_sinks ? sinks() : nullptr);
}

ref::Result Problem::reference(const Segment &g, bool with_sinks) const {
    return ref::attention(g.params(), q(), g.k, g.v, g.mask_ptr(), with_sinks ? sinks() : nullptr);
}

void Problem::set_mask(int64_t j, int64_t r, int64_t i2, int64_t i3, float value) {
    fst_quantize_row(spec.mask_type, &value, mask_buf.row(r, i2, i3) + size_t(j) * mask_buf.t.nb[0], 1);
}

std::vector<Range> random_split(std::mt19937 &rng, int64_t n_kv, int64_t n_segments) {
    std::vector<int64_t> cuts;
    for (int64_t i = 0; i + 1 < n_segments; ++i) cuts.push_back(uniform(rng, 0, n_kv));
    std::sort(cuts.begin(), cuts.end());
    cuts.push_back(n_kv);
    std::vector<Range> ranges;
    int64_t j0 = 0;
    for (int64_t c : cuts) {
        ranges.push_back({j0, c - j0});
        j0 = c;
    }
    return ranges;
}

static const float *state_row(const fst_tensor &state, int64_t h, int64_t r, int64_t s) {
    return reinterpret_cast<const float *>(static_cast<const unsigned char *>(state.data) + h * state.nb[1] +
                                           r * state.nb[2] + s * state.nb[3]);
}
float state_m(const fst_tensor &state, int64_t h, int64_t r, int64_t s) { return state_row(state, h, r, s)[0]; }
float state_s(const fst_tensor &state, int64_t h, int64_t r, int64_t s) {
    return *reinterpret_cast<const float *>(reinterpret_cast<const unsigned char *>(state_row(state, h, r, s)) +
                                            state.nb[0]);
}
float out_value(const fst_tensor &out, int64_t c, int64_t h, int64_t r, int64_t s) {
    return *reinterpret_cast<const float *>(static_cast<const unsigned char *>(out.data) + c * out.nb[0] +
                                            h * out.nb[1] + r * out.nb[2] + s * out.nb[3]);
}

double rel_diff(const fst_tensor &a, const fst_tensor &b) {
    double max_err = 0, max_ref = 0;
    for (int64_t s = 0; s < b.ne[3]; ++s)
        for (int64_t r = 0; r < b.ne[2]; ++r)
            for (int64_t h = 0; h < b.ne[1]; ++h)
                for (int64_t c = 0; c < b.ne[0]; ++c) {
                    double y = out_value(b, c, h, r, s);
                    raise(max_err, std::fabs(double(out_value(a, c, h, r, s)) - y));
                    raise(max_ref, std::fabs(y));
                }
    return max_err / std::max(1e-6, max_ref);
}

double rel_diff(const fst_tensor &a, const fst_tensor &b, double norm) {
    double max_diff = 0;
    for (int64_t i3 = 0; i3 < a.ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < a.ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < a.ne[1]; ++i1)
                for (int64_t i0 = 0; i0 < a.ne[0]; ++i0) {
                    const double d = std::fabs(ref::read(a, i0, i1, i2, i3) - ref::read(b, i0, i1, i2, i3));
                    if (std::isnan(d)) return INFINITY;
                    max_diff = std::max(max_diff, d);
                }
    return max_diff / std::max(1e-6, norm);
}

double max_abs(const fst_tensor &t) {
    double m = 0;
    for (int64_t i3 = 0; i3 < t.ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < t.ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < t.ne[1]; ++i1)
                for (int64_t i0 = 0; i0 < t.ne[0]; ++i0) m = std::max(m, std::fabs(ref::read(t, i0, i1, i2, i3)));
    return m;
}

StateError state_error(const fst_tensor &state, const ref::Result &ref) {
    StateError e;
    for (int64_t s = 0; s < ref.n_seq; ++s)
        for (int64_t r = 0; r < ref.n_q; ++r)
            for (int64_t h = 0; h < ref.n_head; ++h) {
                size_t i = size_t((s * ref.n_q + r) * ref.n_head + h);
                accumulate(e, state_m(state, h, r, s), state_s(state, h, r, s), ref.M[i], ref.S[i]);
            }
    return e;
}

StateError state_diff(const fst_tensor &state, const fst_tensor &expected) {
    StateError e;
    for (int64_t s = 0; s < expected.ne[3]; ++s)
        for (int64_t r = 0; r < expected.ne[2]; ++r)
            for (int64_t h = 0; h < expected.ne[1]; ++h)
                accumulate(e, state_m(state, h, r, s), state_s(state, h, r, s), state_m(expected, h, r, s),
                           state_s(expected, h, r, s));
    return e;
}

std::vector<bool> covered_bytes(const Buffer &b) {
    std::vector<bool> covered(b.storage.size(), false);
    const fst_tensor &t = b.t;
    size_t row_bytes = size_t(t.ne[0] / fst_type_block_size(t.type)) * t.nb[0];
    size_t base = size_t(static_cast<const unsigned char *>(t.data) - b.storage.data());
    for (int64_t i3 = 0; i3 < t.ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < t.ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < t.ne[1]; ++i1) {
                size_t start = base + size_t(i1) * t.nb[1] + size_t(i2) * t.nb[2] + size_t(i3) * t.nb[3];
                for (size_t i = 0; i < row_bytes; ++i) covered[start + i] = true;
            }
    return covered;
}

} // namespace fst_test
