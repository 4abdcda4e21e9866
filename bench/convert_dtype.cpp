// bench_convert_dtype: rewrites a checkpoint's floating-point tensors as F32, F16 or BF16 (for the W8A16
// benchmark's fp32 variants, which must hold the same weights as the bf16 ones).
//
//   bench_convert_dtype -i IN_DIR -o OUT_DIR --dtype f32|f16|bf16
//
// config.json (torch_dtype updated) and the tokenizer files are copied. The checkpoint is written under
// OUT_DIR.partial-PID and renamed into place when complete. Quantized checkpoints are refused.
#include <json/json.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include "common/common.h"
#include "quantize.h"
#include "format/safetensors.h"
#include "safetensors_writer.h"
#include "model/tensor.h"

namespace fs = std::filesystem;
using namespace pangu;

namespace {

int usage() {
    std::cerr << "usage: bench_convert_dtype -i IN_DIR -o OUT_DIR --dtype f32|f16|bf16\n";
    return 2;
}

}  // namespace

int main(int argc, char **argv) {
    std::string in, out, dts;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-i" && i + 1 < argc) in = argv[++i];
        else if (a == "-o" && i + 1 < argc) out = argv[++i];
        else if (a == "--dtype" && i + 1 < argc) dts = argv[++i];
        else return usage();
    }
    DType dt;
    const char *torch_dtype;
    if (dts == "f32") dt = DType::F32, torch_dtype = "float32";
    else if (dts == "f16") dt = DType::F16, torch_dtype = "float16";
    else if (dts == "bf16") dt = DType::BF16, torch_dtype = "bfloat16";
    else return usage();
    if (in.empty() || out.empty()) return usage();
    while (out.size() > 1 && out.back() == '/') out.pop_back();
    const std::string tmp = out + ".partial-" + std::to_string(getpid());
    try {
        if (fs::exists(out)) fail(PANGU_ERR_INVALID_ARGUMENT, out + " exists");
        Json::Value cfg;
        {
            std::ifstream cf(fs::path(in) / "config.json");
            Json::CharReaderBuilder rb;
            std::string errs;
            if (!cf || !Json::parseFromStream(rb, cf, &cfg, &errs))
                fail(PANGU_ERR_CONFIG, in + "/config.json: cannot read " + errs);
        }
        if (cfg.isMember("quantization_config")) fail(PANGU_ERR_UNSUPPORTED, in + " is quantized");
        cfg["torch_dtype"] = torch_dtype;

        TensorStore store;
        store.open_dir(in, MapOptions{});
        fs::remove_all(tmp);
        fs::create_directories(tmp);
        SafetensorsWriter w;
        for (const auto &kv : store.tensors()) {
            const TensorInfo *t = &kv.second;
            if (t->dtype == DType::I8) fail(PANGU_ERR_UNSUPPORTED, t->name + " is int8");
            const size_t n = t->nbytes / dtype_size(t->dtype);
            w.add(kv.first, dt, t->shape, [t, dt, n](uint8_t *dst) {
                if (t->dtype == dt) {
                    std::memcpy(dst, t->data, t->nbytes);
                    return;
                }
                for (size_t i = 0; i < n; ++i) {
                    const float v = load_element(*t, i);
                    if (dt == DType::F32) {
                        std::memcpy(dst + 4 * i, &v, 4);
                    } else {
                        const uint16_t h = dt == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
                        std::memcpy(dst + 2 * i, &h, 2);
                    }
                }
            });
        }
        w.set_metadata("format", "pt");
        w.write(tmp + "/model.safetensors");
        std::ofstream(fs::path(tmp) / "config.json") << cfg << "\n";
        for (const char *f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                              "generation_config.json"})
            if (fs::exists(fs::path(in) / f)) fs::copy_file(fs::path(in) / f, fs::path(tmp) / f);
        fs::rename(tmp, out);
        std::fprintf(stderr, "bench_convert_dtype: wrote %s (%.3f GB of weights)\n", out.c_str(),
                     w.data_bytes() / 1e9);
    } catch (const Error &e) {
        fs::remove_all(tmp);
        std::fprintf(stderr, "bench_convert_dtype: %s (%s)\n", e.what(), pangu_status_string(e.status()));
        return 1;
    } catch (const std::exception &e) {
        fs::remove_all(tmp);
        std::fprintf(stderr, "bench_convert_dtype: %s\n", e.what());
        return 1;
    }
    return 0;
}
