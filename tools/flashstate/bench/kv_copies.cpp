#include "bench/kv_copies.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <thread>

namespace flashstate_tool::bench {
namespace {

size_t row_bytes(fst_type type) { return flashstate::row_bytes(type, kDim); }

size_t align64(size_t n) { return (n + 63) & ~size_t(63); }

uint64_t splitmix64(uint64_t &s) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The tier of a paged case as pages of c.page_keys rows of the copy (the copy's rows in page order, its KV heads
// apart as in the contiguous views), placed in a random order that is the same for every copy.
CopyViews paged_views(const Case &c, const Layout &l, unsigned char *copy) {
    CopyViews cv;
    const Tier &t = c.tiers[0];
    const int64_t n_pages = t.n_kv / c.page_keys;
    cv.table.resize(size_t(n_pages));
    std::iota(cv.table.begin(), cv.table.end(), 0);
    std::shuffle(cv.table.begin(), cv.table.end(), std::mt19937_64(11));
    cv.table_view = flashstate::View::contiguous(FST_TYPE_I32, cv.table.data(), n_pages);
    const fst_tensor k = flashstate::View::contiguous(t.type, copy + l.k_offset[0], kDim, t.n_kv, kHeadsKv);
    const fst_tensor v = flashstate::View::contiguous(t.type, copy + l.v_offset[0], kDim, t.n_kv, kHeadsKv);
    for (auto [pages, rows] : {std::pair<fst_tensor *, const fst_tensor *>{&cv.k_pages, &k}, {&cv.v_pages, &v}}) {
        *pages = *rows;
        pages->ne[1] = c.page_keys;
        pages->ne[3] = n_pages;
        pages->nb[3] = size_t(c.page_keys) * rows->nb[1];
    }
    for (int64_t i = 0; i < n_pages; ++i) {
        const int64_t first = int64_t(cv.table[size_t(i)]) * c.page_keys;
        cv.views.push_back({flashstate::View::rows(k, first, c.page_keys), flashstate::View::rows(v, first, c.page_keys),
                            i * c.page_keys});
    }
    return cv;
}

} // namespace

const std::vector<unsigned char> &RowPools::rows(fst_type type) {
    for (auto &p : pools_)
        if (p.first == type) return p.second;
    std::mt19937_64 rng(0x5eed0000u + unsigned(type));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> values(static_cast<size_t>(kDim));
    std::vector<unsigned char> pool(row_bytes(type) * size_t(kRows));
    for (int64_t r = 0; r < kRows; ++r) {
        for (float &x : values) x = nd(rng);
        flashstate::quantize_row(type, values.data(), pool.data() + size_t(r) * row_bytes(type), kDim);
    }
    pools_.emplace_back(type, std::move(pool));
    return pools_.back().second;
}

Layout make_layout(const Case &c, size_t buffer_bytes) {
    Layout l;
    for (const Tier &t : c.tiers) {
        const size_t bytes = row_bytes(t.type) * size_t(t.n_kv * kHeadsKv);
        l.k_offset.push_back(l.copy_bytes);
        l.copy_bytes += align64(bytes);
        l.v_offset.push_back(l.copy_bytes);
        l.copy_bytes += align64(bytes);
        l.kv_bytes += 2 * bytes;
    }
    l.copies = c.cached ? 1 : std::max<int64_t>(1, int64_t((buffer_bytes + l.copy_bytes - 1) / l.copy_bytes));
    return l;
}

void fill_copies(const Case &c, const Layout &l, unsigned char *arena, RowPools &pools) {
    std::vector<const unsigned char *> pool;
    for (const Tier &t : c.tiers) pool.push_back(pools.rows(t.type).data());
    const int workers = int(std::max(1u, std::thread::hardware_concurrency()));
    auto fill = [&](int w) {
        for (int64_t copy = w; copy < l.copies; copy += workers) {
            uint64_t seed = uint64_t(copy) * 0x100000001b3ull + 1;
            unsigned char *base = arena + size_t(copy) * l.copy_bytes;
            for (size_t i = 0; i < c.tiers.size(); ++i) {
                const size_t rb = row_bytes(c.tiers[i].type);
                const int64_t n_rows = c.tiers[i].n_kv * kHeadsKv;
                for (size_t offset : {l.k_offset[i], l.v_offset[i]})
                    for (int64_t r = 0; r < n_rows; ++r)
                        std::memcpy(base + offset + size_t(r) * rb,
                                    pool[i] + size_t(splitmix64(seed) % RowPools::kRows) * rb, rb);
            }
        }
    };
    std::vector<std::thread> threads;
    for (int w = 1; w < workers; ++w) threads.emplace_back(fill, w);
    fill(0);
    for (std::thread &t : threads) t.join();
}

CopyViews copy_views(const Case &c, const Layout &l, unsigned char *copy) {
    if (c.page_keys > 0) return paged_views(c, l, copy);
    CopyViews cv;
    std::vector<SegmentView> &views = cv.views;
    int64_t first = 0;
    for (size_t i = 0; i < c.tiers.size(); ++i) {
        const Tier &t = c.tiers[i];
        const fst_tensor k = flashstate::View::contiguous(t.type, copy + l.k_offset[i], kDim, t.n_kv, kHeadsKv);
        const fst_tensor v = flashstate::View::contiguous(t.type, copy + l.v_offset[i], kDim, t.n_kv, kHeadsKv);
        const int64_t length = (t.n_kv + t.segments - 1) / t.segments;
        for (int64_t j = 0; j < t.n_kv; j += length) {
            const int64_t n = std::min(length, t.n_kv - j);
            views.push_back({flashstate::View::rows(k, j, n), flashstate::View::rows(v, j, n), first + j});
        }
        first += t.n_kv;
    }
    for (const SegmentView &s : views) cv.list.push_back({&s.k, &s.v, nullptr, s.kv_pos0, nullptr});
    return cv;
}

void run_once(const Case &c, const fst_attn_params &base, const fst_tensor &q, const CopyViews &segs, Outputs &o) {
    flashstate::state_init(o.state_view, o.out_view);
    if (c.page_keys > 0) {
        const fst_paged_kv kv{&segs.k_pages, &segs.v_pages, &segs.table_view, c.n_kv()};
        flashstate::attn_paged(base, q, kv, nullptr, nullptr, o.state_view, o.out_view);
        return;
    }
    if (c.one_call) {
        const fst_status status = fst_attn_segments(&base, &q, segs.list.data(), int64_t(segs.list.size()), nullptr,
                                                    &o.state_view, &o.out_view);
        if (status != FST_OK) throw flashstate::Error(flashstate::Status::from_call(status));
        return;
    }
    fst_attn_params p = base;
    for (const SegmentView &s : segs.views) {
        p.kv_pos0 = s.kv_pos0;
        flashstate::attn_with_state(p, q, s.k, s.v, o.state_view, o.out_view);
    }
}

int64_t visible_pairs(const Case &c) {
    if (!c.causal) return c.n_q * c.n_kv();
    int64_t pairs = 0;
    for (int64_t r = 0; r < c.n_q; ++r) pairs += std::min(c.n_kv(), c.q_pos0() + r + 1);
    return pairs;
}

double check_error(const Case &c, const fst_attn_params &p, const std::vector<float> &q, const std::vector<SegmentView> &segs,
                   const Outputs &o) {
    const std::vector<int64_t> heads = {0, kHeads / 2 - 3, kHeads - 1};
    const std::vector<int64_t> rows =
        c.n_q == 1 ? std::vector<int64_t>{0} : std::vector<int64_t>{0, c.n_q / 2, c.n_q - 1};
    std::vector<float> k_row(static_cast<size_t>(kDim)), v_row(static_cast<size_t>(kDim));
    double max_diff = 0, max_ref = 0;
    for (int64_t h : heads)
        for (int64_t r : rows) {
            const int64_t g = h / (kHeads / kHeadsKv);
            const float *q_row = &q[size_t((h * c.n_q + r) * kDim)];
            std::vector<double> logits;
            std::vector<std::pair<const SegmentView *, int64_t>> keys;
            for (const SegmentView &s : segs)
                for (int64_t j = 0; j < s.k.ne[1]; ++j) {
                    if (c.causal && s.kv_pos0 + j > c.q_pos0() + r) continue;
                    const auto *k = static_cast<const unsigned char *>(s.k.data) + j * s.k.nb[1] + g * s.k.nb[2];
                    flashstate::dequantize_row(s.k.type, k, k_row.data(), kDim);
                    double dot = 0;
                    for (int64_t d = 0; d < kDim; ++d) dot += double(q_row[d]) * double(k_row[size_t(d)]);
                    const double x = double(p.scale) * dot;
                    logits.push_back(p.softcap > 0 ? double(p.softcap) * std::tanh(x / double(p.softcap)) : x);
                    keys.emplace_back(&s, j);
                }
            const double m = *std::max_element(logits.begin(), logits.end());
            double sum = 0;
            std::vector<double> acc(size_t(kDim), 0.0);
            for (size_t i = 0; i < keys.size(); ++i) {
                const SegmentView &s = *keys[i].first;
                const auto *v =
                    static_cast<const unsigned char *>(s.v.data) + keys[i].second * s.v.nb[1] + g * s.v.nb[2];
                flashstate::dequantize_row(s.v.type, v, v_row.data(), kDim);
                const double w = std::exp(logits[i] - m);
                sum += w;
                for (int64_t d = 0; d < kDim; ++d) acc[size_t(d)] += w * double(v_row[size_t(d)]);
            }
            const float *out = &o.out[size_t((r * kHeads + h) * kDim)];
            for (int64_t d = 0; d < kDim; ++d) {
                const double ref = acc[size_t(d)] / sum;
                max_diff = std::max(max_diff, std::fabs(double(out[d]) - ref));
                max_ref = std::max(max_ref, std::fabs(ref));
            }
        }
    return max_diff / std::max(1e-6, max_ref);
}

} // namespace flashstate_tool::bench
