// NEON integer kernels with the ARMv8.2 dot product instructions (sdot: 16 signed byte products added into 4
// int32 lanes, 4 each; Cortex-A55/A75 and later, every Kunpeng 920). Compiled with -march=armv8.2-a+dotprod on
// its own; the NEON table uses these only where the kernel reports HWCAP_ASIMDDP (kernels_neon.cpp). The loops
// and the fp32 order of mm_q4 and mm_qb are kernels_neon_int.h's.
#if defined(__aarch64__)
#include "device/cpu/kernels_neon_int.h"

namespace pangu {
namespace kernels {

namespace {

struct Dot {
    static int32x4_t dot2(int32x4_t acc, int8x16_t x0, int8x16_t w0, int8x16_t x1, int8x16_t w1) {
        return vdotq_s32(vdotq_s32(acc, x0, w0), x1, w1);
    }
};

}  // namespace

void mm_q8_neondot(const int8_t *x, int64_t ldx, int64_t M, const int8_t *w, int64_t ldw, int64_t n, int nr, int32_t *y,
                   int64_t ldy) {
    mm_q8<Dot>(x, ldx, M, w, ldw, n, nr, y, ldy);
}

void mm_q4_neondot(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, const float *s, int64_t lds,
                   int64_t n, int group, int nr, float *y, int64_t ldy) {
    mm_q4<Dot>(x, ldx, M, w, ldw, s, lds, n, group, nr, y, ldy);
}

void mm_qb_neondot(const int8_t *x, int64_t ldx, int64_t M, const uint8_t *w, int64_t ldw, int bits, const float *s,
                   const uint8_t *z, int64_t lds, int64_t n, int group, int nr, float *y, int64_t ldy) {
    mm_qb<Dot>(x, ldx, M, w, ldw, bits, s, z, lds, n, group, nr, y, ldy);
}

}  // namespace kernels
}  // namespace pangu
#endif
