// What every fuzz target shares: a reader that turns the fuzzer's bytes into choices, tensor views over real
// buffers sized exactly from their descriptors, snapshots to prove what a call did not write, and the checks.
//
// Buffers: a view whose descriptor looks usable gets a heap block of exactly the bytes it spans (ASan then reports
// any read or write outside that span). A view the library must reject (negative extent, a span that overflows,
// wrong nb[0], NULL data, ...) gets a small block or none. A well-formed view larger than kMaxBytes cannot be backed,
// so an input that makes one is skipped: the library cannot know buffer sizes and would rightly read it all.
#pragma once

#include <flashstate/flashstate.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace fuzz {

// Largest buffer a view may need (8 MiB). A long decode's F32/F16/BF16 K or V (fuzz_attention, fuzz_paged) past a
// 1024-key chunk takes 2.4-4.7 MiB with 2 heads at D = 128 and up to 19 MiB with 32 heads at D = 32 (those past
// 8 MiB are still skipped); with 2 MiB only quantized K/V ever crossed a chunk.
constexpr size_t kMaxBytes = size_t(1) << 23;
constexpr float kInf = std::numeric_limits<float>::infinity();

// A property violation: print it and abort, which libFuzzer records as a crash with the input saved.
[[noreturn]] inline void fail(const std::string &what) {
    std::fprintf(stderr, "fuzz property violated: %s\n", what.c_str());
    std::fflush(stderr);
    std::abort();
}

// Reads the input front to back. Past the end every read returns 0, and 0 always decodes to the plain choice
// (no hostile edit, the first table entry), so every prefix of an input is itself a complete, tame input.
class Reader {
public:
    Reader(const uint8_t *data, size_t size) : p_(data), end_(data + size) {}
    uint8_t u8() { return p_ < end_ ? *p_++ : 0; }
    uint16_t u16() { return uint16_t(u8() | (u8() << 8)); }
    uint64_t u64() {
        uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v |= uint64_t(u8()) << (8 * i);
        return v;
    }
    template <class T> T pick(std::initializer_list<T> table) { return table.begin()[u8() % table.size()]; }
    bool rare() { return u8() >= 240; } // about one in sixteen

private:
    const uint8_t *p_, *end_;
};

// Bulk data comes from a generator seeded by the input, so descriptors stay a few bytes long.
class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed) {}
    uint64_t next() {
        uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    uint8_t byte() { return uint8_t(next() >> 56); }

private:
    uint64_t s_;
};

// How buffers are filled. Finite: every byte has bit 6 clear, so every F32, F16 and BF16 value (and every Q8_0/Q4_0
// scale) has |x| < 2 and is finite. Raw: any bytes, NaN and inf included; finiteness is then not checked.
enum class Fill { Finite, Raw };

// C callers may store any int in an enum field, but C++ code may not even load such a value (UBSan's -fsanitize=enum
// reports it). So the harness writes and reads enum fields through memcpy, as the library must.
template <class E> int enum_int(const E &e) {
    static_assert(sizeof(E) == sizeof(int));
    int v;
    std::memcpy(&v, &e, sizeof v);
    return v;
}
template <class E> void set_enum(E &e, int v) {
    static_assert(sizeof(E) == sizeof(int));
    std::memcpy(&e, &v, sizeof v);
}

// Element and block sizes as the header documents them, written here independently of the library.
struct TypeInfo {
    bool known = false;
    size_t block_bytes = 1;
    int64_t block_elems = 1;
};
inline TypeInfo type_info(int code) {
    switch (code) {
    case FST_TYPE_F32:
    case FST_TYPE_I32: return {true, 4, 1};
    case FST_TYPE_F16:
    case FST_TYPE_BF16: return {true, 2, 1};
    case FST_TYPE_Q8_0: return {true, 34, 32};
    case FST_TYPE_Q4_0: return {true, 18, 32};
    default: return {};
    }
}
inline TypeInfo type_info(const fst_type &t) { return type_info(enum_int(t)); }

// Type codes the fuzzer may put in a descriptor: the known ones, and unknown ones inside and outside the C++ enum's
// range of values.
inline int any_type_code(Reader &in) {
    return in.pick<int>({FST_TYPE_F32, FST_TYPE_F16, FST_TYPE_BF16, FST_TYPE_Q8_0, FST_TYPE_Q4_0, FST_TYPE_I32, 3, 31,
                         99, -1, std::numeric_limits<int>::max()});
}

