// config.json of an openPangu-Embedded checkpoint.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace pangu {

struct ModelConfig {
    int n_vocab = 0;          // vocab_size
    int n_embd = 0;           // hidden_size
    int n_ff = 0;             // intermediate_size (a default only: pruned layers carry their own width)
    int n_layer = 0;          // num_hidden_layers
    int n_head = 0;           // num_attention_heads
    int n_head_kv = 0;        // num_key_value_heads (defaults to n_head)
    int head_dim = 0;         // head_dim (defaults to hidden_size / num_attention_heads)
    int n_ctx_train = 0;      // max_position_embeddings
    float rms_eps = 1e-5f;    // rms_norm_eps
    double rope_theta = 10000.0;
    bool bias = true;         // biases on q/k/v/o
    bool tie_embeddings = false;
    int bos = -1, eos = -1, pad = -1;  // eos: the first of eos_ids
    std::vector<int> eos_ids;          // eos_token_id: a number or a list, every one of which ends generation
    // quantization_config (written by pangu-quantize): empty when the checkpoint is not quantized.
    std::string quant_method;        // "w8a16", "w8a8", "w4a8", "w4a16", "mixed"
    // activation dtype it was made for: "bfloat16", "float16", "float32", or "int8" (dynamic per-row scales)
    std::string quant_activation;
    int quant_bits = 0;              // 8; 4: linear weights packed as U8 (PGD_I4, device.h); 0: mixed (PGD_QB)
    int quant_group = 0;             // 4-bit and mixed weights: columns per scale (a multiple of 32)
    bool quant_symmetric = true;     // 4-bit and mixed: false = a zero point per group ("<name>_zero")
    bool quant_act_order = false;    // 4-bit and mixed: a stored column order per linear ("<name>_perm")
    // Low-bit weights with group scales: w4a8, w4a16 (PGD_I4) and mixed (PGD_QB).
    bool lowbit() const { return quant_bits == 4 || quant_method == "mixed"; }
};

// generation_config.json: the sampling defaults a checkpoint ships and its end-of-sequence ids. What the file
// does not say stays unset; fields this library has no use for are ignored.
struct GenerationConfig {
    bool present = false;
    std::vector<int> eos_ids;  // eos_token_id: a number or a list
    std::optional<bool> do_sample;
    std::optional<double> temperature, top_p, repetition_penalty;
    std::optional<int> top_k, max_new_tokens;
};

// Parses <dir>/generation_config.json when present (it is optional). Throws PANGU_ERR_CONFIG naming the file
// and the field: malformed JSON, a field of the wrong type or out of range, an eos id outside the vocabulary.
GenerationConfig load_generation_config(const std::string &dir, int n_vocab);
GenerationConfig parse_generation_config(const std::string &text, const std::string &path, int n_vocab);

// Parses and checks <dir>/config.json. Throws PANGU_ERR_FILE_NOT_FOUND or PANGU_ERR_CONFIG naming the
// file and the field.
ModelConfig load_config(const std::string &dir);
// The same from the text of a config.json (`path` names it in messages).
ModelConfig parse_config(const std::string &text, const std::string &path);

}  // namespace pangu
