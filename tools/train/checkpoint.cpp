#include "checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>

#include "common/common.h"
#include "common/io.h"
#include "common/json_util.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "model/tensor.h"
#include "output_dir.h"
#include "quantize.h"
#include "safetensors_writer.h"

namespace fs = std::filesystem;

namespace pangu::train {

namespace {

constexpr const char *kStateFormat = "pangu-train-state";
constexpr const char *kStateVersion = "1";

std::string dims_str(const std::vector<int64_t> &d) {
    std::string s = "[";
    for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
    return s + "]";
}

std::string widths_str(const std::vector<int> &w) {
    return dims_str(std::vector<int64_t>(w.begin(), w.end()));
}

std::string json_text(const Json::Value &v) {
    Json::StreamWriterBuilder wb;
    wb["indentation"] = "";  // metadata is one string; precision stays jsoncpp's 17 digits, so doubles round trip
    return Json::writeString(wb, v);
}

// tensors() hands out writable spans; the writers only read through them, so a const Params may be listed.
std::vector<TensorRef<float>> refs_of(const Params<float> &p, Trainable tr) {
    return tensors(const_cast<Params<float> &>(p), tr);
}

// "NaN at row 3, column 5" (a matrix) or "Inf at element 7".
std::string element_str(float v, const std::vector<int64_t> &shape, int64_t i) {
    const std::string what = std::isnan(v) ? "NaN" : "Inf";
    if (shape.size() != 2) return what + " at element " + std::to_string(i);
    return what + " at row " + std::to_string(i / shape[1]) + ", column " + std::to_string(i % shape[1]);
}

// ---- shapes ----

// The first difference between two shapes as "<what>: <an> <a>, <bn> <b>", or "" when they agree; with
// `widths` false the MLP widths are not compared (a pruned model keeps every other dimension of its source).
std::string shape_diff(const Shape &a, const std::string &an, const Shape &b, const std::string &bn, bool widths) {
    auto diff = [&](const char *what, const std::string &x, const std::string &y) {
        return std::string(what) + ": " + an + " " + x + ", " + bn + " " + y;
    };
    auto num = [](double x) { return json_text(Json::Value(x)); };
    const int ai[] = {a.n_vocab, a.n_embd, a.n_head, a.n_kv, a.head_dim, a.n_layer()};
    const int bi[] = {b.n_vocab, b.n_embd, b.n_head, b.n_kv, b.head_dim, b.n_layer()};
    const char *names[] = {"vocabulary size", "hidden size", "attention heads", "key/value heads", "head dim", "layers"};
    for (int k = 0; k < 6; ++k)
        if (ai[k] != bi[k]) return diff(names[k], std::to_string(ai[k]), std::to_string(bi[k]));
    if (a.bias != b.bias) return diff("q/k/v/o biases", a.bias ? "yes" : "no", b.bias ? "yes" : "no");
    if (a.tied != b.tied) return diff("tied head", a.tied ? "yes" : "no", b.tied ? "yes" : "no");
    if (a.eps != b.eps) return diff("RMSNorm eps", num(a.eps), num(b.eps));
    if (a.rope_theta != b.rope_theta) return diff("RoPE theta", num(a.rope_theta), num(b.rope_theta));
    if (widths && a.n_ff != b.n_ff) return diff("MLP widths", widths_str(a.n_ff), widths_str(b.n_ff));
    return "";
}

// The sizes each tensor of a shape has, checked against what p holds: a Params whose matrices disagree with
// its own shape would otherwise be written as a checkpoint that does not load (or, for a state, not resume).
void check_sizes(const Params<float> &p, const std::string &who) {
    const Shape &s = p.shape;
    if (static_cast<int>(p.layers.size()) != s.n_layer())
        fail(PANGU_ERR_INVALID_ARGUMENT, who + ": " + std::to_string(p.layers.size()) + " layers, the shape says " +
                                             std::to_string(s.n_layer()));
    const int64_t D = s.n_embd, Q = int64_t(s.n_head) * s.head_dim, KV = int64_t(s.n_kv) * s.head_dim, B = s.bias;
    const int64_t V = s.n_vocab, H = s.tied ? 0 : V;
    std::vector<std::vector<int64_t>> want = {{V, D}};
    for (int l = 0; l < s.n_layer(); ++l) {
        const int64_t F = s.n_ff[l];
        for (auto d : std::vector<std::vector<int64_t>>{{D}, {Q, D}, {B * Q}, {KV, D}, {B * KV}, {KV, D}, {B * KV},
                                                        {D, Q}, {B * D}, {D}, {F, D}, {F, D}, {D, F}})
            if (d[0] != 0) want.push_back(d);  // tensors() leaves out empty tensors (biases, a tied head)
    }
    want.push_back({D});
    if (H) want.push_back({H, D});
    const auto refs = refs_of(p, Trainable::ALL);
    for (size_t i = 0; i < refs.size() && i < want.size(); ++i)
        if (refs[i].shape != want[i])
            fail(PANGU_ERR_INVALID_ARGUMENT, who + ": tensor " + refs[i].name + " is " + dims_str(refs[i].shape) +
                                                 ", the shape says " + dims_str(want[i]));
    if (refs.size() != want.size())
        fail(PANGU_ERR_INVALID_ARGUMENT, who + ": " + std::to_string(refs.size()) + " non-empty tensors, the shape says " +
                                             std::to_string(want.size()) + " (a bias or the head present or missing)");
}

// ---- load_params ----


// One tensor of the checkpoint widened into t (as widen_tensor does, into place and with the file named).
void widen_into(const Model &m, const TensorRef<float> &t) {
    const TensorInfo *info = m.store.find(t.name);
    if (!info) fail(PANGU_ERR_MISSING_TENSOR, m.dir + ": tensor " + t.name + " is missing");
    const std::string where = info->file->path() + ": tensor " + t.name;
    if (info->shape != t.shape)
        fail(PANGU_ERR_SHAPE, where + " has shape " + dims_str(info->shape) + ", expected " + dims_str(t.shape));
    if (info->dtype != DType::F32 && info->dtype != DType::F16 && info->dtype != DType::BF16)
        fail(PANGU_ERR_DTYPE, where + " is " + dtype_name(info->dtype) + ", not a floating-point tensor");
    for (int64_t i = 0; i < t.size; ++i) {
        t.data[i] = load_element(*info, static_cast<size_t>(i));
        if (!std::isfinite(t.data[i])) fail(PANGU_ERR_NUMERIC, where + ": " + element_str(t.data[i], t.shape, i));
    }
}

// ---- save_model ----

// The source's config.json, made to describe p stored as bf16.
Json::Value model_config(const Params<float> &p, const Model &src, const Json::Value &extra) {
    const std::string path = src.dir + "/config.json";
    std::string text, why;
    switch (read_file(path, kMaxJsonBytes, text, why)) {
        case ReadResult::kOk: break;
        case ReadResult::kMissing: fail(PANGU_ERR_FILE_NOT_FOUND, path + ": not found");
        default: fail(PANGU_ERR_IO, path + ": cannot read: " + why);
    }
    Json::Value cfg;
    if (!parse_json(text, cfg, why)) fail(PANGU_ERR_CONFIG, path + ": invalid JSON: " + why);
    if (!cfg.isObject()) fail(PANGU_ERR_CONFIG, path + ": top level must be a JSON object");
    for (const std::string &k : extra.getMemberNames()) cfg[k] = extra[k];
    // The loader sizes its buffers from intermediate_size and reads each layer's width from its tensors.
    cfg["intermediate_size"] = *std::max_element(p.shape.n_ff.begin(), p.shape.n_ff.end());
    cfg["torch_dtype"] = "bfloat16";
    cfg.removeMember("quantization_config");
    return cfg;
}

void check_extra(const Json::Value &extra) {
    if (extra.isNull()) return;
    if (!extra.isObject()) fail(PANGU_ERR_INVALID_ARGUMENT, "save_model: extra config members must be a JSON object");
    for (const char *k : {"intermediate_size", "torch_dtype", "quantization_config"})
        if (extra.isMember(k)) fail(PANGU_ERR_INVALID_ARGUMENT, std::string("save_model: extra member ") + k +
                                                                    " is one save_model sets itself");
}

[[noreturn]] void not_bf16(const std::string &who, const TensorRef<float> &t, int64_t i) {
    const float x = t.data[i];
    std::string what = element_str(x, t.shape, i);
    char num[32];
    std::snprintf(num, sizeof num, "%.7g", x);
    if (std::isfinite(x)) what = num + what.substr(3) + " (beyond bf16's range)";  // what was "Inf at ..."
    fail(PANGU_ERR_NUMERIC, who + ": tensor " + t.name + ": " + what);
}

// Every tensor as BF16 (round to nearest even) into `path`. A value that is NaN or Inf, or becomes Inf in
// bf16, stops the write (the writer then removes its temporary file); `who` names the output in the message.
void write_bf16(const Params<float> &p, const std::string &path, const std::string &who) {
    SafetensorsWriter w;
    for (const TensorRef<float> &t : refs_of(p, Trainable::ALL))
        w.add(t.name, DType::BF16, t.shape, [t, who](uint8_t *dst) {
            for (int64_t i = 0; i < t.size; ++i) {
                const uint16_t h = f32_to_bf16(t.data[i]);
                if (!std::isfinite(bf16_to_f32(h))) not_bf16(who, t, i);
                std::memcpy(dst + 2 * i, &h, 2);
            }
        });
    w.set_metadata("format", "pt");
    w.set_metadata("producer", std::string("pangu_train ") + PANGU_VERSION_STRING);
    w.write(path);
}

void write_json_file(const std::string &path, const Json::Value &v) {
    Json::StreamWriterBuilder wb;
    wb["indentation"] = "  ";
    std::ofstream f(path);
    f << Json::writeString(wb, v) << "\n";
    f.close();
    if (!f) fail(PANGU_ERR_IO, path + ": cannot write");
}

void copy_tokenizer(const std::string &from, const std::string &to) {
    for (const char *f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})
        if (fs::exists(fs::path(from) / f)) fs::copy_file(fs::path(from) / f, fs::path(to) / f);
}

// The written directory must load as a model of p's shape before it takes the final name.
void check_loads(const std::string &dir, const Shape &want) {
    const std::unique_ptr<Model> back = Model::load(dir, ModelLoadOptions{});
    const std::string d = shape_diff(shape_of(*back), "written", want, "given", true);
    if (!d.empty()) fail(PANGU_ERR_INTERNAL, dir + " loads as another shape (" + d + ")");
}

// ---- state files ----

Json::Value shape_json(const Shape &s) {
    Json::Value j(Json::objectValue);
    j["n_vocab"] = s.n_vocab, j["n_embd"] = s.n_embd, j["n_head"] = s.n_head, j["n_kv"] = s.n_kv;
    j["head_dim"] = s.head_dim, j["bias"] = s.bias, j["tied"] = s.tied, j["eps"] = s.eps, j["rope_theta"] = s.rope_theta;
    j["n_ff"] = Json::Value(Json::arrayValue);
    for (int f : s.n_ff) j["n_ff"].append(f);
    return j;
}

[[noreturn]] void bad_metadata(const std::string &path, const std::string &why) {
    fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": metadata " + why + " (not a training state written by save_state)");
}