// Heap blocks of exact sizes, with a snapshot to compare against after a call.
class Memory {
public:
    Memory() = default;
    Memory(const Memory &) = delete;
    Memory &operator=(const Memory &) = delete;
    ~Memory() {
        for (Block &b : blocks_) std::free(b.p);
    }

    // A block of exactly `size` bytes (0 allowed: any access to it is reported by ASan).
    int add(size_t size) {
        unsigned char *p = static_cast<unsigned char *>(std::malloc(size));
        if (p == nullptr && size != 0) fail("out of memory in the harness");
        blocks_.push_back(Block{p, size, {}});
        return int(blocks_.size()) - 1;
    }
    unsigned char *data(int i) const { return blocks_[size_t(i)].p; }
    size_t size(int i) const { return blocks_[size_t(i)].size; }
    int count() const { return int(blocks_.size()); }

    void snapshot() {
        for (Block &b : blocks_) b.before.assign(b.p, b.p + b.size);
    }
    bool unchanged(int i) const {
        const Block &b = blocks_[size_t(i)];
        return b.size == 0 || std::memcmp(b.p, b.before.data(), b.size) == 0;
    }
    void restore(int i) {
        Block &b = blocks_[size_t(i)];
        if (b.size) std::memcpy(b.p, b.before.data(), b.size);
    }
    // The snapshot's copy of the byte at live address p (p must lie in a block).
    const unsigned char *before(const void *p) const {
        const auto *c = static_cast<const unsigned char *>(p);
        for (const Block &b : blocks_)
            if (b.size && c >= b.p && c < b.p + b.size) return b.before.data() + (c - b.p);
        fail("before(): address outside every block");
    }

private:
    struct Block {
        unsigned char *p;
        size_t size;
        std::vector<unsigned char> before;
    };
    std::vector<Block> blocks_;
};

enum class Backing {
    Exact,   // a block of exactly the span (plus the misalignment offset), filled
    Empty,   // an extent is 0: data is NULL, a 0-byte block or a dangling pointer
    Invalid, // negative extent or a span >= 2^63: the library must reject it; data is a small block or NULL
    TooBig,  // well-formed but larger than kMaxBytes: the input is skipped
};

struct View {
    fst_tensor t{};
    Backing backing = Backing::Invalid;
    int block = -1;            // Memory block holding the data, -1 if none
    size_t span = 0;           // bytes from data to the end of the last row
    std::string reject_reason; // non-empty: no entry point may accept this view
    bool empty() const { return backing == Backing::Empty; }
};

inline std::string describe(const char *name, const fst_tensor &t) {
    char buf[320];
    std::snprintf(buf, sizeof buf, "%s{type %d, ne [%lld, %lld, %lld, %lld], nb [%zu, %zu, %zu, %zu]}", name,
                  enum_int(t.type), (long long)t.ne[0], (long long)t.ne[1], (long long)t.ne[2], (long long)t.ne[3],
                  t.nb[0], t.nb[1], t.nb[2], t.nb[3]);
    return buf;
}

// FUZZ_VERBOSE=1 in the environment: targets print what they decoded (to read a reproducer).
inline bool verbose() {
    static const bool on = std::getenv("FUZZ_VERBOSE") != nullptr;
    return on;
}
inline void print_view(const char *name, const View &v) {
    if (!verbose()) return;
    static const char *kBacking[] = {"exact", "empty", "invalid", "too big"};
    std::fprintf(stderr, "%s data %p span %zu (%s)%s%s\n", describe(name, v.t).c_str(), v.t.data, v.span,
                 kBacking[int(v.backing)], v.reject_reason.empty() ? "" : ", must reject: ", v.reject_reason.c_str());
}

// Calls fn(row pointer) for every row (i1, i2, i3) of a view.
template <class Fn> void for_each_row(const fst_tensor &t, Fn &&fn) {
    for (int64_t i3 = 0; i3 < t.ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < t.ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < t.ne[1]; ++i1)
                fn(static_cast<unsigned char *>(t.data) + size_t(i1) * t.nb[1] + size_t(i2) * t.nb[2] +
                   size_t(i3) * t.nb[3]);
}

inline size_t row_bytes(const fst_tensor &t) {
    const TypeInfo ti = type_info(t.type);
    return size_t(t.ne[0] / ti.block_elems) * ti.block_bytes;
}

