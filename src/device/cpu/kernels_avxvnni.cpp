// AVX2 integer kernels with AVX-VNNI (vpdpbusd on 256-bit vectors: Alder Lake and later, Zen 5): compiled with
// -mavxvnni on its own; the AVX2 table uses these only on CPUs that report the extension (kernels_avx2.cpp).
// The products (kernels_avx2_int.h's Vnni256) as in kernels_avx512vnni.cpp, the loops and the fp32 order of
// mm_q4 and mm_qb kernels_avx2_int.h's.
#include "device/cpu/kernels_avx2_int.h"

namespace pangu {
namespace kernels {

void mm_q8_avxvnni(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                   int64_t ldy) {
    mm_q8<Vnni256>(x, ldx, M, w, ldw, n, nr, y, ldy);
}

void mm_q4_avxvnni(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                   int64_t n, int group, int nr, float *y, int64_t ldy) {
    mm_q4<Vnni256>(x, ldx, M, w, ldw, s, lds, n, group, nr, y, ldy);
}

void mm_qb_avxvnni(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                   const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    mm_qb<Vnni256>(x, ldx, M, w, ldw, bits, s, z, lds, n, group, nr, y, ldy);
}

}  // namespace kernels
}  // namespace pangu