int positive_int(const Json::Value &j, const char *key, const std::string &path) {
    const Json::Value &v = j[key];
    if (!v.isInt() || v.asInt() <= 0) bad_metadata(path, std::string("\"shape\": ") + key + " is not a positive integer");
    return v.asInt();
}

Shape parse_shape(const Json::Value &j, const std::string &path) {
    if (!j.isObject()) bad_metadata(path, "\"shape\" is not a JSON object");
    Shape s;
    s.n_vocab = positive_int(j, "n_vocab", path), s.n_embd = positive_int(j, "n_embd", path);
    s.n_head = positive_int(j, "n_head", path), s.n_kv = positive_int(j, "n_kv", path);
    s.head_dim = positive_int(j, "head_dim", path);
    const Json::Value &ff = j["n_ff"];
    if (!ff.isArray() || ff.empty()) bad_metadata(path, "\"shape\": n_ff is not a list of widths");
    for (const Json::Value &f : ff) {
        if (!f.isInt() || f.asInt() <= 0) bad_metadata(path, "\"shape\": n_ff holds something other than a positive integer");
        s.n_ff.push_back(f.asInt());
    }
    if (!j["bias"].isBool() || !j["tied"].isBool()) bad_metadata(path, "\"shape\": bias and tied must be true or false");
    if (!j["eps"].isNumeric() || !j["rope_theta"].isNumeric()) bad_metadata(path, "\"shape\": eps and rope_theta must be numbers");
    s.bias = j["bias"].asBool(), s.tied = j["tied"].asBool();
    s.eps = j["eps"].asDouble(), s.rope_theta = j["rope_theta"].asDouble();
    return s;
}