// True if two rows of a view spanning `span` bytes share a byte (checked by sorting the row offsets).
inline bool rows_overlap(const fst_tensor &t, size_t span) {
    const size_t row = row_bytes(t);
    if (row == 0) return false;
    unsigned __int128 rows = 1;
    for (int i = 1; i < 4; ++i) {
        rows *= (unsigned __int128)t.ne[i];
        if (rows * row > span) return true; // they cannot all fit side by side
    }
    std::vector<size_t> starts;
    starts.reserve(size_t(rows));
    for (int64_t i3 = 0; i3 < t.ne[3]; ++i3)
        for (int64_t i2 = 0; i2 < t.ne[2]; ++i2)
            for (int64_t i1 = 0; i1 < t.ne[1]; ++i1)
                starts.push_back(size_t(i1) * t.nb[1] + size_t(i2) * t.nb[2] + size_t(i3) * t.nb[3]);
    std::sort(starts.begin(), starts.end());
    for (size_t i = 1; i < starts.size(); ++i)
        if (starts[i] < starts[i - 1] + row) return true;
    return false;
}

// What a descriptor is, decided from the header's rules alone: how it can be backed, the bytes it spans, and why
// no entry point may accept it (empty if nothing is wrong with the view by itself). `allowed` lists the types the
// entry point accepts for this tensor ({}: any), `may_be_empty` the dimensions that may be 0 (bit i for ne[i]).
struct Judgement {
    Backing backing = Backing::Invalid;
    size_t span = 0;
    std::string reject_reason;
};
inline Judgement judge(const fst_tensor &t, std::initializer_list<fst_type> allowed, unsigned may_be_empty,
                       size_t misalign = 0) {
    Judgement j;
    const TypeInfo ti = type_info(t.type);
    bool negative = false, empty = false;
    for (int i = 0; i < 4; ++i) {
        negative = negative || t.ne[i] < 0;
        empty = empty || t.ne[i] == 0;
        if (t.ne[i] == 0 && !((may_be_empty >> i) & 1u)) j.reject_reason = "ne[" + std::to_string(i) + "] = 0";
    }
    const int code = enum_int(t.type);
    if (allowed.size() && std::none_of(allowed.begin(), allowed.end(), [&](fst_type a) { return int(a) == code; }))
        j.reject_reason = "type " + std::to_string(code) + " not accepted here";
    if (t.nb[0] != ti.block_bytes && ti.known) j.reject_reason = "nb[0] = " + std::to_string(t.nb[0]);
    if (t.ne[0] > 0 && t.ne[0] % ti.block_elems != 0) j.reject_reason = "ne[0] not a multiple of the block";
    if (negative) {
        j.reject_reason = "negative extent";
        return j;
    }
    if (empty) {
        j.backing = Backing::Empty;
        return j;
    }
    unsigned __int128 span = (unsigned __int128)(t.ne[0] / ti.block_elems) * ti.block_bytes;
    for (int i = 1; i < 4; ++i) span += (unsigned __int128)(t.ne[i] - 1) * t.nb[i];
    if (span >= ((unsigned __int128)1 << 63)) {
        j.reject_reason = "span >= 2^63 bytes";
        return j;
    }
    j.backing = span + misalign > kMaxBytes ? Backing::TooBig : Backing::Exact;
    j.span = size_t(span);
    if (j.backing == Backing::Exact && j.reject_reason.empty() && rows_overlap(t, j.span))
        j.reject_reason = "rows overlap";
    if (j.reject_reason.empty() && t.data == nullptr) j.reject_reason = "NULL data";
    return j;
}

