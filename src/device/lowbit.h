// What every backend requires of a low-bit weight (PGD_I4, PGD_QB: device.h), written once for all of them.
#pragma once

#include <cstdint>
#include <vector>

#include "device/device.h"

// The layout rule: group scales, a group a multiple of 32 that divides the row, itself a multiple of 64 (so
// that no run of 64 columns, nor a 32-column fractal, straddles two groups); PGD_I4: whole bytes per row and no
// PGD_QB layout; PGD_QB: segments of valid widths that tile the rows in order, each at a non-negative offset.
// Cheap enough for every matmul: what it does not check (that the orders are permutations, that zero points fit
// their widths) a backend that copies the weight checks once, at upload.
inline bool pgd_lowbit_layout_ok(const pgd_tensor *w) {
    if (!w->scale || w->group_size < 32 || w->group_size % 32 != 0 || w->cols % 64 != 0 ||
        w->cols % w->group_size != 0)
        return false;
    if (w->dtype == PGD_I4) return w->stride % 2 == 0 && !w->qb;
    const pgd_qb_layout *L = w->qb;
    if (w->dtype != PGD_QB || !L || !L->row_order || L->n_segments < 1 || L->n_segments > PGD_QB_MAX_SEGMENTS)
        return false;
    int64_t row = 0;
    for (int i = 0; i < L->n_segments; ++i) {
        const pgd_qb_segment &s = L->seg[i];
        const int b = s.bits;
        if ((b != 2 && b != 3 && b != 4 && b != 6 && b != 8) || s.row0 != row || s.rows < 0 || s.offset < 0)
            return false;
        row += s.rows;
    }
    return row == w->rows;
}

// Whether p[0..n) is a permutation of 0..n-1 (a row_order or col_perm), for the checks done once per weight.
inline bool pgd_is_permutation(const int32_t *p, int64_t n) {
    std::vector<bool> seen(static_cast<size_t>(n), false);
    for (int64_t i = 0; i < n; ++i) {
        if (p[i] < 0 || p[i] >= n || seen[static_cast<size_t>(p[i])]) return false;
        seen[static_cast<size_t>(p[i])] = true;
    }
    return true;
}
