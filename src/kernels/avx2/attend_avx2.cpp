// AVX2 kernels: the shared SIMD kernel instantiated with AVX2 vectors. Compiled with AVX2/FMA/F16C flags; only
// reached through dispatch after CPUID says the CPU has them.
#include "kernels/avx2/vec_avx2.h"
#include "kernels/simd/attend_simd.h"

namespace fst::kernels {

const KernelTable &avx2_kernels() {
    static const KernelTable table{FST_ISA_AVX2, "avx2", simd::attend_chunk<avx2::Vec>, simd::attend_chunks<avx2::Vec>, simd::scratch_floats<avx2::Vec>,
                                   simd::supports<avx2::Vec>, simd::exp_array<avx2::Vec>, simd::tanh_array<avx2::Vec>,
                                   simd::f16_row_to_f32<avx2::Vec>, simd::combine_rows<avx2::Vec>,
                                   simd::scale_row<avx2::Vec>};
    return table;
}

} // namespace fst::kernels