// Builds a view of `type` with extents `ne` from the input: a memory order of dimensions 1..3 and optional padding,
// then (rarely) up to two hostile edits of the descriptor, then a buffer as described at the top of this file.
// `allowed` lists the types the entry point accepts for this tensor; `may_be_empty` the dimensions that may be 0.
inline View make_view(Reader &in, Memory &mem, Rng &rng, Fill fill, fst_type type, std::array<int64_t, 4> ne,
                      std::initializer_list<fst_type> allowed, unsigned may_be_empty = 0) {
    View v;
    fst_tensor &t = v.t;
    t.type = type;
    for (int i = 0; i < 4; ++i) t.ne[i] = ne[i];
    const TypeInfo ti = type_info(type);
    const size_t align = ti.block_bytes == 4 ? 4 : 2;

    // Layout: which of dimensions 1..3 is innermost in memory, and padding after each.
    static const int kOrders[6][3] = {{1, 2, 3}, {2, 1, 3}, {1, 3, 2}, {3, 1, 2}, {2, 3, 1}, {3, 2, 1}};
    const uint8_t layout = in.u8();
    const int *order = kOrders[(layout & 7) % 6];
    size_t stride = ti.block_bytes * size_t(std::max<int64_t>(ne[0], 0) / ti.block_elems);
    t.nb[0] = ti.block_bytes;
    for (int k = 0; k < 3; ++k) {
        if (layout & 8) stride += align * (in.u8() & 7);
        t.nb[order[k]] = stride;
        stride *= size_t(std::max<int64_t>(ne[order[k]], 1));
    }

    // Hostile edits: extents and strides that are negative, zero, huge or overlapping; misaligned or NULL data;
    // another type; a wrong element size.
    size_t misalign = 0;
    bool null_data = false;
    for (int n = 0; n < 2 && in.rare(); ++n) {
        const uint8_t kind = in.u8();
        const int i = in.u8() & 3;
        switch (kind % 12) {
        case 0: t.ne[i] = in.pick<int64_t>({-1, -2, -(int64_t(1) << 31), std::numeric_limits<int64_t>::min()}); break;
        case 1: t.ne[i] = 0; break;
        case 2:
            t.ne[i] = in.pick<int64_t>({int64_t(1) << 31, int64_t(1) << 32, int64_t(1) << 40, int64_t(1) << 62,
                                        std::numeric_limits<int64_t>::max(), (int64_t(1) << 62) + 1});
            break;
        case 3: t.ne[i] = int64_t(uint64_t(t.ne[i]) + ((in.u8() & 1) ? 1 : uint64_t(-1))); break; // wraps, no UB
        case 4: t.nb[i] = 0; break;
        case 5:
            t.nb[i] = in.pick<size_t>(
                {SIZE_MAX, SIZE_MAX - 3, size_t(1) << 63, size_t(1) << 62, size_t(1) << 40, (size_t(1) << 32) + 4});
            break;
        case 6: t.nb[i] = (in.u8() & 1) ? t.nb[i] / 2 : t.nb[i] - align; break;
        case 7: t.nb[i] += 1; break;
        case 8: misalign = 1 + in.u8() % 3; break;
        case 9: null_data = true; break;
        case 10: set_enum(t.type, any_type_code(in)); break;
        case 11: t.nb[0] = in.pick<size_t>({0, 1, 2, 3, 4, 8, 18, 34}); break;
        }
    }

    // The buffer: judged on the descriptor (data does not matter yet), then judged again with the data pointer.
    const Judgement shape = judge(t, allowed, may_be_empty, misalign);
    v.backing = shape.backing;
    v.span = shape.backing == Backing::Exact ? shape.span : 0;
    switch (v.backing) {
    case Backing::Exact: {
        v.block = mem.add(misalign + v.span);
        unsigned char *p = mem.data(v.block);
        const uint64_t keep = fill == Fill::Finite ? 0xbfbfbfbfbfbfbfbfull : ~0ull; // Finite: bit 6 of every byte clear
        for (size_t b = 0; b < misalign + v.span; b += 8) {
            const uint64_t bits = rng.next() & keep;
            std::memcpy(p + b, &bits, std::min<size_t>(8, misalign + v.span - b));
        }
        t.data = p + misalign;
        break;
    }
    case Backing::Empty: {
        const uint8_t c = in.u8() % 3;
        if (c == 1) {
            v.block = mem.add(0);
            t.data = mem.data(v.block);
        } else {
            t.data = c == 2 ? reinterpret_cast<void *>(uintptr_t(4096)) : nullptr; // never dereferenceable
        }
        break;
    }
    case Backing::Invalid:
        v.block = mem.add(64);
        std::memset(mem.data(v.block), 0, 64);
        t.data = mem.data(v.block);
        break;
    case Backing::TooBig: t.data = nullptr; break;
    }
    if (null_data && v.backing != Backing::Empty) t.data = nullptr;
    v.reject_reason = judge(t, allowed, may_be_empty, misalign).reject_reason;
    return v;
}

