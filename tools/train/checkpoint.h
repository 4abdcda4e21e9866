// Checkpoints of the training engine: a runtime-loadable model read into Params<float>, a trained Params
// written back as a bf16 HF directory, and the resume state of a training run (parameters and optimizer
// moments in F32, the step, the run's settings).
#pragma once

#include <json/json.h>

#include <string>
#include <vector>

#include "params.h"

namespace pangu {
class Model;
}

namespace pangu::train {

// The shape of a loaded model (each layer's width from its tensors).
Shape shape_of(const Model &m);

// Throws PANGU_ERR_UNSUPPORTED for a quantized checkpoint: "[the ROLE ]DIR is quantized (METHOD): the training
// tools need a 16- or 32-bit checkpoint" (ROLE, e.g. "teacher", may be empty).
void require_float(const Model &m, const std::string &role);

// Every weight of a floating-point checkpoint (BF16, F16 or F32 as the runtime loads it), widened to F32.
// Throws PANGU_ERR_UNSUPPORTED naming the directory and its quant_method for a quantized checkpoint (the
// training tools need 16- or 32-bit weights), PANGU_ERR_NUMERIC naming the tensor and element for NaN or Inf.
Params<float> load_params(const Model &m);

// Writes p as an HF directory at `out`: model.safetensors (every tensor BF16, rounded to nearest even,
// largest first), config.json (the source model's, with intermediate_size the widest layer, torch_dtype
// bfloat16, any quantization_config dropped and the members of `extra` added, e.g. "pruning"), and the
// tokenizer files of the source directory (tokenizer.model, tokenizer_config.json, special_tokens_map.json,
// generation_config.json where present). It is written as out + ".partial-PID", loaded back with Model::load
// and renamed to `out`; an existing `out` is PANGU_ERR_INVALID_ARGUMENT ("exists; use --force") unless
// `force`, when it is replaced only after the new one loaded. On failure nothing is left behind.
// PANGU_ERR_INVALID_ARGUMENT too when p is not of src's model apart from the MLP widths, when its tensors are
// not sized as p.shape says, or when `extra` is not an object or names intermediate_size, torch_dtype or
// quantization_config (save_model sets those); PANGU_ERR_NUMERIC naming the tensor and element for a value
// that is NaN or Inf, or beyond bf16's range.
void save_model(const Params<float> &p, const Model &src, const std::string &out, const Json::Value &extra,
                bool force);

// What a training run needs to continue after a crash.
struct TrainState {
    Params<float> params;
    // Adam's first and second moments, one vector per trainable tensor in the order of tensors(params, tr).
    std::vector<std::vector<float>> m, v;
    int64_t step = 0;     // optimizer steps done
    Json::Value meta;     // the run's settings and progress (data order seed, trainable set, losses so far): an
                          // object, or null for none
};

// Writes the state to `path` (one safetensors file: "param.<name>", "adam_m.<name>", "adam_v.<name>" F32
// tensors; metadata "step" and "meta" as JSON text, and "format" = "pangu-train-state", "version" = "1",
// "shape" (the Shape as JSON) and "trainable" (trainable_name(tr)) so that load_state can tell a state of
// another model or trainable set from a damaged one) under a temporary name, renamed at the end.
// PANGU_ERR_INVALID_ARGUMENT when the tensors or moments are not sized as s.params.shape and `tr` say, the step
// is negative or meta is neither an object nor null, PANGU_ERR_NUMERIC naming the tensor and element for NaN or
// Inf (the last good state stays in place).
void save_state(const TrainState &s, Trainable tr, const std::string &path);
// The same from the parts, without copying them into a TrainState (a training run saves its live tensors).
void save_state(const Params<float> &params, const std::vector<std::vector<float>> &m,
                const std::vector<std::vector<float>> &v, int64_t step, const Json::Value &meta, Trainable tr,
                const std::string &path);

// Reads a state written by save_state for a model of shape `expect` training `tr`. Throws with the file
// named: PANGU_ERR_FILE_NOT_FOUND; for a damaged file the safetensors reader's codes (PANGU_ERR_SAFETENSORS_HEADER,
// PANGU_ERR_TENSOR_BOUNDS, PANGU_ERR_DTYPE), PANGU_ERR_SAFETENSORS_HEADER for metadata that is not what
// save_state writes (a meta that is neither an object nor null among it) or a tensor it does not write,
// PANGU_ERR_MISSING_TENSOR for a missing tensor, PANGU_ERR_DTYPE / PANGU_ERR_SHAPE for a tensor of the wrong
// dtype or shape; PANGU_ERR_INVALID_ARGUMENT when its shape (the metadata's) or trainable set is not this run's;
// PANGU_ERR_NUMERIC for NaN or Inf in it. The file is only read.
TrainState load_state(const std::string &path, const Shape &expect, Trainable tr);

}  // namespace pangu::train