// The header's __metadata__ (the safetensors reader validated the header but keeps only the tensors).
Json::Value read_metadata(const MappedFile &f) {
    uint8_t prefix[8];
    f.read(0, 8, prefix, "the header length");
    std::string header(static_cast<size_t>(safetensors_header_length(f.path(), prefix, f.size())), '\0');
    f.read(8, header.size(), &header[0], "the header");
    Json::Value root;
    std::string errs;
    if (!parse_json(header, root, errs)) fail(PANGU_ERR_SAFETENSORS_HEADER, f.path() + ": header is not valid JSON: " + errs);
    const Json::Value &md = root["__metadata__"];
    if (!md.isObject()) bad_metadata(f.path(), "is missing");
    // The format first: a model file or another tool's is told as such, not by the first key it lacks.
    if (md["format"] != kStateFormat) bad_metadata(f.path(), "\"format\" is not \"" + std::string(kStateFormat) + "\"");
    if (md["version"] != kStateVersion)
        bad_metadata(f.path(), "\"version\" is not \"" + std::string(kStateVersion) + "\" (a state of another release)");
    for (const char *k : {"step", "meta", "shape", "trainable"})
        if (!md[k].isString()) bad_metadata(f.path(), std::string("\"") + k + "\" is missing or not a string");
    return md;
}