// Points a written view (state, out, lse, ...) into another view's block, where the two usually share bytes; false
// when the target block is too small. The caller then expects a rejection ("out overlaps k") if overlaps() says so.
inline bool alias_into(View &w, const View &target, Memory &mem, Reader &in) {
    if (w.backing != Backing::Exact || target.backing != Backing::Exact || w.t.data == nullptr ||
        target.t.data == nullptr)
        return false;
    const size_t room = mem.size(target.block);
    if (w.span > room) return false;
    const size_t offset = (in.u8() % (room - w.span + 1)) & ~size_t(3);
    w.t.data = mem.data(target.block) + offset;
    w.block = target.block;
    return true;
}

// True if two well-formed, non-empty views share a byte, found by listing their rows (views whose ranges interleave
// without a shared byte, such as M, S and O packed in one row, may be accepted). A view with more rows than its span
// can hold side by side has overlapping rows and a reject reason of its own; it counts as overlapping.
inline bool overlaps(const fst_tensor &a, const fst_tensor &b) {
    const Judgement ja = judge(a, {}, 0), jb = judge(b, {}, 0); // {}: any type
    if (ja.backing != Backing::Exact || jb.backing != Backing::Exact || !a.data || !b.data) return false;
    const auto *pa = static_cast<const unsigned char *>(a.data), *pb = static_cast<const unsigned char *>(b.data);
    if (!(pa < pb + jb.span && pb < pa + ja.span)) return false;
    if (rows_overlap(a, ja.span) || rows_overlap(b, jb.span)) return true;
    using Rows = std::vector<std::pair<uintptr_t, uintptr_t>>; // [begin, end) of each row, by address
    auto rows_of = [](const fst_tensor &t) {
        Rows r;
        const size_t n = row_bytes(t);
        for_each_row(t, [&](unsigned char *p) { r.emplace_back(uintptr_t(p), uintptr_t(p) + n); });
        std::sort(r.begin(), r.end());
        return r;
    };
    const Rows ra = rows_of(a), rb = rows_of(b);
    for (size_t i = 0, j = 0; i < ra.size() && j < rb.size();) {
        if (ra[i].first < rb[j].second && rb[j].first < ra[i].second) return true;
        if (ra[i].second <= rb[j].second) ++i;
        else ++j;
    }
    return false;
}

// Before a call: make the calling thread's last error a message from another function, so that a failed call is
// seen to set its own message.
inline void prime_last_error(const char *function) {
    if (std::strcmp(function, "fst_quantize_row") == 0) fst_state_init(nullptr, nullptr);
    else fst_quantize_row(FST_TYPE_F32, nullptr, nullptr, -1);
}

// After a failed call: a known status and a message of the form "<function>: <something>".
inline void check_rejection(fst_status st, const char *function) {
    if (verbose()) std::fprintf(stderr, "rejected (%d): %s\n", int(st), fst_last_error());
    if (st < FST_ERR_INVALID_ARGUMENT || st > FST_ERR_DISTRIBUTED) fail("unknown status " + std::to_string(int(st)));
    const char *msg = fst_last_error();
    const size_t n = std::strlen(function);
    if (msg == nullptr || std::strncmp(msg, function, n) != 0 || std::strncmp(msg + n, ": ", 2) != 0 || msg[n + 2] == 0)
        fail(std::string(function) + " failed with message \"" + (msg ? msg : "(null)") + "\"");
}

// After an accepted call.
inline void note_accepted(const char *function) {
    if (verbose()) std::fprintf(stderr, "%s accepted the call\n", function);
}

// Every byte unchanged except those inside the rows of the `written` views: a block no written view lives in is
// compared whole; in the others each byte outside the union of the written views' rows (padding, the bytes before a
// misaligned view's data, the rest of the block) is compared with the snapshot. The union, not each view alone:
// written views may interleave in one block (state and out packed in one row per query).
inline void check_untouched(const Memory &mem, std::initializer_list<const View *> written, const char *what) {
    for (int b = 0; b < mem.count(); ++b) {
        std::vector<char> in_row; // bytes of block b inside a written view's row
        std::string views;
        for (const View *w : written) {
            if (w->block != b || w->backing != Backing::Exact || w->t.data == nullptr) continue;
            if (in_row.empty()) in_row.assign(mem.size(b), 0);
            const size_t row = row_bytes(w->t);
            const unsigned char *block = mem.data(b);
            for_each_row(w->t, [&](unsigned char *p) {
                std::fill(in_row.begin() + (p - block), in_row.begin() + (p - block) + std::ptrdiff_t(row), char(1));
            });
            views += (views.empty() ? "" : ", ") + describe("view", w->t);
        }
        if (in_row.empty()) {
            if (!mem.unchanged(b)) fail(std::string(what) + ": a block it may not write changed");
            continue;
        }
        const unsigned char *now = mem.data(b), *old = mem.before(now);
        for (size_t i = 0; i < in_row.size(); ++i)
            if (!in_row[i] && now[i] != old[i])
                fail(std::string(what) + ": wrote byte " + std::to_string(i) + " of a block outside the rows of " + views);
    }
}

