#include "bench/timing.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <random>

namespace flashstate_tool::bench {
namespace {

// A case ready to time: its views of every copy in the arena, its query, parameters and outputs. Not copyable: the
// views point into its own vectors.
struct Prepared {
    const Case *c = nullptr;
    Layout layout;
    std::vector<CopyViews> views;
    std::vector<float> q;
    fst_tensor q_view{};
    fst_attn_params params{};
    Outputs out;
    Prepared(const Case &cs, const BenchOptions &o, const Limits &limits, const BigBuffer &arena, RowPools &pools,
             ArenaState &state)
        : c(&cs), layout(make_layout(cs, limits.buffer_bytes)), out(cs.n_q) {
        std::string storage;
        for (const Tier &t : cs.tiers) storage += std::string(fst_type_name(t.type)) + ":" + std::to_string(t.n_kv) + " ";
        if (storage != state.storage) {
            fill_copies(cs, layout, arena.data(), pools); // copy 0 was written first: the longest ago
            state = {storage, 0};
        }
        for (int64_t copy = 0; copy < layout.copies; ++copy)
            views.push_back(copy_views(cs, layout, arena.data() + size_t(copy) * layout.copy_bytes));
        std::mt19937_64 rng(7);
        std::normal_distribution<float> nd(0.0f, 1.0f);
        q.resize(size_t(kDim * cs.n_q * kHeads));
        for (float &x : q) x = nd(rng);
        q_view = flashstate::View::f32(q.data(), kDim, cs.n_q, kHeads);
        params = fst_attn_default_params();
        params.scale = float(1.0 / std::sqrt(double(kDim)));
        params.n_threads = cs.threads;
        params.isa = o.isa;
        params.softcap = cs.softcap;
        if (cs.causal) {
            params.virtual_mask = FST_MASK_CAUSAL;
            params.q_pos0 = cs.q_pos0();
        }
    }
    Prepared(const Prepared &) = delete;
    Prepared &operator=(const Prepared &) = delete;

    const CopyViews &next_copy(ArenaState &state) const { return views[size_t(state.next_copy++ % layout.copies)]; }
    // One timed run on the next copy: milliseconds per pass over the cache.
    double time_ms(ArenaState &state) {
        const CopyViews &segs = next_copy(state);
        const auto start = std::chrono::steady_clock::now();
        for (int r = 0; r < c->repeats; ++r) run_once(*c, params, q_view, segs, out);
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count() / c->repeats;
    }
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 == 1 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

} // namespace

void set_roofline(Result &res, const Limits &limits) {
    const Limit &limit = limits.at(res.c->threads);
    const double memory_ms = res.kv_bytes / (limit.dram_gbs * 1e9) * 1e3;
    const double fma_ms = res.flops / (limit.fma_gflops * 1e9) * 1e3;
    res.roofline_ms = res.c->cached ? fma_ms : std::max(memory_ms, fma_ms);
    res.memory_bound = !res.c->cached && memory_ms >= fma_ms;
}

Result run_case(const Case &c, const BenchOptions &o, int runs, const Limits &limits, const BigBuffer &arena,
                RowPools &pools, ArenaState &state) {
    Result res;
    res.c = &c;
    Prepared p(c, o, limits, arena, pools, state);
    res.copies = p.layout.copies;

    const CopyViews &checked = p.next_copy(state);
    run_once(c, p.params, p.q_view, checked, p.out); // untimed: checked, and warms the thread pool
    res.check = check_error(c, p.params, p.q, checked.views, p.out);
    res.check_ok = res.check <= kCheckBound;

    std::vector<double> ms;
    for (int i = 0; i < runs; ++i) ms.push_back(p.time_ms(state));
    res.median_ms = median(ms);
    res.min_ms = *std::min_element(ms.begin(), ms.end());
    res.max_ms = *std::max_element(ms.begin(), ms.end());

    res.kv_bytes = double(p.layout.kv_bytes);
    res.flops = double(visible_pairs(c)) * double(kHeads) * double(2 * kDim + 2 * kDim);
    set_roofline(res, limits);
    return res;
}

Paired paired_ratios(const Case *base, const std::vector<const Case *> &others, const BenchOptions &o, int rounds,
                     const Limits &limits, const BigBuffer &arena, RowPools &pools, ArenaState &state) {
    Paired res;
    std::vector<const Case *> timed;
    for (const Case *c : others)
        if (c != nullptr) timed.push_back(c);
    if (base == nullptr || timed.empty()) return res;
    timed.insert(timed.begin(), base);
    std::vector<std::unique_ptr<Prepared>> prepared;
    for (const Case *c : timed) prepared.push_back(std::make_unique<Prepared>(*c, o, limits, arena, pools, state));
    for (auto &p : prepared) p->time_ms(state); // untimed: warms the pool and the code
    std::vector<std::vector<double>> ratios(timed.size());
    std::vector<double> ms(timed.size());
    for (int r = 0; r < rounds; ++r) {
        for (size_t i = 0; i < timed.size(); ++i) {
            const size_t k = (size_t(r) + i) % timed.size();
            ms[k] = prepared[k]->time_ms(state);
        }
        for (size_t k = 1; k < timed.size(); ++k) ratios[k].push_back(ms[k] / ms[0]);
    }
    res.rounds = rounds;
    size_t k = 1;
    for (const Case *c : others) res.ratios.push_back(c ? median(ratios[k++]) : 0.0);
    return res;
}

} // namespace flashstate_tool::bench
