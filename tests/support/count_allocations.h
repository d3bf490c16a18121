// A counting replacement of the global operator new, for the tests that a call in steady state allocates nothing.
// Include it in exactly one file of a test program: it replaces that program's allocator (and cannot be linked
// with TSan's, which is why those programs stay out of the TSan run).
#pragma once

#include <atomic>
#include <cstdlib>
#include <new>

namespace fst_test {
inline std::atomic<long> g_allocations{0};
} // namespace fst_test

void *operator new(std::size_t n) {
    fst_test::g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void *p = std::malloc(n == 0 ? 1 : n)) return p;
    throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, std::size_t) noexcept { std::free(p); }