// A metadata value as JSON text, all of it (parse_json would take "{} junk" as its first value).
Json::Value parse_json_member(const Json::Value &md, const char *key, const std::string &path) {
    Json::CharReaderBuilder b;
    b["collectComments"] = false, b["rejectDupKeys"] = true, b["failIfExtra"] = true;
    const std::unique_ptr<Json::CharReader> r(b.newCharReader());
    const std::string text = md[key].asString();
    Json::Value v;
    std::string errs;
    bool ok = false;
    try {
        ok = r->parse(text.data(), text.data() + text.size(), &v, &errs);
    } catch (const Json::Exception &) {  // nesting beyond jsoncpp's stack limit
    }
    if (!ok) bad_metadata(path, std::string("\"") + key + "\" is not JSON text");
    return v;
}

int64_t parse_step(const Json::Value &md, const std::string &path) {
    const std::string t = md["step"].asString();
    if (t.empty() || t.size() > 18 || t.find_first_not_of("0123456789") != std::string::npos)
        bad_metadata(path, "\"step\" is \"" + t.substr(0, 40) + "\", not a non-negative integer");
    return std::stoll(t);
}

// A tensor of the state file read into dst (with pread: a file cut short while it is read is an error, never
// a SIGBUS), checked for its dtype, shape and finite values.
void read_f32(const TensorStore &store, const std::string &path, const std::string &name,
              const std::vector<int64_t> &shape, float *dst) {
    const TensorInfo *t = store.find(name);
    const std::string where = path + ": tensor " + name;
    if (!t) fail(PANGU_ERR_MISSING_TENSOR, where + " is missing");
    if (t->dtype != DType::F32) fail(PANGU_ERR_DTYPE, where + " is " + dtype_name(t->dtype) + ", save_state writes F32");
    if (t->shape != shape)
        fail(PANGU_ERR_SHAPE, where + " has shape " + dims_str(t->shape) + ", expected " + dims_str(shape));
    t->file->read(t->offset, t->nbytes, dst, "tensor " + name);
    const int64_t n = static_cast<int64_t>(t->nbytes / 4);
    for (int64_t i = 0; i < n; ++i)
        if (!std::isfinite(dst[i])) fail(PANGU_ERR_NUMERIC, where + ": " + element_str(dst[i], shape, i));
}

// One tensor of a state as the file stores it.
struct Slot {
    std::string name;
    std::vector<int64_t> shape;
    float *data;
};

