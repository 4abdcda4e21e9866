// Calibration for post-training quantization (pangu-quantize --calib; the tests): a plain fp32 reference
// forward pass over a checkpoint's tensors, run LAYER BY LAYER over every calibration window, with a hook at
// the input of each linear layer, and what SmoothQuant builds on it.
//
// The forward is the architecture of src/runtime/forward.cpp written out with Eigen matrix products: embedding,
// RMSNorm (x * rsqrt(mean(x^2) + eps) * w), q/k/v with biases, NeoX RoPE (cos/sin of pos * theta^(-2i/D),
// computed in double), GQA causal attention (scale D^-1/2, softmax in fp32), o_proj with bias, SwiGLU MLP
// (down(silu(gate(x)) * up(x))), final norm and head. The hidden states of all windows are kept ([tokens,
// n_embd] F32); run_layer() takes one layer's weights, widened to F32 for that layer only, and advances all of
// them, so a pass over the model holds one layer's weights at a time (GPTQ, which needs the inputs of a layer
// after the earlier layers were quantized, can run the same loop).
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace pangu {

class Model;

using MatrixRM = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// ---- calibration text -------------------------------------------------------------------------------------

// The documents of a text file (the whole file is one) or, with `jsonl`, the "text" string of every non-blank
// line. Throws PANGU_ERR_FILE_NOT_FOUND / PANGU_ERR_IO for a file that cannot be read, PANGU_ERR_INVALID_ARGUMENT
// naming FILE:LINE for a line that is not a JSON object with a "text" string, and for a file with no text.
std::vector<std::string> read_documents(const std::string &path, bool jsonl);

// Token windows cut as pangu-perplexity cuts them: each document tokenized on its own (BOS as the tokenizer asks,
// no special-token parsing), then cut into windows of `ctx` tokens from its start (the last may be shorter), a
// window never holding tokens of two documents. Windows of fewer than 2 tokens are dropped. The windows are
// taken breadth first, the first window of every document, then the second of every document that has one,
// and so on, so that a token budget samples many documents rather than the first few long ones; collection
// stops once `max_tokens` tokens are taken (the last window cut short). Without a budget (SIZE_MAX) the windows
// are exactly pangu-perplexity's, in another order.
struct TokenWindows {
    std::vector<std::vector<int32_t>> windows;
    size_t n_tokens = 0;     // in all windows
    size_t n_documents = 0;  // documents that contributed
};
// Throws the tokenizer's error (e.g. PANGU_ERR_INVALID_UTF8) naming the document (counted from 1).
TokenWindows make_windows(const Model &m, const std::vector<std::string> &docs, int ctx, size_t max_tokens);

// ---- reference forward ------------------------------------------------------------------------------------

// One layer's weights in F32 ([out, in] row-major, as stored). Biases are empty when config.bias is false.
struct RefLayer {
    Eigen::VectorXf attn_norm, ffn_norm;
    MatrixRM wq, wk, wv, wo, w_gate, w_up, w_down;
    Eigen::VectorXf bq, bk, bv, bo;
};
// Layer `l` of a floating-point checkpoint, widened (NaN or Inf refused naming the tensor and element).
RefLayer load_ref_layer(const Model &m, int l);

// Where a hook sees a linear layer's input.
enum class LinearInput {
    QKV = 0,      // q/k/v_proj: input_layernorm's output, [tokens, n_embd]
    O = 1,        // o_proj: the attention output (heads concatenated), [tokens, n_head * head_dim]
    GATE_UP = 2,  // gate/up_proj: post_attention_layernorm's output, [tokens, n_embd]
    DOWN = 3,     // down_proj: silu(gate) * up, [tokens, n_ff]
};
constexpr int kLinearInputs = 4;
const char *linear_input_name(LinearInput p);

// hook(layer, point, X): the inputs of one chunk of whole windows (rows in window order; a run_layer call
// passes every window once per point, in chunks). Chunks run on several threads: the calls are serialized (never
// two at once) but come from any thread, in no fixed chunk order.
using LinearHook = std::function<void(int layer, LinearInput point, const MatrixRM &x)>;

class RefForward {
public:
    // Embeds every window. `chunk_tokens` bounds the rows of the temporaries (q, k, v, the MLP's [rows, n_ff]) of
    // each of `n_threads` threads (0: one per online CPU); the chunks of a layer run in parallel. The number of
    // threads changes how rows are grouped into matrix products, so results may differ in the last bits.
    RefForward(const Model &m, TokenWindows text, int64_t chunk_tokens = 4096, int n_threads = 0);

    // Runs the next layer (layers_done()) with weights W over every window, calling `hook` at each linear's
    // input; the hidden states advance, unless `advance` is false (GPTQ: the inputs of a layer are observed
    // with its float weights, then it runs again with its quantized ones).
    void run_layer(const RefLayer &W, const LinearHook &hook = nullptr, bool advance = true);
    int layers_done() const { return layers_done_; }

    // After every layer: the final norm and head on the rows of window w, [len, n_vocab].
    MatrixRM logits(size_t w) const;
    // After every layer: the mean negative log-likelihood of every window's tokens but its first, each given
    // the tokens before it in its window (pangu-perplexity's score); `scored` gets their number.
    double mean_nll(size_t *scored) const;

    const TokenWindows &text() const { return text_; }
    const MatrixRM &hidden() const { return x_; }  // [n_tokens, n_embd]

private:
    const Model &m_;
    TokenWindows text_;
    std::vector<int64_t> start_;  // first row of each window
    int64_t chunk_tokens_;
    int n_threads_ = 1;
    MatrixRM x_;
    MatrixRM rope_;  // [max window, head_dim]: cos then sin
    int layers_done_ = 0;
};

// Runs every layer of the checkpoint (weights as stored) over `text`, calling hook; returns the forward, ready
// for logits()/mean_nll().
RefForward run_reference(const Model &m, TokenWindows text, const LinearHook &hook = nullptr);

// ---- activation statistics and SmoothQuant ----------------------------------------------------------------

// Per layer and hook point, the largest |x| of every input channel over all calibration tokens.
struct ActMax {
    std::vector<std::vector<float>> at[kLinearInputs];  // at[point][layer][channel]
    void record(int layer, LinearInput point, const MatrixRM &x);
};

// The largest |W[r][j]| over the rows r of every matrix given (the linears sharing an input), per column j.
Eigen::VectorXf column_absmax(const std::vector<const MatrixRM *> &ws);

// SmoothQuant's per-channel factors for linears sharing an input: s_j = act_max_j^alpha / w_max_j^(1-alpha),
// clamped to [kSmoothMin, kSmoothMax]; 1 for a channel whose activation or weights are all zero. The preceding
// RMSNorm weight is divided by s and the linears' columns multiplied by it (fold_smoothing): the product is the
// same, the activations' outlier channels are scaled down before the int8 quantization and the weights'
// columns up.
constexpr float kSmoothMin = 1e-4f, kSmoothMax = 1e4f;
Eigen::VectorXf smooth_factors(const std::vector<float> &act_max, const Eigen::VectorXf &w_max, float alpha);

// The smoothing factors of one layer: the q/k/v group (input_layernorm) and the gate/up group
// (post_attention_layernorm).
struct LayerSmoothing {
    Eigen::VectorXf qkv, gate_up;
};
// The two halves of folding, each one float operation per element: norm_j / s_j, and w[r][j] * s_j.
void divide_norm(Eigen::VectorXf &norm, const Eigen::VectorXf &s);
void scale_columns(MatrixRM &w, const Eigen::VectorXf &s);
// Folds s into a layer: the norm weight divided by s, the columns of each matrix multiplied by it.
void fold_smoothing(Eigen::VectorXf &norm, const std::vector<MatrixRM *> &ws, const Eigen::VectorXf &s);
void fold_smoothing(RefLayer &W, const LayerSmoothing &s);

// Calibrates `m` on `text` (activation maxima at the q/k/v and gate/up inputs of every layer, from the fp32
// forward) and returns each layer's SmoothQuant factors for `alpha`. `progress(layer)` after each layer.
std::vector<LayerSmoothing> smoothquant_calibrate(const Model &m, TokenWindows text, float alpha,
                                                  const std::function<void(int)> &progress = nullptr);

}  // namespace pangu
