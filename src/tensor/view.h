// Checked views: everything a tensor argument must satisfy before any kernel touches its memory.
#pragma once

#include <flashstate/flashstate.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

namespace fst {

// The byte range [begin, end) a view touches; empty (begin == end) when any extent is 0. Every byte of the view is
// begin + [0, row) plus a multiple of period: the greatest common divisor of the strides of its dimensions with more
// than one entry (0: a single row). expect_disjoint uses that to accept views that interleave without sharing a
// byte, such as M, S and O packed side by side in one row per query.
struct ByteRange {
    uintptr_t begin = 0, end = 0;
    size_t row = 0, period = 0;
    bool empty() const { return begin == end; }
};

// Validates one view: a known type among `allowed`; extents >= 0 (>= 1 for dimensions not in `may_be_empty`);
// nb[0] the element or block size; ne[0] a multiple of the block; data and nb[1..3] aligned; byte span without
// overflow; non-NULL data when not empty; rows that do not overlap. Throws fst::Error naming `name`.
// Returns the byte range the view spans.
ByteRange check_view(const char *name, const fst_tensor *t, std::initializer_list<fst_type> allowed,
                     unsigned may_be_empty_dims = 0);

// Throws unless t->ne[dim] == expected; the message explains the expectation with what_prefix + what (C strings,
// so that a successful check allocates nothing).
void expect_extent(const char *name, const fst_tensor *t, int dim, int64_t expected, const char *what,
                   const char *what_prefix = "");

// Throws "<a> overlaps <b>" when two non-empty views may share a byte: their ranges intersect and their rows do not
// fall into disjoint windows modulo a common period (see ByteRange).
void expect_disjoint(const char *a_name, ByteRange a, const char *b_name, ByteRange b);

inline const unsigned char *at(const fst_tensor &t, int64_t i1, int64_t i2, int64_t i3) {
    return static_cast<const unsigned char *>(t.data) + size_t(i1) * t.nb[1] + size_t(i2) * t.nb[2] +
           size_t(i3) * t.nb[3];
}
inline unsigned char *at_mut(const fst_tensor &t, int64_t i1, int64_t i2, int64_t i3) {
    return static_cast<unsigned char *>(t.data) + size_t(i1) * t.nb[1] + size_t(i2) * t.nb[2] + size_t(i3) * t.nb[3];
}

} // namespace fst