// Where each tensor of the file goes in s (already sized for its shape): every parameter, then the moments
// of the trainable ones.
std::vector<Slot> slots_of(TrainState &s, Trainable tr) {
    std::vector<Slot> out;
    for (const TensorRef<float> &t : tensors(s.params, tr)) {
        out.push_back({"param." + t.name, t.shape, t.data});
        if (!t.trainable) continue;
        s.m.emplace_back(static_cast<size_t>(t.size)), s.v.emplace_back(static_cast<size_t>(t.size));
        out.push_back({"adam_m." + t.name, t.shape, s.m.back().data()});
        out.push_back({"adam_v." + t.name, t.shape, s.v.back().data()});
    }
    return out;
}

// F32 tensor whose bytes are copied at write time; NaN or Inf stops the write (a state that load_state would
// refuse must not replace the last good one).
void add_f32(SafetensorsWriter &w, const std::string &path, const std::string &name, const std::vector<int64_t> &shape,
             const float *data, int64_t n) {
    w.add(name, DType::F32, shape, [=](uint8_t *dst) {
        for (int64_t i = 0; i < n; ++i)
            if (!std::isfinite(data[i])) fail(PANGU_ERR_NUMERIC, path + ": tensor " + name + ": " + element_str(data[i], shape, i));
        std::memcpy(dst, data, static_cast<size_t>(n) * 4);
    });
}

using Moments = std::vector<std::vector<float>>;

void check_moments(const Moments &m, const Moments &v, Trainable tr, const std::vector<TensorRef<float>> &refs,
                   const std::string &path) {
    const std::string who = path + ": training \"" + trainable_name(tr) + "\" tensors, ";
    size_t k = 0;
    for (const TensorRef<float> &t : refs) {
        if (!t.trainable) continue;
        if (k < m.size() && k < v.size() && static_cast<int64_t>(m[k].size()) == t.size &&
            static_cast<int64_t>(v[k].size()) == t.size) {
            ++k;
            continue;
        }
        fail(PANGU_ERR_INVALID_ARGUMENT, who + "moment " + std::to_string(k) + " is not sized for " + t.name + " (" +
                                             std::to_string(t.size) + " values)");
    }
    if (m.size() != k || v.size() != k)
        fail(PANGU_ERR_INVALID_ARGUMENT, who + std::to_string(m.size()) + " and " + std::to_string(v.size()) +
                                             " moment tensors for " + std::to_string(k) + " trainable tensors");
}

}  // namespace

void require_float(const Model &m, const std::string &role) {
    if (m.n_quantized == 0 && m.cfg.quant_method.empty()) return;
    const std::string method = m.cfg.quant_method.empty() ? "int8 weights" : m.cfg.quant_method;
    fail(PANGU_ERR_UNSUPPORTED, (role.empty() ? "" : "the " + role + " ") + m.dir + " is quantized (" + method +
                                    "): the training tools need a 16- or 32-bit checkpoint");
}

Shape shape_of(const Model &m) {
    Shape s;
    const ModelConfig &c = m.cfg;
    s.n_vocab = c.n_vocab, s.n_embd = c.n_embd, s.n_head = c.n_head, s.n_kv = c.n_head_kv, s.head_dim = c.head_dim;
    for (const LayerWeights &L : m.layers) s.n_ff.push_back(L.n_ff);
    s.bias = c.bias, s.tied = c.tie_embeddings;
    s.eps = c.rms_eps, s.rope_theta = c.rope_theta;
    return s;
}

Params<float> load_params(const Model &m) {
    require_float(m, "");
    Params<float> p = Params<float>::zeros(shape_of(m));
    for (const TensorRef<float> &t : tensors(p)) widen_into(m, t);
    return p;
}

