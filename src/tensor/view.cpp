#include "tensor/view.h"

#include "common/error.h"
#include "tensor/types.h"

#include <algorithm>
#include <array>
#include <limits>
#include <numeric>

namespace fst {

namespace {

std::string type_list(std::initializer_list<fst_type> allowed) {
    std::string s;
    for (fst_type t : allowed) s += (s.empty() ? "" : ", ") + std::string(type_name(t));
    return allowed.size() == 1 ? s : "one of " + s;
}

std::string dim_field(const char *field, int dim) { return std::string(field) + "[" + std::to_string(dim) + "]"; }

} // namespace

ByteRange check_view(const char *name, const fst_tensor *t, std::initializer_list<fst_type> allowed,
                     unsigned may_be_empty_dims) {
    if (t == nullptr) fail(name, "pointer", "NULL", "a tensor");
    const int raw_type = enum_value(t->type);
    if (std::find_if(allowed.begin(), allowed.end(), [&](fst_type a) { return int(a) == raw_type; }) == allowed.end()) {
        const std::string actual = std::to_string(raw_type) + " (" + (type_known(raw_type) ? type_name(t->type) : "unknown") + ")";
        fail(name, "type", actual, type_list(allowed), FST_ERR_UNSUPPORTED);
    }
    bool empty = false;
    for (int i = 0; i < 4; ++i) {
        const bool may_be_empty = (may_be_empty_dims >> i) & 1u;
        if (t->ne[i] < (may_be_empty ? 0 : 1)) fail(name, dim_field("ne", i), t->ne[i], may_be_empty ? ">= 0" : ">= 1");
        empty = empty || t->ne[i] == 0;
    }
    const size_t bsize = block_bytes(t->type);
    const int64_t belems = block_elems(t->type);
    if (t->nb[0] != bsize)
        fail(name, "nb[0]", int64_t(t->nb[0]), std::to_string(bsize) + " (the size of one " + type_name(t->type) +
                                                   (belems > 1 ? " block)" : " element)"));
    if (t->ne[0] % belems != 0)
        fail(name, "ne[0]", t->ne[0], std::string("a multiple of ") + std::to_string(belems) + " for " + type_name(t->type));
    const size_t align = type_alignment(t->type);
    for (int i = 1; i < 4; ++i)
        if (t->nb[i] % align != 0)
            fail(name, dim_field("nb", i), int64_t(t->nb[i]), "a multiple of " + std::to_string(align));

    // Byte span, with every product and sum checked: (ne[i] - 1) * nb[i] summed, plus one row.
    using u64 = unsigned long long;
    u64 span = 0;
    const u64 row_bytes = u64(bsize) * u64(t->ne[0] / belems); // ne[0] / belems * bsize cannot overflow 2^63 * 34 / 32
    if (!empty) {
        if (__builtin_mul_overflow(u64(t->ne[0] / belems), u64(bsize), &span))
            fail(name, "ne[0]", t->ne[0], "a row size that fits in memory");
        for (int i = 1; i < 4; ++i) {
            u64 part;
            if (__builtin_mul_overflow(u64(t->ne[i] - 1), u64(t->nb[i]), &part) || __builtin_add_overflow(span, part, &span) ||
                span > u64(std::numeric_limits<intptr_t>::max()))
                fail_message(std::string(name) + "." + dim_field("ne", i) + " = " + std::to_string(t->ne[i]) + " with " + name +
                             "." + dim_field("nb", i) + " = " + std::to_string(t->nb[i]) +
                             ", expected a byte span (ne * nb) that fits below 2^63 bytes (the span overflows)");
        }
    }
    if (empty) return ByteRange{};
    if (t->data == nullptr) {
        fail(name, "data", "NULL", "non-NULL for ne = [" + std::to_string(t->ne[0]) + ", " + std::to_string(t->ne[1]) +
                                       ", " + std::to_string(t->ne[2]) + ", " + std::to_string(t->ne[3]) + "]");
    }
    const uintptr_t begin = reinterpret_cast<uintptr_t>(t->data);
    if (begin % align != 0)
        fail(name, "data", "address " + std::to_string(begin), "an address aligned to " + std::to_string(align) + " bytes");
    uintptr_t end;
    if (__builtin_add_overflow(begin, uintptr_t(span), &end))
        fail(name, "data", "address " + std::to_string(begin), "a span that does not wrap around the address space");

    // Rows must not overlap: ordered by stride, each dimension with more than one entry must step past the whole
    // extent of the dimensions below it.
    std::array<int, 3> dims{1, 2, 3};
    std::sort(dims.begin(), dims.end(), [&](int a, int b) { return t->nb[a] < t->nb[b]; });
    u64 extent = row_bytes;
    for (int i : dims) {
        if (t->ne[i] <= 1) continue;
        if (u64(t->nb[i]) < extent)
            fail(name, dim_field("nb", i), int64_t(t->nb[i]),
                 ">= " + std::to_string(extent) + " so that rows do not overlap");
        extent += u64(t->ne[i] - 1) * u64(t->nb[i]);
    }
    size_t period = 0;
    for (int i = 1; i < 4; ++i)
        if (t->ne[i] > 1) period = std::gcd(period, t->nb[i]);
    return ByteRange{begin, end, size_t(row_bytes), period};
}

void expect_extent(const char *name, const fst_tensor *t, int dim, int64_t expected, const char *what,
                   const char *what_prefix) {
    if (t->ne[dim] != expected)
        fail(name, dim_field("ne", dim), t->ne[dim], std::to_string(expected) + " (" + what_prefix + what + ")");
}

namespace {

// Whether a and b provably share no byte although their ranges intersect: modulo g, a common divisor of both
// periods, every byte of a lies in the window [a.begin, a.begin + a.row) and every byte of b in b's; if the two
// windows do not meet (each no longer than the gap to the other, so a.row + b.row <= g), no address is in both.
bool rows_interleave_disjointly(ByteRange a, ByteRange b) {
    const size_t g = std::gcd(a.period, b.period); // gcd(0, x) = x: a single row fits any period
    if (g == 0) return false;                      // two single rows: their ranges are their bytes
    const size_t ra = a.begin % g, rb = b.begin % g;
    return (rb + g - ra) % g >= a.row && (ra + g - rb) % g >= b.row;
}

} // namespace

void expect_disjoint(const char *a_name, ByteRange a, const char *b_name, ByteRange b) {
    if (a.empty() || b.empty()) return;
    if (a.begin < b.end && b.begin < a.end && !rows_interleave_disjointly(a, b))
        fail_message(std::string(a_name) + " overlaps " + b_name + ": " + a_name + " bytes [" + std::to_string(a.begin) +
                     ", " + std::to_string(a.end) + ") and " + b_name + " bytes [" + std::to_string(b.begin) + ", " +
                     std::to_string(b.end) + "), expected disjoint memory");
}

} // namespace fst
