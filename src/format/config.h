// config.json of an openPangu-Embedded checkpoint.
#pragma once

#include <string>

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
    int bos = -1, eos = -1, pad = -1;
    // quantization_config (written by pangu-quantize): empty when the checkpoint is not quantized.
    std::string quant_method;        // "w8a16"
    std::string quant_activation;    // activation dtype it was calibrated for: "bfloat16", "float16", "float32"
};

// Parses and checks <dir>/config.json. Throws PANGU_ERR_FILE_NOT_FOUND or PANGU_ERR_CONFIG naming the
// file and the field.
ModelConfig load_config(const std::string &dir);
// The same from the text of a config.json (`path` names it in messages).
ModelConfig parse_config(const std::string &text, const std::string &path);

}  // namespace pangu
