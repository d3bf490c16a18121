// AVX-512 kernels: the shared SIMD kernel instantiated with AVX-512 vectors. Compiled with AVX-512 flags; only
// reached through dispatch after CPUID says the CPU has AVX-512 F/BW/VL/DQ.
#include "kernels/avx512/vec_avx512.h"
#include "kernels/simd/attend_simd.h"

namespace fst::kernels {

const KernelTable &avx512_kernels() {
    static const KernelTable table{FST_ISA_AVX512, "avx512", simd::attend_chunk<avx512::Vec>, simd::attend_chunks<avx512::Vec>,
                                   simd::scratch_floats<avx512::Vec>, simd::supports<avx512::Vec>, simd::exp_array<avx512::Vec>, simd::tanh_array<avx512::Vec>,
                                   simd::f16_row_to_f32<avx512::Vec>, simd::combine_rows<avx512::Vec>,
                                   simd::scale_row<avx512::Vec>};
    return table;
}

} // namespace fst::kernels
