#include "bench/cases.h"

#include <string>

namespace flashstate_tool::bench {
namespace {

// ggml's CPU flash_attn_ext on the same machine kind (Intel Xeon, AVX-512 with BF16/FP16/VNNI and AMX, 2 cores),
// native build, graph built once, median of repeats, buffers rotated past the cache: the table of issue 4
// ("Speed: runtime-dispatched SIMD kernels ..."). Milliseconds at 2 threads.
struct GgmlTime {
    fst_type type;
    int64_t n_kv;
    double ms;
};
constexpr GgmlTime kGgmlDecode[] = {
    {FST_TYPE_F16, 4096, 1.5},   {FST_TYPE_F16, 32768, 14.3},  {FST_TYPE_F16, 131072, 70.8},
    {FST_TYPE_Q8_0, 4096, 3.3},  {FST_TYPE_Q8_0, 32768, 31.0}, {FST_TYPE_Q8_0, 131072, 156.0},
    {FST_TYPE_Q4_0, 4096, 5.5},  {FST_TYPE_Q4_0, 32768, 46.0}, {FST_TYPE_Q4_0, 131072, 183.0},
};
constexpr double kGgmlPrefillMs = 268.0; // n_q 512, n_kv 4096, causal, F16

double ggml_decode_ms(fst_type type, int64_t n_kv) {
    for (const GgmlTime &g : kGgmlDecode)
        if (g.type == type && g.n_kv == n_kv) return g.ms;
    return 0.0;
}

} // namespace

std::string kilo(int64_t n) { return n % 1024 == 0 ? std::to_string(n / 1024) + "k" : std::to_string(n); }

std::vector<Case> make_cases(bool quick, const std::vector<int> &thread_counts) {
    const int main_threads = thread_counts.back();
    const std::string t_main = "-t" + std::to_string(main_threads);
    std::vector<Case> cases;
    const std::vector<int64_t> decode_n_kv = quick ? std::vector<int64_t>{4096}
                                                   : std::vector<int64_t>{4096, 32768, 131072};
    for (fst_type type : {FST_TYPE_F16, FST_TYPE_Q8_0, FST_TYPE_Q4_0})
        for (int64_t n_kv : decode_n_kv)
            for (int t : thread_counts) {
                Case c;
                c.name = std::string("decode-") + fst_type_name(type) + "-" + kilo(n_kv) + "-t" + std::to_string(t);
                c.tiers = {{type, n_kv, 1}};
                c.threads = t;
                // ggml's times are for caches read from DRAM: no comparison on --quick's cache-sized buffer.
                if (t == kTargetThreads && !quick) c.ggml_ms = ggml_decode_ms(type, n_kv);
                cases.push_back(c);
            }

    // The same decode with the cache in the CPU caches (512 keys x 8 KV heads, 0.6-2 MiB): what the kernels
    // compute per key when memory is not waited for. Read against the DRAM cases above, it separates the
    // arithmetic from how well it overlaps the memory stream.
    for (fst_type type : {FST_TYPE_F16, FST_TYPE_Q8_0, FST_TYPE_Q4_0}) {
        Case c;
        c.name = std::string("decode-") + fst_type_name(type) + "-512-cached-t1";
        c.tiers = {{type, 512, 1}};
        c.threads = 1;
        c.cached = true;
        c.repeats = quick ? 10 : 200;
        cases.push_back(c);
    }

    // A few query positions at once (speculative decoding, small batches), the last 4 under the causal mask: 16 rows
    // per KV head. No target; it shows the row-group path with more rows than one GQA group.
    Case few_q;
    few_q.n_q = 4;
    few_q.name = "decode-f16-" + kilo(quick ? 4096 : 32768) + "-q4" + t_main;
    few_q.tiers = {{FST_TYPE_F16, quick ? 4096 : 32768, 1}};
    few_q.causal = true;
    few_q.threads = main_threads;
    cases.push_back(few_q);

    // The logits capped as Gemma 2 caps them (softcap 50): no target; it shows what the cap's tanh costs a decode.
    Case capped;
    capped.name = "decode-f16-" + kilo(quick ? 4096 : 32768) + "-softcap50" + t_main;
    capped.tiers = {{FST_TYPE_F16, quick ? 4096 : 32768, 1}};
    capped.softcap = 50;
    capped.threads = main_threads;
    cases.push_back(capped);

    Case prefill;
    prefill.n_q = quick ? 64 : 512;
    const int64_t prefill_n_kv = quick ? 1024 : 4096;
    prefill.name = "prefill-f16-" + kilo(prefill_n_kv) + "-q" + std::to_string(prefill.n_q) + t_main;
    prefill.tiers = {{FST_TYPE_F16, prefill_n_kv, 1}};
    prefill.causal = true;
    prefill.threads = main_threads;
    if (!quick && main_threads == kTargetThreads) prefill.ggml_ms = kGgmlPrefillMs;
    cases.push_back(prefill);

    // One call per segment ("split"), then the same segments in one multi-segment call ("multiseg").
    const int64_t split_n_kv = quick ? 4096 : 32768;
    const std::vector<int64_t> splits = quick ? std::vector<int64_t>{1, 8, 64} : std::vector<int64_t>{1, 8, 64, 512};
    for (bool one_call : {false, true})
        for (int64_t s : splits) {
            if (one_call && s == 1) continue; // the same single call as split-...-s1
            Case c;
            c.name = std::string(one_call ? "multiseg" : "split") + "-f16-" + kilo(split_n_kv) + "-s" +
                     std::to_string(s) + t_main;
            c.tiers = {{FST_TYPE_F16, split_n_kv, s}};
            c.one_call = one_call;
            c.threads = main_threads;
            cases.push_back(c);
        }

    // The same cache in pages scattered in memory (a paged KV cache as vLLM keeps it, 16 keys per page by default),
    // one fst_attn_paged call: no target; against split-...-s1 it shows what reading rows through a page table costs
    // (the multiseg cases above are the same pages as segments, each rounded and merged as a call's result).
    for (fst_type type : {FST_TYPE_F16, FST_TYPE_Q8_0})
        for (int64_t page_keys : {16, 256}) {
            if (type != FST_TYPE_F16 && page_keys != 16) continue;
            Case c;
            c.name = std::string("paged-") + fst_type_name(type) + "-" + kilo(split_n_kv) + "-p" + std::to_string(page_keys) + t_main;
            c.tiers = {{type, split_n_kv, 1}};
            c.page_keys = page_keys;
            c.threads = main_threads;
            cases.push_back(c);
        }

    // The newest 1/8 of the cache (4096 tokens of 32k) in F16, the older tokens in Q8_0: two segments.
    for (bool one_call : {false, true}) {
        Case mixed;
        mixed.name = std::string(one_call ? "multiseg-" : "") + "mixed-q8_0+f16-" + kilo(split_n_kv) + t_main;
        mixed.tiers = {{FST_TYPE_Q8_0, split_n_kv - split_n_kv / 8, 1}, {FST_TYPE_F16, split_n_kv / 8, 1}};
        mixed.one_call = one_call;
        mixed.threads = main_threads;
        cases.push_back(mixed);
    }
    return cases;
}

bool selected(const Case &c, const std::vector<std::string> &filters) {
    if (filters.empty()) return true;
    for (const std::string &f : filters)
        if (c.name.find(f) != std::string::npos) return true;
    return false;
}

SplitCases split_cases() {
    const std::string t = "-t" + std::to_string(kTargetThreads);
    return {"split-f16-32k-s1" + t, "split-f16-32k-s64" + t, "multiseg-f16-32k-s64" + t};
}

} // namespace flashstate_tool::bench