void save_model(const Params<float> &p, const Model &src, const std::string &out_arg, const Json::Value &extra,
                bool force) {
    // "dir/" would put the temporary directory inside the output it is to replace.
    fs::path norm = fs::path(out_arg).lexically_normal();
    if (norm.has_parent_path() && norm.filename().empty()) norm = norm.parent_path();
    const std::string out = norm.string();
    if (!force && fs::exists(fs::symlink_status(out)))
        fail(PANGU_ERR_INVALID_ARGUMENT, out + " exists; use --force to replace it");
    const std::string d = shape_diff(p.shape, "the parameters'", shape_of(src), src.dir + "'s", false);
    if (!d.empty()) fail(PANGU_ERR_INVALID_ARGUMENT, "save_model: the parameters are not of " + src.dir + "'s model (" + d + ")");
    check_sizes(p, "save_model");
    check_extra(extra);
    const Json::Value cfg = model_config(p, src, extra);
    const std::string pid = std::to_string(getpid()), tmp = out + ".partial-" + pid;
    std::error_code ec;
    try {
        fs::remove_all(tmp);
        fs::create_directory(tmp);
        write_bf16(p, tmp + "/model.safetensors", "save_model " + out);
        write_json_file(tmp + "/config.json", cfg);
        copy_tokenizer(src.dir, tmp);
        check_loads(tmp, p.shape);
        replace_dir(tmp, out, force, pid);
    } catch (const fs::filesystem_error &e) {
        fs::remove_all(tmp, ec);
        fail(PANGU_ERR_IO, out + ": " + e.what());
    } catch (...) {
        fs::remove_all(tmp, ec);
        throw;
    }
}

void save_state(const Params<float> &params, const std::vector<std::vector<float>> &m,
                const std::vector<std::vector<float>> &v, int64_t step, const Json::Value &meta, Trainable tr,
                const std::string &path) {
    check_sizes(params, "save_state " + path);
    const auto refs = refs_of(params, tr);
    check_moments(m, v, tr, refs, path);
    if (step < 0) fail(PANGU_ERR_INVALID_ARGUMENT, path + ": step " + std::to_string(step) + " is negative");
    if (!meta.isObject() && !meta.isNull())
        fail(PANGU_ERR_INVALID_ARGUMENT, path + ": meta must be a JSON object (the run's settings) or null");
    SafetensorsWriter w;
    size_t k = 0;
    for (const TensorRef<float> &t : refs) {
        add_f32(w, path, "param." + t.name, t.shape, t.data, t.size);
        if (!t.trainable) continue;
        add_f32(w, path, "adam_m." + t.name, t.shape, m[k].data(), t.size);
        add_f32(w, path, "adam_v." + t.name, t.shape, v[k].data(), t.size);
        ++k;
    }
    w.set_metadata("format", kStateFormat);
    w.set_metadata("version", kStateVersion);
    w.set_metadata("step", std::to_string(step));
    w.set_metadata("meta", json_text(meta));
    w.set_metadata("shape", json_text(shape_json(params.shape)));
    w.set_metadata("trainable", trainable_name(tr));
    w.write(path);
}

void save_state(const TrainState &s, Trainable tr, const std::string &path) {
    save_state(s.params, s.m, s.v, s.step, s.meta, tr, path);
}

TrainState load_state(const std::string &path, const Shape &expect, Trainable tr) {
    TensorStore store;
    store.open_file(path, MapOptions{});
    const Json::Value md = read_metadata(*store.files().at(0));
    const Shape saved = parse_shape(parse_json_member(md, "shape", path), path);
    const std::string d = shape_diff(saved, "the state's", expect, "this run's", true);
    if (!d.empty()) fail(PANGU_ERR_INVALID_ARGUMENT, path + ": a state of another model (" + d + ")");
    if (md["trainable"].asString() != trainable_name(tr))
        fail(PANGU_ERR_INVALID_ARGUMENT, path + ": a state training \"" + md["trainable"].asString() +
                                             "\" tensors, this run trains \"" + trainable_name(tr) + "\"");
    TrainState s;
    s.step = parse_step(md, path);
    s.meta = parse_json_member(md, "meta", path);
    // A run reads its settings from it by name (jsoncpp throws Json::LogicError for a member of anything else).
    if (!s.meta.isObject() && !s.meta.isNull()) bad_metadata(path, "\"meta\" is not a JSON object");
    s.params = Params<float>::zeros(expect);
    const std::vector<Slot> slots = slots_of(s, tr);
    std::set<std::string> wanted;
    for (const Slot &sl : slots) wanted.insert(sl.name);
    for (const auto &kv : store.tensors())
        if (!wanted.count(kv.first))
            fail(PANGU_ERR_SAFETENSORS_HEADER, path + ": tensor " + kv.first + " is not one save_state writes for this "
                                                   "model and trainable set");
    for (const Slot &sl : slots) read_f32(store, path, sl.name, sl.shape, sl.data);
    return s;
}

}  // namespace pangu::train
