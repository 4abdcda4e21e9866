// W8A16 quantization (used by pangu-quantize and the tests): symmetric int8 with one scale per output
// channel, scale = max|W_row| / 127, as the seed method does.
#pragma once

#include <cstdint>
#include <string>

#include "format/safetensors.h"

namespace pangu {

struct QuantError {
    double max_abs = 0;       // largest |W - q*s| over all elements
    double max_rel = 0;       // largest |W - q*s| / max|W_row| over all rows (at most 0.5/127)
    std::string worst;        // tensor holding max_rel
    void merge(const QuantError &o) {
        if (o.max_abs > max_abs) max_abs = o.max_abs;
        if (o.max_rel > max_rel) {
            max_rel = o.max_rel;
            worst = o.worst;
        }
    }
};

// Reads element i of a floating-point tensor as float.
float load_element(const TensorInfo &t, size_t i);

// Quantizes a 2-D floating-point tensor [rows, cols] into q (rows*cols int8) and scales (rows floats).
// Throws PANGU_ERR_NUMERIC naming the tensor and element if it holds NaN or Inf.
QuantError quantize_rows(const TensorInfo &t, int8_t *q, float *scales);

}  // namespace pangu
