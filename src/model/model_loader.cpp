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
        if (t.dtype == DType::I8 || t.dtype == DType::U8 || t.dtype == DType::I32)
            fail(PANGU_ERR_DTYPE, t.file->path() + ": tensor " + t.name + " is " + dtype_name(t.dtype) +
                                      ", which only weight matrices may be");
    }
    // A weight matrix: floating point as stored, or I8 with one scale per row in "<name>_scale"
    // (e.g. q_proj.weight + q_proj.weight_scale, the layout pangu-quantize writes).
    // `linear`: a layer's projection, which may be 4-bit (the embedding table and a separate head may not).
    Tensor matrix(const std::string &name, int64_t rows, int64_t cols, bool linear = true) {
        const TensorInfo &t = need(name);
        if (t.dtype == DType::U8 && m.cfg.quant_method == "mixed") return packed_qb(t, rows, cols, linear);
        if (t.dtype == DType::U8) return packed_i4(t, rows, cols, linear);
        // I32 is a file dtype for the orders of low-bit weights only: as a weight it reached the kernels,
        // which refused it at the first evaluation of a model that had loaded.
        if (t.dtype == DType::I32)
            fail(PANGU_ERR_DTYPE, t.file->path() + ": tensor " + t.name + " is I32, which only the row and column "
                                      "orders of low-bit weights (<name>_order, <name>_perm) may be");
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
    // A low-bit weight's width rules: linears only, cols a multiple of 64 and of the group size.
    void check_lowbit(const TensorInfo &t, int64_t cols, bool linear, const char *what) {
        const int g = m.cfg.quant_group;
        if (!linear)
            fail(PANGU_ERR_UNSUPPORTED, t.file->path() + ": tensor " + t.name + " is " + what + "; the embedding "
                                            "table and the head may be int8 (pangu-quantize --quantize-embeddings), not low-bit");
        if (cols % 64 != 0 || cols % g != 0)
            fail(PANGU_ERR_UNSUPPORTED, t.file->path() + ": tensor " + t.name + " has " + std::to_string(cols) +
                                            " columns; low-bit weights need a multiple of 64 and of the group size " +
                                            std::to_string(g));
    }
    // A 4-bit weight (PGD_I4): U8 [rows, cols / 2] and group scales (with zero points and a column order when
    // the config says so), in a w4a8 or w4a16 checkpoint only.
    Tensor packed_i4(const TensorInfo &t, int64_t rows, int64_t cols, bool linear) {
        const int g = m.cfg.quant_group;
        if (m.cfg.quant_bits != 4)
            fail(PANGU_ERR_DTYPE, t.file->path() + ": tensor " + t.name + " is U8 (packed 4-bit) but config.json's "
                                      "quantization_config does not describe 4-bit weights");
        check_lowbit(t, cols, linear, "4-bit");
        check_shape(t, {rows, cols / 2});
        Tensor w = view(t);
        w.dtype = DType::I4;
        w.cols = cols;
        w.group_size = g;
        m.n_params += rows * cols / 2;  // view counted the bytes as elements
        w.scale = scales(t, rows, cols / g);
        w.zero = zeros(t, rows, cols / g, nullptr);
        w.col_perm = column_order(t, cols);
        m.n_quantized += 1;
        return w;
    }
    // The zero points "<name>_zero" U8 [rows, groups] of an asymmetric checkpoint (none in a symmetric one),
    // each below 2^bits of its row (4 without `bits`) and 128 for 8-bit rows. NULL when symmetric.
    const uint8_t *zeros(const TensorInfo &t, int64_t rows, int64_t groups, const uint8_t *bits) {
        const std::string zname = t.name + "_zero";
        const TensorInfo *z = maybe(zname);
        if (m.cfg.quant_symmetric) {
            if (z)
                fail(PANGU_ERR_SHAPE, z->file->path() + ": tensor " + zname + " holds zero points but config.json's "
                                          "quantization_config says the weights are symmetric");
            return nullptr;
        }
        if (!z)
            fail(PANGU_ERR_MISSING_TENSOR, t.file->path() + ": tensor " + t.name + " has no zero points " + zname +
                                               " (quantization_config.symmetric is false)");
        if (z->dtype != DType::U8) fail(PANGU_ERR_DTYPE, z->file->path() + ": tensor " + zname + " must be U8");
        check_shape(*z, {rows, groups});
        const uint8_t *zp = m.read_u8(*z);
        for (int64_t r = 0; r < rows; ++r) {
            const int b = bits ? bits[r] : 4;
            for (int64_t i = r * groups; i < (r + 1) * groups; ++i)
                if (zp[i] >= (1 << b) || (b == 8 && zp[i] != 128))
                    fail(PANGU_ERR_NUMERIC, z->file->path() + ": tensor " + zname + " has zero point " +
                                                std::to_string(zp[i]) + " at row " + std::to_string(r) + " (" +
                                                std::to_string(b) + "-bit" + (b == 8 ? ": 8-bit rows take 128)" : ")"));
        }
        m.weight_bytes += static_cast<int64_t>(z->nbytes);
        return zp;
    }
    // An I32 tensor of n entries that must be a permutation of 0..n-1 (`what` says what it orders).
    const int32_t *permutation(const TensorInfo &p, int64_t n, const char *what) {
        if (p.dtype != DType::I32) fail(PANGU_ERR_DTYPE, p.file->path() + ": tensor " + p.name + " must be I32");
        check_shape(p, {n});
        const int32_t *v = m.read_i32(p);
        std::vector<bool> seen(static_cast<size_t>(n), false);
        for (int64_t i = 0; i < n; ++i) {
            if (v[i] < 0 || v[i] >= n || seen[static_cast<size_t>(v[i])])
                fail(PANGU_ERR_SHAPE, p.file->path() + ": tensor " + p.name + " is not a " + what + " (entry " +
                                          std::to_string(i) + " is " + std::to_string(v[i]) + ")");
            seen[static_cast<size_t>(v[i])] = true;
        }
        m.weight_bytes += static_cast<int64_t>(p.nbytes);
        return v;
    }
    // The stored column order "<name>_perm" of an act-order checkpoint; NULL when the config has none.
    const int32_t *column_order(const TensorInfo &t, int64_t cols) {
        const std::string pname = t.name + "_perm";
        const TensorInfo *p = maybe(pname);
        if (!m.cfg.quant_act_order) {
            if (p)
                fail(PANGU_ERR_SHAPE, p->file->path() + ": tensor " + pname + " is a column order but config.json's "
                                          "quantization_config has no act_order");
            return nullptr;
        }
        if (!p)
            fail(PANGU_ERR_MISSING_TENSOR, t.file->path() + ": tensor " + t.name + " has no column order " + pname +
                                               " (quantization_config.act_order is true)");
        return permutation(*p, cols, "permutation of the columns");
    }
    // A mixed-precision weight (PGD_QB): U8 [bytes] holding its rows, "<name>_bits" U8 [rows] (each row's
    // width, non-decreasing), "<name>_order" I32 [rows] (output channel of each stored row), group scales,
    // zero points and column order as for 4-bit weights.
    Tensor packed_qb(const TensorInfo &t, int64_t rows, int64_t cols, bool linear) {
        const int g = m.cfg.quant_group;
        check_lowbit(t, cols, linear, "mixed-precision");
        const uint8_t *bits = row_widths(t, rows);
        pgd_qb_layout L{};
        int64_t bytes = 0;
        for (int64_t r = 0; r < rows; ++r) {
            if (r == 0 || bits[r] != bits[r - 1]) L.seg[L.n_segments++] = pgd_qb_segment{bits[r], r, 0, bytes};
            L.seg[L.n_segments - 1].rows += 1;
            bytes += cols * bits[r] / 8;
        }
        check_shape(t, {bytes});
        const std::string oname = t.name + "_order";
        const TensorInfo *o = maybe(oname);
        if (!o) fail(PANGU_ERR_MISSING_TENSOR, t.file->path() + ": tensor " + t.name + " has no row order " + oname);
        L.row_order = permutation(*o, rows, "permutation of the rows");
        Tensor w = view(t);
        m.n_params += rows * cols - bytes;  // view counted the bytes as elements
        w.dtype = DType::QB;
        w.rows = rows;
        w.cols = cols;
        w.group_size = g;
        w.qb_bytes = t.nbytes;
        w.scale = scales(t, rows, cols / g);
        w.zero = zeros(t, rows, cols / g, bits);
        w.col_perm = column_order(t, cols);
        m.qb_layouts_.push_back(L);
        w.qb = &m.qb_layouts_.back();
        m.n_quantized += 1;
        return w;
    }
    // "<name>_bits": U8 [rows], each 2, 3, 4, 6 or 8, in non-decreasing order (rows of one width together).
    const uint8_t *row_widths(const TensorInfo &t, int64_t rows) {
        const std::string bname = t.name + "_bits";
        const TensorInfo *b = maybe(bname);
        if (!b) fail(PANGU_ERR_MISSING_TENSOR, t.file->path() + ": tensor " + t.name + " has no row widths " + bname);
        if (b->dtype != DType::U8) fail(PANGU_ERR_DTYPE, b->file->path() + ": tensor " + bname + " must be U8");
        check_shape(*b, {rows});
        const uint8_t *v = m.read_u8(*b);
        for (int64_t r = 0; r < rows; ++r) {
            if (v[r] != 2 && v[r] != 3 && v[r] != 4 && v[r] != 6 && v[r] != 8)
                fail(PANGU_ERR_SHAPE, b->file->path() + ": tensor " + bname + " gives row " + std::to_string(r) + " " +
                                          std::to_string(v[r]) + " bits (2, 3, 4, 6 or 8)");
            if (r > 0 && v[r] < v[r - 1])
                fail(PANGU_ERR_SHAPE, b->file->path() + ": tensor " + bname + " is not in increasing order at row " +
                                          std::to_string(r) + " (rows of one width are stored together)");
        }
        m.weight_bytes += static_cast<int64_t>(b->nbytes);
        return v;
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
            case DType::I16:
            case DType::QB:
            case DType::I32: v[i] = 0; break;
        }
        if (!std::isfinite(v[i]))
            fail(PANGU_ERR_NUMERIC, t.file->path() + ": tensor " + t.name + " holds NaN or Inf at element " +
                                        std::to_string(i));
    }
    owned_.push_back(std::move(v));
    return owned_.back().data();
}