// One call judged on whether it was right to accept it: snapshots the memory, primes the last error, calls. A
// rejection must carry a known status and the function's message and leave every block as it was; an acceptance
// fails when must_reject names a reason. Returns whether the call was accepted (the caller then checks what it
// wrote, e.g. with check_untouched).
template <class Call> bool judged_call(Memory &mem, const char *function, const std::string &must_reject, Call &&call) {
    mem.snapshot();
    prime_last_error(function);
    const fst_status st = call();
    if (st != FST_OK) {
        check_rejection(st, function);
        check_untouched(mem, {}, function);
        return false;
    }
    note_accepted(function);
    if (!must_reject.empty()) fail(std::string(function) + " accepted an invalid call: " + must_reject);
    return true;
}

inline float load_f32(const unsigned char *p) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
}
inline void store_f32(unsigned char *p, float f) { std::memcpy(p, &f, 4); }

// A state row (M, S) a call may leave: S finite and >= 0; M finite, or -inf when S == 0.
inline bool valid_state(float M, float S) {
    return std::isfinite(S) && S >= 0.0f && (std::isfinite(M) || (M == -kInf && S == 0.0f));
}

// Makes every row of a state view a valid state (in finite mode): |M| < 2 from the fill, S = |S|, and now and
// then the empty state (-inf, 0) or an empty state with a finite M.
inline void make_states_valid(const View &state, Rng &rng) {
    // Only views with disjoint rows: their row count is bounded by the span (others may have 2^62 rows).
    if (state.backing != Backing::Exact || !state.reject_reason.empty() || row_bytes(state.t) < 8) return;
    for_each_row(state.t, [&](unsigned char *p) {
        const uint8_t r = rng.byte();
        float M = load_f32(p), S = std::fabs(load_f32(p + 4));
        if (r < 32) M = -kInf, S = 0.0f;
        else if (r < 48) S = 0.0f;
        store_f32(p, M);
        store_f32(p + 4, S);
    });
}

// After an accepted call with finite inputs: every state row valid, every output value finite.
inline void check_finite_result(const View &state, const View &out, const char *what) {
    for (int64_t s = 0; s < state.t.ne[3]; ++s)
        for (int64_t r = 0; r < state.t.ne[2]; ++r)
            for (int64_t h = 0; h < state.t.ne[1]; ++h) {
                const auto *ms = static_cast<const unsigned char *>(state.t.data) + size_t(h) * state.t.nb[1] +
                                 size_t(r) * state.t.nb[2] + size_t(s) * state.t.nb[3];
                const float M = load_f32(ms), S = load_f32(ms + 4);
                if (!valid_state(M, S))
                    fail(std::string(what) + ": state row (" + std::to_string(h) + ", " + std::to_string(r) + ", " +
                         std::to_string(s) + ") = (" + std::to_string(M) + ", " + std::to_string(S) + ")");
                const auto *o = static_cast<const unsigned char *>(out.t.data) + size_t(h) * out.t.nb[1] +
                                size_t(r) * out.t.nb[2] + size_t(s) * out.t.nb[3];
                for (int64_t c = 0; c < out.t.ne[0]; ++c)
                    if (!std::isfinite(load_f32(o + 4 * c)))
                        fail(std::string(what) + ": out value not finite at row (" + std::to_string(h) + ", " +
                             std::to_string(r) + ", " + std::to_string(s) + ")");
            }
}

// One of the divisors of n, chosen by the input.
inline int64_t divisor_of(int64_t n, Reader &in) {
    std::vector<int64_t> d;
    for (int64_t i = 1; i <= n; ++i)
        if (n % i == 0) d.push_back(i);
    return d[in.u8() % d.size()];
}

} // namespace fuzz
