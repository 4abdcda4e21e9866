// Turns a checkpoint directory into a Model: config.json, tokenizer, and weights checked against the
// configuration one by one, so that a bad file fails here with a message instead of later with garbage.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "common/common.h"
#include "model/model.h"

namespace pangu {

// The device backend by name, from the registry (device/registry.cpp).
pgd_device *create_device(const ModelLoadOptions &opt) {
    pgd_device_options o{};
    o.memory_budget = opt.device_memory;
    o.profile_path = opt.device_profile.empty() ? nullptr : opt.device_profile.c_str();
    int status = 0;
    char err[512];
    pgd_device *d = pgd_device_create(opt.backend.c_str(), &o, &status, err, sizeof err);
    if (d) return d;
    if (err[0]) fail(static_cast<pangu_status>(status), err);  // names the backends there are, or the profile file
    fail(static_cast<pangu_status>(status), "out of memory creating the " + opt.backend + " device");
}

float f16_to_f32(uint16_t h) {
    const uint32_t sign = (h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {  // subnormal: renormalize
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) {
                mant <<= 1;
                --exp;
            }
            mant &= 0x3ffu;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u;
    const uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
    if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504: inf
    if (absx < 0x38800000u) {                                               // subnormal or zero in f16
        if (absx < 0x33000000u) return static_cast<uint16_t>(sign);
        const uint32_t e = absx >> 23;
        const uint32_t m = (absx & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - e;  // value * 2^24 = m * 2^(e - 126): the f16 subnormal grid
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return static_cast<uint16_t>(sign | r);
    }
    uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
    r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
    return static_cast<uint16_t>(sign | r);
}

struct ModelBuilder {
    Model &m;
    const std::string &dir;
    std::set<std::string> used;

    const TensorInfo &need(const std::string &name) {
        const TensorInfo *t = m.store.find(name);
        if (!t) fail(PANGU_ERR_MISSING_TENSOR, dir + ": required tensor " + name + " is missing");
        used.insert(name);
        return *t;
    }
    const TensorInfo *maybe(const std::string &name) {
        const TensorInfo *t = m.store.find(name);
        if (t) used.insert(name);
        return t;
    }
    static std::string shape_str(const std::vector<int64_t> &s) {
        std::string r = "[";
        for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
        return r + "]";
    }
    void check_shape(const TensorInfo &t, std::vector<int64_t> want) {
        if (t.shape != want)
            fail(PANGU_ERR_SHAPE, t.file->path() + ": tensor " + t.name + " has shape " + shape_str(t.shape) +
                                      " but config.json implies " + shape_str(want));
    }
    void check_float(const TensorInfo &t) {
        if (t.dtype == DType::I8 || t.dtype == DType::U8)
            fail(PANGU_ERR_DTYPE, t.file->path() + ": tensor " + t.name + " is " + dtype_name(t.dtype) +
                                      ", which only weight matrices may be");
    }
    // A weight matrix: floating point as stored, or I8 with one scale per row in "<name>_scale"
    // (e.g. q_proj.weight + q_proj.weight_scale, the layout pangu-quantize writes).
    // `linear`: a layer's projection, which may be 4-bit (the embedding table and a separate head may not).
    Tensor matrix(const std::string &name, int64_t rows, int64_t cols, bool linear = true) {
        const TensorInfo &t = need(name);
        if (t.dtype == DType::U8) return packed_i4(t, rows, cols, linear);
        check_shape(t, {rows, cols});
        Tensor w = view(t);
        if (t.dtype == DType::I8) {
            w.scale = scales(t, rows, 1);
            m.n_quantized += 1;
        }
        return w;
    }
    // The scales of an integer weight, "<name>_scale": `per_row` of them per row, none negative or NaN.
    const float *scales(const TensorInfo &t, int64_t rows, int64_t per_row) {
        const std::string sname = t.name + "_scale";
        const TensorInfo *s = maybe(sname);
        if (!s)
            fail(PANGU_ERR_MISSING_TENSOR, t.file->path() + ": tensor " + t.name + " is " + dtype_name(t.dtype) +
                                               " but its scale tensor " + sname + " is missing");
        check_float(*s);
        const bool ok = per_row == 1 ? s->shape == std::vector<int64_t>{rows} || s->shape == std::vector<int64_t>{rows, 1}
                                     : s->shape == std::vector<int64_t>{rows, per_row};
        if (!ok)
            fail(PANGU_ERR_SHAPE, s->file->path() + ": tensor " + sname + " has shape " + shape_str(s->shape) +
                                      ", expected " + shape_str({rows, per_row}) +
                                      (per_row == 1 ? " (one scale per output channel)" : " (one scale per group)"));
        const float *sc = m.widen(*s);  // refuses NaN and Inf
        for (int64_t i = 0; i < rows * per_row; ++i)
            if (!(sc[i] >= 0.0f))
                fail(PANGU_ERR_NUMERIC, s->file->path() + ": tensor " + sname + " has a negative scale at row " +
                                            std::to_string(i / per_row));
        m.weight_bytes += static_cast<int64_t>(s->nbytes);
        return sc;
    }
    // A 4-bit weight (PGD_I4): U8 [rows, cols / 2] and group scales, in a w4a8 checkpoint only.
    Tensor packed_i4(const TensorInfo &t, int64_t rows, int64_t cols, bool linear) {
        const int g = m.cfg.quant_group;
        if (m.cfg.quant_bits != 4)
            fail(PANGU_ERR_DTYPE, t.file->path() + ": tensor " + t.name + " is U8 (packed 4-bit) but config.json's "
                                      "quantization_config does not describe 4-bit weights");
        if (!linear)
            fail(PANGU_ERR_UNSUPPORTED, t.file->path() + ": tensor " + t.name + " is 4-bit; the embedding table "
                                            "and the head may be int8 (pangu-quantize --quantize-embeddings), not 4-bit");
        if (cols % 64 != 0 || cols % g != 0)
            fail(PANGU_ERR_UNSUPPORTED, t.file->path() + ": tensor " + t.name + " has " + std::to_string(cols) +
                                            " columns; 4-bit weights need a multiple of 64 and of the group size " +
                                            std::to_string(g));
        check_shape(t, {rows, cols / 2});
        Tensor w = view(t);
        w.dtype = DType::I4;
        w.cols = cols;
        w.group_size = g;
        m.n_params += rows * cols / 2;  // view counted the bytes as elements
        w.scale = scales(t, rows, cols / g);
        m.n_quantized += 1;
        return w;
    }
    Tensor view(const TensorInfo &t) {
        Tensor w;
        w.dtype = t.dtype;
        w.rows = t.shape.size() > 0 ? t.shape[0] : 1;
        w.cols = t.shape.size() > 1 ? t.shape[1] : 1;
        w.data = t.data;
        w.name = t.name;
        // Kernels load elements with unaligned vector loads, but scalar paths dereference them: a tensor
        // that is not aligned to its element size (possible only in hand-made files) is copied once.
        if (reinterpret_cast<uintptr_t>(t.data) % dtype_size(t.dtype) != 0) {
            m.owned_.emplace_back((t.nbytes + 3) / 4);
            t.file->read(t.offset, t.nbytes, m.owned_.back().data(), "tensor " + t.name);
            w.data = m.owned_.back().data();
        }
        m.n_params += w.rows * w.cols;
        m.weight_bytes += static_cast<int64_t>(t.nbytes);
        return w;
    }
    const float *vec(const std::string &name, int64_t n) {
        const TensorInfo &t = need(name);
        check_float(t);
        check_shape(t, {n});
        m.n_params += n;
        m.weight_bytes += static_cast<int64_t>(t.nbytes);
        return m.widen(t);
    }
};

const float *Model::widen(const TensorInfo &t) {
    const size_t n = t.nbytes / dtype_size(t.dtype);
    std::vector<float> v(n);
    // Read from the file, not the mapping: see MappedFile.
    std::vector<uint8_t> bytes(t.nbytes);
    t.file->read(t.offset, t.nbytes, bytes.data(), "tensor " + t.name);
    const uint8_t *p = bytes.data();
    for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        switch (t.dtype) {
            case DType::F32: std::memcpy(&v[i], p + 4 * i, 4); break;
            case DType::BF16: std::memcpy(&h, p + 2 * i, 2); v[i] = bf16_to_f32(h); break;
            case DType::F16: std::memcpy(&h, p + 2 * i, 2); v[i] = f16_to_f32(h); break;
            case DType::I8:
            case DType::U8:
            case DType::I4:
            case DType::I16: v[i] = 0; break;
        }
        if (!std::isfinite(v[i]))
            fail(PANGU_ERR_NUMERIC, t.file->path() + ": tensor " + t.name + " holds NaN or Inf at element " +
                                        std::to_string(i));
    }
    owned_.push_back(std::move(v));
    return owned_.back().data();
}

Model::~Model() {
    if (device) {
        if (device->weight_release)
            for (auto &t : uploaded_) device->weight_release(device->ctx, &t);
        device->destroy(device);
    }
}

void Model::upload_weights() {
    auto upload = [&](Tensor &w) {
        pgd_tensor h{};
        h.data = const_cast<void *>(w.data);
        h.dtype = pgd_type(w.dtype);
        h.rows = w.rows;
        h.cols = w.cols;
        h.stride = w.cols;
        h.scale = w.scale;
        h.group_size = w.group_size;
        // W8A8 / W4A8: the inputs of integer weights are quantized to int8 by the matmul (device.h).
        const bool integer = w.dtype == DType::I8 || w.dtype == DType::I4;
        const bool int_act = activation_dtype == DType::I8 || activation_dtype == DType::I16;
        h.act_dtype = integer && int_act ? pgd_type(activation_dtype) : PGD_F32;
        if (!device->weight_upload) {
            w.dev = h;
            return;
        }
        const int rc = device->weight_upload(device->ctx, &h, &w.dev);
        if (rc != 0)
            fail(static_cast<pangu_status>(rc), dir + ": the " + device->name + " device cannot take tensor " + w.name +
                                                    " (" + std::to_string(w.nbytes()) + " bytes)");
        uploaded_.push_back(w.dev);
    };
    upload(tok_embd);
    if (output.data == tok_embd.data) output.dev = tok_embd.dev;
    else upload(output);
    upload_vector(out_norm, cfg.n_embd, "model.norm.weight");
    for (size_t l = 0; l < layers.size(); ++l) {
        LayerWeights &L = layers[l];
        for (Tensor *t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) upload(*t);
        const std::string p = "model.layers." + std::to_string(l) + ".";
        upload_vector(L.attn_norm, cfg.n_embd, p + "input_layernorm.weight");
        upload_vector(L.ffn_norm, cfg.n_embd, p + "post_attention_layernorm.weight");
        if (L.bq) {
            upload_vector(L.bq, L.wq.rows, p + "self_attn.q_proj.bias");
            upload_vector(L.bk, L.wk.rows, p + "self_attn.k_proj.bias");
            upload_vector(L.bv, L.wv.rows, p + "self_attn.v_proj.bias");
            upload_vector(L.bo, L.wo.rows, p + "self_attn.o_proj.bias");
        }
    }
}

void Model::upload_vector(VecWeight &v, int64_t n, const std::string &name) {
    pgd_tensor h{};
    h.data = const_cast<float *>(v.host);
    h.dtype = PGD_F32;
    h.rows = 1;
    h.cols = n;
    h.stride = n;
    if (!device->weight_upload) {
        v.dev = h;
        return;
    }
    const int rc = device->weight_upload(device->ctx, &h, &v.dev);
    if (rc != 0)
        fail(static_cast<pangu_status>(rc), dir + ": the " + device->name + " device cannot take tensor " + name);
    uploaded_.push_back(v.dev);
}

namespace {

// One layer's weights, checked against the configuration; the MLP width comes from the tensors, since pruned
// checkpoints carry a different width per layer.
void load_layer(ModelBuilder &b, const ModelConfig &c, int l, LayerWeights &L) {
    const int64_t H = c.n_embd, qd = int64_t(c.n_head) * c.head_dim, kvd = int64_t(c.n_head_kv) * c.head_dim;
    const std::string p = "model.layers." + std::to_string(l) + ".";
    L.attn_norm.host = b.vec(p + "input_layernorm.weight", H);
    L.ffn_norm.host = b.vec(p + "post_attention_layernorm.weight", H);
    L.wq = b.matrix(p + "self_attn.q_proj.weight", qd, H);
    L.wk = b.matrix(p + "self_attn.k_proj.weight", kvd, H);
    L.wv = b.matrix(p + "self_attn.v_proj.weight", kvd, H);
    L.wo = b.matrix(p + "self_attn.o_proj.weight", H, qd);
    if (c.bias) {
        L.bq.host = b.vec(p + "self_attn.q_proj.bias", qd);
        L.bk.host = b.vec(p + "self_attn.k_proj.bias", kvd);
        L.bv.host = b.vec(p + "self_attn.v_proj.bias", kvd);
        L.bo.host = b.vec(p + "self_attn.o_proj.bias", H);
    }
    const TensorInfo &gate = b.need(p + "mlp.gate_proj.weight");
    const int64_t gate_cols = gate.dtype == DType::U8 ? H / 2 : H;  // packed 4-bit: two columns a byte
    if (gate.shape.size() != 2 || gate.shape[1] != gate_cols || gate.shape[0] <= 0)
        fail(PANGU_ERR_SHAPE, gate.file->path() + ": tensor " + gate.name + " has shape " +
                                  ModelBuilder::shape_str(gate.shape) + ", expected [n_ff, " + std::to_string(gate_cols) + "]");
    const int64_t ff = gate.shape[0];
    L.n_ff = static_cast<int>(ff);
    L.w_gate = b.matrix(p + "mlp.gate_proj.weight", ff, H);
    L.w_up = b.matrix(p + "mlp.up_proj.weight", ff, H);
    L.w_down = b.matrix(p + "mlp.down_proj.weight", H, ff);
}

// Anything left over is either harmless (rotary caches) or a sign that config.json and the weights disagree,
// which must not be silently ignored.
void check_leftovers(const ModelBuilder &b, const TensorStore &store, const ModelConfig &c) {
    for (const auto &kv : store.tensors()) {
        const std::string &name = kv.first;
        if (b.used.count(name)) continue;
        if (name.find("rotary_emb.inv_freq") != std::string::npos) continue;
        if (name.rfind("model.layers.", 0) == 0) {
            const int l = std::atoi(name.c_str() + 13);
            if (l >= c.n_layer)
                fail(PANGU_ERR_SHAPE, kv.second.file->path() + ": tensor " + name + " belongs to layer " +
                                          std::to_string(l) + " but config.json has num_hidden_layers " +
                                          std::to_string(c.n_layer));
        }
        if (name == "lm_head.weight") continue;
        fail(PANGU_ERR_SHAPE, kv.second.file->path() + ": unexpected tensor " + name);
    }
}

// `int16`: the device multiplies int16 activations (PGD_CAP_INT16_ACT), as fast as int8 ones where the CPU
// has integer dot products: a w8a16 checkpoint's 16-bit activations are then int16, not bf16 (as precise on
// the models measured, and decode at the memory floor: docs/quantization.md).
DType resolve_activation_dtype(const std::string &dir, const ModelConfig &c, int n_quantized, int precision,
                               bool int16) {
    DType a = DType::F32;
    switch (precision) {
        case PANGU_PRECISION_F32: a = DType::F32; break;
        case PANGU_PRECISION_BF16: a = DType::BF16; break;
        case PANGU_PRECISION_INT8: a = DType::I8; break;
        case PANGU_PRECISION_INT16: a = DType::I16; break;
        default:  // AUTO: what the quantizer made it for; fp32 for plain checkpoints
            a = c.quant_method.empty() || c.quant_activation == "float32" ? DType::F32
                : c.quant_activation == "int8"                          ? DType::I8
                : int16                                                 ? DType::I16
                                                                        : DType::BF16;
    }
    const bool integer = a == DType::I8 || a == DType::I16;
    if (integer && n_quantized == 0)
        fail(PANGU_ERR_UNSUPPORTED, dir + ": " + (a == DType::I8 ? "int8" : "int16") +
                                        " activations need integer weights (a w8a16, w8a8 or w4a8 checkpoint from "
                                        "pangu-quantize); this one has none");
    if (c.quant_bits == 4 && !integer)
        fail(PANGU_ERR_UNSUPPORTED, dir + ": " + c.quant_method + " weights take int8 activations only "
                                          "(activation_precision AUTO or INT8; or INT16)");
    return a;
}

}  // namespace

void Model::load_weights() {
    ModelBuilder b{*this, dir, {}};
    const int64_t H = cfg.n_embd;
    tok_embd = b.matrix("model.embed_tokens.weight", cfg.n_vocab, H, false);
    out_norm.host = b.vec("model.norm.weight", H);
    if (b.maybe("lm_head.weight")) output = b.matrix("lm_head.weight", cfg.n_vocab, H, false);
    else if (cfg.tie_embeddings) output = tok_embd;
    else fail(PANGU_ERR_MISSING_TENSOR, dir + ": lm_head.weight is missing and tie_word_embeddings is false");
    layers.resize(cfg.n_layer);
    for (int l = 0; l < cfg.n_layer; ++l) {
        load_layer(b, cfg, l, layers[l]);
        max_ff = std::max(max_ff, layers[l].n_ff);
    }
    check_leftovers(b, store, cfg);
}

std::unique_ptr<Model> Model::load(const std::string &dir, const ModelLoadOptions &opt) {
    std::unique_ptr<Model> m(new Model());
    m->dir = dir;
    m->cfg = load_config(dir);
    m->vocab.load(dir);
    if (m->vocab.n_vocab() > m->cfg.n_vocab)
        fail(PANGU_ERR_TOKENIZER, dir + "/tokenizer.model: has " + std::to_string(m->vocab.n_vocab()) +
                                      " pieces but config.json vocab_size is " + std::to_string(m->cfg.n_vocab));
    m->gen = load_generation_config(dir, m->cfg.n_vocab);
    std::vector<int> eos = m->cfg.eos_ids;
    eos.insert(eos.end(), m->gen.eos_ids.begin(), m->gen.eos_ids.end());
    eos.push_back(m->vocab.eos());
    for (int id : eos)
        if (id >= 0 && std::find(m->eos_ids.begin(), m->eos_ids.end(), id) == m->eos_ids.end()) m->eos_ids.push_back(id);
    m->store.open_dir(dir, opt.map);
    m->load_weights();
    m->device = create_device(opt);
    const pgd_backend_reg *reg = pgd_backend_find(m->device->name);
    const bool int16 = reg && (reg->caps & PGD_CAP_INT16_ACT);
    m->activation_dtype = resolve_activation_dtype(dir, m->cfg, m->n_quantized, opt.activation_precision, int16);
    if (m->activation_dtype == DType::I16 && !int16)
        fail(PANGU_ERR_UNSUPPORTED, dir + ": int16 activations (PANGU_PRECISION_INT16) are not supported by the " +
                                        m->device->name + " backend");
    // A device that keeps its own copy (npu-sim) reads every weight through the mapping now.
    if (m->device->weight_upload) m->store.check_sizes();
    m->upload_weights();
    // A file cut short while loading would make inference fault (SIGBUS) on the pages past its new end.
    m->store.check_sizes();
    return m;
}

}  // namespace pangu
