// `flashstate bench`: the K/V copies a case reads (filled from pools of stored random rows, rotated so that no run
// finds its cache in the CPU's caches), their views, one pass over them, and the check of a result against a
// double-precision softmax over the same stored values.
#pragma once

#include "bench/cases.h"

#include <flashstate/flashstate.hpp>

#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace flashstate_tool::bench {

constexpr double kCheckBound = 1e-5; // SPEC section 4: against double precision, same stored inputs

// Where one copy keeps each tier's K and V: contiguous [D, n_kv, n_head_kv] tensors at these byte offsets.
struct Layout {
    std::vector<size_t> k_offset, v_offset;
    size_t copy_bytes = 0; // one copy, 64-byte aligned
    size_t kv_bytes = 0;   // K and V bytes a run reads
    int64_t copies = 0;    // enough that all of them together are at least the DRAM buffer
};

Layout make_layout(const Case &c, size_t buffer_bytes);

// Random N(0,1) rows already stored in each type (through fst_quantize_row). The copies are filled with rows drawn
// at random from these pools: every stored row is a real quantized random row, and filling 2 GiB takes a memcpy
// per row instead of a quantization per element.
class RowPools {
public:
    static constexpr int64_t kRows = 16384;

    // The kRows stored rows of a type, made on first use.
    const std::vector<unsigned char> &rows(fst_type type);

private:
    std::vector<std::pair<fst_type, std::vector<unsigned char>>> pools_;
};

// Fills every copy of every tier with rows drawn from the pools, on every hardware thread.
void fill_copies(const Case &c, const Layout &l, unsigned char *arena, RowPools &pools);

// The K and V views of one segment of one copy.
struct SegmentView {
    fst_tensor k, v;
    int64_t kv_pos0;
};

// The segments of one copy, and the same as an fst_segment list (pointing into `views`) for fst_attn_segments.
// A paged case: its page pools and page table, and its pages as views in key order (for the check).
struct CopyViews {
    std::vector<SegmentView> views;
    std::vector<fst_segment> list;
    fst_tensor k_pages{}, v_pages{}, table_view{};
    std::vector<int32_t> table;
};

// The views of one copy: contiguous segments of each tier, or a paged case's pools, table and pages.
CopyViews copy_views(const Case &c, const Layout &l, unsigned char *copy);

// state and out of one case, with their views.
struct Outputs {
    std::vector<float> state, out;
    fst_tensor state_view{}, out_view{};
    explicit Outputs(int64_t n_q) : state(size_t(2 * kHeads * n_q)), out(size_t(kDim * kHeads * n_q)) {
        state_view = flashstate::View::state(state.data(), kHeads, n_q);
        out_view = flashstate::View::out(out.data(), kDim, kHeads, n_q);
    }
};

// One pass over the cache: the empty state, then one fst_attn_with_state call per segment, oldest first, or one
// fst_attn_segments call with all of them.
void run_once(const Case &c, const fst_attn_params &base, const fst_tensor &q, const CopyViews &segs, Outputs &o);

// Visible (query row, key) pairs: every pair, or under the causal mask those with key position <= row position.
int64_t visible_pairs(const Case &c);

// max |out - ref| / max(1e-6, max |ref|) over a few (head, row) pairs, ref a double-precision softmax over the
// stored K/V of the segments (dequantized exactly with fst_dequantize_row).
double check_error(const Case &c, const fst_attn_params &p, const std::vector<float> &q, const std::vector<SegmentView> &segs,
                   const Outputs &o);

} // namespace flashstate_tool::bench
