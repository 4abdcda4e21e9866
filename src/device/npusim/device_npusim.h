// The npu-sim backend's own queries, beyond the device interface: what its tests and tools read to check the
// emulation (fp16 overflows per operator kind, weight traffic). Plain C, like device.h.
#pragma once

#include <stdint.h>

#include "device/device.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Operator kinds, for per-kind fp16 overflow counts. */
typedef enum pgd_npusim_op {
    PGD_NPUSIM_EMBED = 0,
    PGD_NPUSIM_RMS_NORM,
    PGD_NPUSIM_MATMUL,
    PGD_NPUSIM_ROPE,
    PGD_NPUSIM_ATTENTION,
    PGD_NPUSIM_SWIGLU,
    PGD_NPUSIM_ROUND,
    PGD_NPUSIM_ADD,
    PGD_NPUSIM_WEIGHT_UPLOAD, /* BF16/F32 weights that do not fit fp16 */
    PGD_NPUSIM_N_OPS
} pgd_npusim_op;

/* Guard mode on (1) or off (0): with it, the device's memory is PROT_NONE whenever none of npu-sim's own
 * slots runs, so that host code touching device memory faults. A device starts in guard mode when the
 * environment has PANGU_NPUSIM_GUARD=1 (the test suite's setting). Returns 0, or -1 if `dev` is not npu-sim. */
int pgd_npusim_set_guard(pgd_device *dev, int on);

/* "matmul", "weight_upload", ...; "?" for an unknown kind. */
const char *pgd_npusim_op_name(int op);

/* Copies min(n, PGD_NPUSIM_N_OPS) counts of values saturated to +-65504 since the device was created (all
 * streams), indexed by pgd_npusim_op. Returns PGD_NPUSIM_N_OPS, or -1 if `dev` is not an npu-sim device. */
int pgd_npusim_overflow_counts(const pgd_device *dev, uint64_t *counts, int n);

/* Device-wide transfer totals: every copy, whichever stream it was charged to (or none: a NULL stream), and
 * weight uploads, which belong to no stream. Returns 0, or -1 if `dev` is not an npu-sim device. */
typedef struct pgd_npusim_totals {
    uint64_t weight_upload_bytes;  /* device bytes written by weight_upload (fractal layout, padding included) */
    uint64_t host_to_device_bytes; /* every H2D copy: weights, memcpy/memcpy2d, token ids */
    uint64_t device_to_host_bytes;
    size_t peak_used_bytes;        /* high water of device memory in use */
} pgd_npusim_totals;
int pgd_npusim_get_totals(const pgd_device *dev, pgd_npusim_totals *out);

#ifdef __cplusplus
}
#endif
