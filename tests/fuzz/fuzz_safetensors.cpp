// Fuzzes the safetensors parser from memory: the input is a whole file (8-byte header length, JSON header,
// data section). Whatever the bytes, parsing ends in a tensor list whose every byte lies inside the data
// section, or in a pangu::Error with a loader status; no other exception, no out-of-bounds read.
#include <cstddef>
#include <cstdint>

#include "common/common.h"
#include "fuzz_util.h"
#include "format/safetensors.h"

namespace {
volatile uint64_t g_sink;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string path = "fuzz.safetensors";
    try {
        const uint64_t hlen = pangu::safetensors_header_length(path, data, size);
        const uint64_t data_size = size - 8 - hlen;
        const std::vector<pangu::TensorInfo> tensors =
            pangu::parse_safetensors_header(path, reinterpret_cast<const char *>(data) + 8, hlen, data_size);
        // The parser promises that every tensor's bytes lie inside the data section: touch the first and the
        // last byte of each (AddressSanitizer reports a read outside the input) and check the arithmetic.
        const uint8_t *base = data + 8 + hlen;
        uint64_t sum = 0;
        for (const auto &t : tensors) {
            FUZZ_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset, "tensor %s out of bounds",
                       t.name.c_str());
            uint64_t numel = 1;
            for (int64_t d : t.shape) {
                FUZZ_CHECK(d >= 0, "negative dimension in %s", t.name.c_str());
                numel *= static_cast<uint64_t>(d);
            }
            FUZZ_CHECK(numel * pangu::dtype_size(t.dtype) == t.nbytes, "size of %s", t.name.c_str());
            if (t.nbytes) sum += base[t.offset] + base[t.offset + t.nbytes - 1];
        }
        g_sink = sum;
    } catch (const pangu::Error &e) {
        FUZZ_CHECK(fuzz::one_of(e.status(), {PANGU_ERR_SAFETENSORS_HEADER, PANGU_ERR_TENSOR_BOUNDS, PANGU_ERR_DTYPE,
                                             PANGU_ERR_SHAPE}),
                   "status %d: %s", (int)e.status(), e.what());
    }
    // Any other exception escapes and aborts the run: the C API would report it as PANGU_ERR_INTERNAL.
    return 0;
}