const uint8_t *Model::read_u8(const TensorInfo &t) {
    std::vector<uint8_t> v(t.nbytes);
    t.file->read(t.offset, t.nbytes, v.data(), "tensor " + t.name);
    owned_u8_.push_back(std::move(v));
    return owned_u8_.back().data();
}

const int32_t *Model::read_i32(const TensorInfo &t) {
    std::vector<int32_t> v(t.nbytes / 4);
    t.file->read(t.offset, v.size() * 4, v.data(), "tensor " + t.name);
    owned_i32_.push_back(std::move(v));
    return owned_i32_.back().data();
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
        h.zero = w.zero;
        h.col_perm = w.col_perm;
        h.qb = w.qb;
        // W8A8 / W4A8: the inputs of integer weights are quantized to int8 by the matmul (device.h).
        const bool integer = w.dtype == DType::I8 || w.dtype == DType::I4 || w.dtype == DType::QB;
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

// A layer's MLP width: the rows of its gate_proj (of "<name>_bits" for a mixed-precision one, whose packed
// rows are one run of bytes).
int64_t mlp_width(ModelBuilder &b, const ModelConfig &c, const std::string &name) {
    const TensorInfo &gate = b.need(name);
    const int64_t H = c.n_embd;
    if (gate.dtype == DType::U8 && c.quant_method == "mixed") {
        const TensorInfo *bits = b.maybe(name + "_bits");
        if (!bits) fail(PANGU_ERR_MISSING_TENSOR, gate.file->path() + ": tensor " + name + " has no row widths " + name + "_bits");
        if (bits->shape.size() != 1 || bits->shape[0] <= 0)
            fail(PANGU_ERR_SHAPE, bits->file->path() + ": tensor " + bits->name + " has shape " +
                                      ModelBuilder::shape_str(bits->shape) + ", expected [n_ff]");
        return bits->shape[0];
    }
    const int64_t gate_cols = gate.dtype == DType::U8 ? H / 2 : H;  // packed 4-bit: two columns a byte
    if (gate.shape.size() != 2 || gate.shape[1] != gate_cols || gate.shape[0] <= 0)
        fail(PANGU_ERR_SHAPE, gate.file->path() + ": tensor " + gate.name + " has shape " +
                                  ModelBuilder::shape_str(gate.shape) + ", expected [n_ff, " + std::to_string(gate_cols) + "]");
    return gate.shape[0];
}

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
    const int64_t ff = mlp_width(b, c, p + "mlp.gate_proj.weight");
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

// `caps`: the backend's PGD_CAP_*. With PGD_CAP_INT16_ACT the device multiplies int16 activations as fast
// as int8 ones where the CPU has integer dot products: a checkpoint's 16-bit activations are then int16, not
// bf16 (as precise on the models measured, and decode at the memory floor: docs/quantization.md).
DType resolve_activation_dtype(const std::string &dir, const ModelConfig &c, int n_quantized, int precision,
                               uint32_t caps) {
    DType a = DType::F32;
    switch (precision) {
        case PANGU_PRECISION_F32: a = DType::F32; break;
        case PANGU_PRECISION_BF16: a = DType::BF16; break;
        case PANGU_PRECISION_INT8: a = DType::I8; break;
        case PANGU_PRECISION_INT16: a = DType::I16; break;
        default:  // AUTO: what the quantizer made it for; fp32 for plain checkpoints
            a = c.quant_method.empty() || c.quant_activation == "float32" ? DType::F32
                : c.quant_activation == "int8"                          ? DType::I8
                : (caps & PGD_CAP_INT16_ACT)                            ? DType::I16
                                                                        : DType::BF16;
    }
    const bool integer = a == DType::I8 || a == DType::I16;
    if (integer && n_quantized == 0)
        fail(PANGU_ERR_UNSUPPORTED, dir + ": " + (a == DType::I8 ? "int8" : "int16") +
                                        " activations need integer weights (a w8a16, w8a8, w4a8, w4a16 or mixed "
                                        "checkpoint from pangu-quantize); this one has none");
    if (c.lowbit() && !integer && !(caps & PGD_CAP_LOWBIT_FLOAT_ACT))
        fail(PANGU_ERR_UNSUPPORTED, dir + ": this backend multiplies " + c.quant_method +
                                        " weights by integer activations only (activation_precision AUTO, INT16 or INT8)");
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
    const uint32_t caps = reg ? reg->caps : 0;
    m->activation_dtype = resolve_activation_dtype(dir, m->cfg, m->n_quantized, opt.activation_precision, caps);
    if (m->activation_dtype == DType::I16 && !(caps & PGD_CAP_INT16_ACT))
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
