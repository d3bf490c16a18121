/* The row converters called the way a C program may call them: with any int as the type. C converts an int to an
 * enum type freely; C++ may not even hold such a value, so fuzz_quant.cpp calls through these. */
#include <flashstate/flashstate.h>

fst_status fuzz_quantize_row(int type, const float *src, void *dst, int64_t n) {
    return fst_quantize_row((fst_type)type, src, dst, n);
}

fst_status fuzz_dequantize_row(int type, const void *src, float *dst, int64_t n) {
    return fst_dequantize_row((fst_type)type, src, dst, n);
}
