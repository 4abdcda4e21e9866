// A loaded model: configuration, tokenizer, and every weight as a view into the memory-mapped checkpoint.
#pragma once

#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "format/config.h"
#include "device/device.h"
#include "format/safetensors.h"
#include "model/tensor.h"
#include "model/vocab.h"

namespace pangu {

// A vector weight (a norm's or a bias): F32 on the host, and [1, n] as the device sees it (uploaded at load).
struct VecWeight {
    const float *host = nullptr;
    pgd_tensor dev{};
    explicit operator bool() const { return host != nullptr; }
};

struct LayerWeights {
    VecWeight attn_norm;               // [n_embd]
    Tensor wq, wk, wv, wo;             // [n_head*hd, n_embd], [n_kv*hd, n_embd] x2, [n_embd, n_head*hd]
    VecWeight bq, bk, bv, bo;          // empty when config.bias is false
    VecWeight ffn_norm;                // [n_embd]
    Tensor w_gate, w_up, w_down;       // [n_ff, n_embd] x2, [n_embd, n_ff]
    int n_ff = 0;                      // this layer's MLP width (pruned models differ per layer)
};

struct ModelLoadOptions {
    MapOptions map;
    int activation_precision = 0;  // pangu_model_params.activation_precision
    std::string backend = "cpu";   // device backend by name
    size_t device_memory = 0;      // device memory budget in bytes (0 = the backend's default)
    std::string device_profile;    // backend-specific profile file (e.g. the npu-sim latency model)
};

class Model {
public:
    // Throws pangu::Error with the file and tensor named.
    static std::unique_ptr<Model> load(const std::string &dir, const ModelLoadOptions &opt);
    ~Model();

    std::string dir;
    ModelConfig cfg;
    GenerationConfig gen;            // generation_config.json (gen.present false when there is none)
    // Every id that ends generation: config.json's eos_token_id(s), generation_config.json's, the tokenizer's.
    std::vector<int32_t> eos_ids;
    Vocab vocab;
    TensorStore store;
    Tensor tok_embd;                 // [n_vocab, n_embd]
    VecWeight out_norm;              // [n_embd]
    Tensor output;                   // [n_vocab, n_embd]; the embedding table when tied
    std::vector<LayerWeights> layers;
    int max_ff = 0;                  // widest MLP over layers (sizes the activation buffers)
    int64_t n_params = 0;
    int64_t weight_bytes = 0;
    int n_quantized = 0;             // I8 weight matrices
    // Precision of the activations fed to matrix multiplications: F32, or BF16 ("A16" of W8A16: inputs are
    // rounded to bf16, products accumulate in f32).
    DType activation_dtype = DType::F32;

    pgd_device *device = nullptr;    // owned

    // Per-handle last error, guarded because a model is used from many threads.
    mutable std::mutex error_mu;
    mutable ErrorSlot last_error;

private:
    Model() = default;
    // Every tensor of the checkpoint, checked against the configuration (before the device is created).
    void load_weights();
    // Makes every weight usable by the device: on a unified-memory device the mapping itself, otherwise a
    // copy in device memory (which may fail when the model does not fit the device's budget).
    void upload_weights();
    void upload_vector(VecWeight &v, int64_t n, const std::string &name);
    std::vector<pgd_tensor> uploaded_;
    std::vector<std::vector<float>> owned_;  // small tensors widened to F32 at load (norms, biases)
    std::vector<std::vector<uint8_t>> owned_u8_;    // low-bit weights' zero points and widths, read at load
    std::vector<std::vector<int32_t>> owned_i32_;   // their row and column orders
    std::deque<pgd_qb_layout> qb_layouts_;          // mixed-precision weights' layouts (stable addresses)
    const float *widen(const TensorInfo &t);
    // The bytes of a U8 or I32 tensor, read from the file (not the mapping) into memory the model keeps.
    const uint8_t *read_u8(const TensorInfo &t);
    const int32_t *read_i32(const TensorInfo &t);
    friend struct ModelBuilder;
};

// The C handles are never defined: a pangu_model* is a Model*, a pangu_session* a Session*, so the
// library's internals are no part of its ABI (abidw sees only opaque declarations).
inline Model *from_handle(pangu_model *h) { return reinterpret_cast<Model *>(h); }
inline const Model *from_handle(const pangu_model *h) { return reinterpret_cast<const Model *>(h); }
inline pangu_model *to_handle(Model *m) { return reinterpret_cast<pangu_model *>(m); }

}  // namespace pangu
