// The extern "C" boundary: argument checks, struct_size checks, and the one place where pangu::Error and
// every other exception are caught and turned into a status plus a message.
#include <json/json.h>

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "common/common.h"
#include "model/model.h"
#include "runtime/session.h"
#include "model/vocab.h"



namespace {

thread_local pangu::ErrorSlot t_last_error;

// The size of each struct as the 1.0 header published it (LP64). A caller built against 1.0 passes exactly
// this as struct_size, forever: these are literals, not sizeof, so that appending a field (the ABI only grows
// at the end of a struct) keeps that caller working. tests/abi/caller_v1.c checks it with a frozen 1.0 header.
// Portable form: the end of the last 1.0 field, rounded up to the struct's alignment.
#define PANGU_V1_END(T, last) \
    ((offsetof(T, last) + sizeof(static_cast<T *>(nullptr)->last) + alignof(T) - 1) / alignof(T) * alignof(T))
constexpr size_t kModelParamsV1 = PANGU_V1_END(pangu_model_params, device_profile);
constexpr size_t kModelInfoV1 = PANGU_V1_END(pangu_model_info, activation_precision);
constexpr size_t kSessionParamsV1 = PANGU_V1_END(pangu_session_params, n_self_draft_layers);
constexpr size_t kSessionMemoryV1 = PANGU_V1_END(pangu_session_memory, other_bytes);
constexpr size_t kSessionStatsV1 = PANGU_V1_END(pangu_session_stats, fp16_overflows);
constexpr size_t kSamplingParamsV1 = PANGU_V1_END(pangu_sampling_params, n_stop_strings);
constexpr size_t kResultV1 = PANGU_V1_END(pangu_generate_result, generate_ms);
#if UINTPTR_MAX == 0xffffffffffffffffu
static_assert(kModelParamsV1 == 48 && kModelInfoV1 == 80 && kSessionParamsV1 == 88 && kSessionMemoryV1 == 56 &&
                  kSessionStatsV1 == 272 && kSamplingParamsV1 == 80 && kResultV1 == 40,
              "a 1.0 struct changed before its last 1.0 field: the ABI only grows at the end of a struct");
#endif
// The *_params_init functions of 1.0 fill exactly the 1.0 size, since a 1.0 caller's struct is no larger. A
// struct that grows needs a sized successor of its init (docs/abi.md) before this assert may change.
static_assert(sizeof(pangu_model_params) == kModelParamsV1 && sizeof(pangu_sampling_params) == kSamplingParamsV1,
              "a parameter struct grew: add a sized init for it (docs/abi.md), then split this assert");
// pangu_session_params grew in 1.2 (kv_type), after its sized init, pangu_session_params_init_sized: the
// fields appended since 1.0 start at 88 or beyond, past the padding a 1.0 caller may not have zeroed.
static_assert(offsetof(pangu_session_params, kv_type) >= kSessionParamsV1,
              "a field appended to pangu_session_params overlaps the 1.0 struct (docs/abi.md)");
#if UINTPTR_MAX == 0xffffffffffffffffu
static_assert(offsetof(pangu_session_params, kv_type) == 88 && sizeof(pangu_session_params) == 96,
              "pangu_session_params 1.2 layout (LP64)");
#endif

// Recording an error allocates nothing (messages are formatted into fixed buffers), so that a call can report
// its failure even when no memory is left, and so that no exception can escape while it does.
pangu_status record(pangu_status st, const char *msg, pangu::ErrorSlot *handle_error) {
    t_last_error.set(msg);
    if (handle_error) handle_error->set(msg);
    return st;
}

__attribute__((format(printf, 3, 4))) pangu_status recordf(pangu_status st, pangu::ErrorSlot *handle_error,
                                                           const char *fmt, ...) {
    char msg[sizeof(pangu::ErrorSlot::msg)];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return record(st, msg, handle_error);
}

// Runs `fn`, translating exceptions; `err` is the handle's message slot (may be null).
template <typename Fn>
pangu_status guarded(pangu::ErrorSlot *err, Fn &&fn) {
    try {
        return fn();
    } catch (const pangu::Error &e) {
        return record(e.status(), e.what(), err);
    } catch (const std::bad_alloc &) {
        return record(PANGU_ERR_OUT_OF_MEMORY, "out of memory", err);
    } catch (const Json::Exception &e) {
        // jsoncpp reports a failed allocation as a Json::LogicError with this message, nothing more specific
        // (found by test_faults); any other jsoncpp exception is a bug of ours.
        if (std::strstr(e.what(), "Failed to allocate")) return record(PANGU_ERR_OUT_OF_MEMORY, "out of memory", err);
        return recordf(PANGU_ERR_INTERNAL, err, "internal error: %s", e.what());
    } catch (const std::exception &e) {
        return recordf(PANGU_ERR_INTERNAL, err, "internal error: %s", e.what());
    } catch (...) {
        return record(PANGU_ERR_INTERNAL, "internal error: unknown exception", err);
    }
}

pangu_status bad_arg(pangu::ErrorSlot *err, const char *fn, const char *what) {
    return recordf(PANGU_ERR_INVALID_ARGUMENT, err, "%s: %s", fn, what);
}

// Copies a caller's parameter struct over defaults, honouring its struct_size.
template <typename T>
pangu_status read_params(const T *in, T *out, size_t v1, const char *fn, pangu::ErrorSlot *err) {
    if (!in) return PANGU_OK;
    if (in->struct_size < v1 || in->struct_size > sizeof(T))
        return recordf(PANGU_ERR_STRUCT_SIZE, err,
                       "%s: struct_size %zu is not one this library (%s) knows; expected %zu", fn, in->struct_size,
                       PANGU_VERSION_STRING, sizeof(T));
    std::memcpy(out, in, in->struct_size);
    out->struct_size = sizeof(T);
    return PANGU_OK;
}

template <typename T>
pangu_status check_out_struct(const T *s, size_t v1, const char *fn, pangu::ErrorSlot *err) {
    if (s->struct_size < v1 || s->struct_size > sizeof(T))
        return recordf(PANGU_ERR_STRUCT_SIZE, err, "%s: struct_size %zu is not one this library knows; expected %zu",
                       fn, s->struct_size, sizeof(T));
    return PANGU_OK;
}

// A model is shared between threads, so its message slot is written under its lock.
pangu_status model_guarded_finish(const pangu_model *m, pangu_status st) {
    if (st != PANGU_OK && m) {
        const pangu::Model *model = pangu::from_handle(m);
        std::lock_guard<std::mutex> lk(model->error_mu);
        model->last_error.set(t_last_error.c_str());
    }
    return st;
}

}  // namespace

extern "C" {

unsigned pangu_version_number(void) { return PANGU_VERSION_NUMBER; }
const char *pangu_version_string(void) { return PANGU_VERSION_STRING; }

const char *pangu_status_string(pangu_status status) {
    // A C caller may pass any int (an enum is an int in C). In C++, reading a value outside the enumerators' range
    // as the enum type is undefined (UBSan's -fsanitize=enum traps on it), so the value is read as its bytes.
    static_assert(sizeof(pangu_status) == sizeof(int), "pangu_status is an int");
    int s;
    std::memcpy(&s, &status, sizeof s);
    switch (s) {
        case PANGU_OK: return "success";
        case PANGU_ERR_INVALID_ARGUMENT: return "invalid argument";
        case PANGU_ERR_STRUCT_SIZE: return "unknown struct_size";
        case PANGU_ERR_OUT_OF_MEMORY: return "out of memory";
        case PANGU_ERR_FILE_NOT_FOUND: return "file not found";
        case PANGU_ERR_IO: return "input/output error";
        case PANGU_ERR_CONFIG: return "invalid model configuration";
        case PANGU_ERR_SAFETENSORS_HEADER: return "invalid safetensors header";
        case PANGU_ERR_TENSOR_BOUNDS: return "tensor data out of bounds";
        case PANGU_ERR_DTYPE: return "unsupported tensor dtype";
        case PANGU_ERR_SHAPE: return "tensor shape mismatch";
        case PANGU_ERR_MISSING_TENSOR: return "missing tensor";
        case PANGU_ERR_TOKENIZER: return "invalid tokenizer";
        case PANGU_ERR_INVALID_UTF8: return "invalid UTF-8";
        case PANGU_ERR_CONTEXT_FULL: return "context full";
        case PANGU_ERR_BUFFER_TOO_SMALL: return "buffer too small";
        case PANGU_ERR_CANCELLED: return "cancelled";
        case PANGU_ERR_UNSUPPORTED: return "unsupported";
        case PANGU_ERR_INVALID_TOKEN: return "invalid token id";
        case PANGU_ERR_NUMERIC: return "numeric error (NaN or Inf)";
        case PANGU_ERR_INTERNAL: return "internal error";
        case PANGU_ERR_VOCAB_MISMATCH: return "draft vocabulary mismatch";
    }
    return "unknown status";
}

const char *pangu_last_error(void) { return t_last_error.c_str(); }

/* ---- models ---- */

void pangu_model_params_init(pangu_model_params *p) {
    if (!p) return;
    std::memset(p, 0, sizeof(*p));
    p->struct_size = sizeof(*p);
}

pangu_status pangu_model_load(const char *dir, const pangu_model_params *params, pangu_model **out) {
    if (out) *out = nullptr;
    if (!dir || !out) return bad_arg(nullptr, "pangu_model_load", "dir and out must not be NULL");
    pangu_model_params p;
    pangu_model_params_init(&p);
    if (pangu_status st = read_params(params, &p, kModelParamsV1, "pangu_model_load", nullptr)) return st;
    return guarded(nullptr, [&] {
        pangu::ModelLoadOptions opt;
        opt.map.prefault = p.prefault != 0;
        opt.map.lock = p.lock_memory != 0;
        if (p.activation_precision < PANGU_PRECISION_AUTO || p.activation_precision > PANGU_PRECISION_INT16)
            pangu::fail(PANGU_ERR_INVALID_ARGUMENT, "pangu_model_load: unknown activation_precision " +
                                                        std::to_string(p.activation_precision));
        opt.activation_precision = p.activation_precision;
        const char *env = std::getenv("PANGU_BACKEND");
        opt.backend = p.backend ? p.backend : (env && *env ? env : "cpu");
        opt.device_memory = p.device_memory;
        opt.device_profile = p.device_profile ? p.device_profile : "";
        *out = pangu::to_handle(pangu::Model::load(dir, opt).release());
        return PANGU_OK;
    });
}

void pangu_model_free(pangu_model *model) { delete pangu::from_handle(model); }

const char *pangu_model_backend(const pangu_model *model) {
    return model ? pangu::from_handle(model)->device->name : "";
}

const char *pangu_model_last_error(const pangu_model *model) {
    if (!model) return "";
    std::lock_guard<std::mutex> lk(pangu::from_handle(model)->error_mu);
    return pangu::from_handle(model)->last_error.c_str();
}

pangu_status pangu_model_get_info(const pangu_model *model, pangu_model_info *info) {
    if (!model || !info) return bad_arg(nullptr, "pangu_model_get_info", "model and info must not be NULL");
    if (pangu_status st = check_out_struct(info, kModelInfoV1, "pangu_model_get_info", nullptr))
        return model_guarded_finish(model, st);
    const pangu::Model &m = *pangu::from_handle(model);
    pangu_model_info r{};
    r.struct_size = info->struct_size;
    r.n_vocab = m.cfg.n_vocab;
    r.n_layer = m.cfg.n_layer;
    r.n_embd = m.cfg.n_embd;
    r.n_head = m.cfg.n_head;
    r.n_head_kv = m.cfg.n_head_kv;
    r.head_dim = m.cfg.head_dim;
    r.n_ctx_train = m.cfg.n_ctx_train;
    r.bos_token = m.vocab.bos();
    r.eos_token = m.eos_ids.empty() ? -1 : m.eos_ids[0];
    r.add_bos = m.vocab.add_bos() ? 1 : 0;
    r.has_chat_template = m.vocab.has_chat_tokens() ? 1 : 0;
    r.chat_end_token = m.vocab.has_chat_tokens() ? m.vocab.piece_id("[unused10]") : -1;
    r.has_generation_config = m.gen.present ? 1 : 0;
    r.n_params = m.n_params;
    r.weight_bytes = m.weight_bytes;
    r.n_quantized = m.n_quantized;
    r.activation_precision = m.activation_dtype == pangu::DType::BF16 ? PANGU_PRECISION_BF16
                             : m.activation_dtype == pangu::DType::I8  ? PANGU_PRECISION_INT8
                             : m.activation_dtype == pangu::DType::I16 ? PANGU_PRECISION_INT16
                                                                        : PANGU_PRECISION_F32;
    std::memcpy(info, &r, info->struct_size);
    return PANGU_OK;
}

/* ---- tokenizer ---- */

pangu_status pangu_tokenize(const pangu_model *model, const char *text, size_t len, int32_t add_bos,
                            int32_t parse_special, int32_t *ids, size_t capacity, size_t *n_tokens) {
    if (!model || (!text && len) || !n_tokens || (!ids && capacity))
        return bad_arg(nullptr, "pangu_tokenize", "model, n_tokens, and text/ids when their sizes are non-zero, must not be NULL");
    const pangu::Model &m = *pangu::from_handle(model);
    return model_guarded_finish(model, guarded(nullptr, [&] {
        std::vector<int32_t> v;
        const bool bos = add_bos < 0 ? m.vocab.add_bos() : add_bos != 0;
        m.vocab.tokenize(std::string_view(text ? text : "", len), bos, parse_special != 0, v);
        *n_tokens = v.size();
        if (v.size() > capacity)
            pangu::fail(PANGU_ERR_BUFFER_TOO_SMALL, "pangu_tokenize: " + std::to_string(v.size()) +
                                                        " tokens do not fit in a buffer of " + std::to_string(capacity));
        if (!v.empty()) std::memcpy(ids, v.data(), v.size() * sizeof(int32_t));
        return PANGU_OK;
    }));
}

namespace {
pangu_status copy_text(const std::string &s, char *buf, size_t capacity, size_t *len, const char *fn) {
    *len = s.size();
    if (capacity < s.size() + 1)
        pangu::fail(PANGU_ERR_BUFFER_TOO_SMALL, std::string(fn) + ": " + std::to_string(s.size() + 1) +
                                                    " bytes needed, buffer holds " + std::to_string(capacity));
    std::memcpy(buf, s.data(), s.size());
    buf[s.size()] = '\0';
    return PANGU_OK;
}
}  // namespace

pangu_status pangu_detokenize(const pangu_model *model, const int32_t *ids, size_t n, char *buf, size_t capacity,
                              size_t *len) {
    if (!model || (!ids && n) || !len || (!buf && capacity))
        return bad_arg(nullptr, "pangu_detokenize", "model, len, and ids/buf when their sizes are non-zero, must not be NULL");
    const pangu::Model &m = *pangu::from_handle(model);
    return model_guarded_finish(model, guarded(nullptr, [&] {
        for (size_t i = 0; i < n; ++i)
            if (ids[i] < 0 || ids[i] >= m.cfg.n_vocab)
                pangu::fail(PANGU_ERR_INVALID_TOKEN, "pangu_detokenize: token id " + std::to_string(ids[i]) +
                                                         " at index " + std::to_string(i) + " is outside the vocabulary");
        // Ids past the tokenizer's pieces (a model's vocab_size padded beyond them) stand for no text.
        std::vector<int32_t> known;
        known.reserve(n);
        for (size_t i = 0; i < n; ++i)
            if (ids[i] < m.vocab.n_vocab()) known.push_back(ids[i]);
        return copy_text(m.vocab.decode(known.data(), known.size()), buf, capacity, len, "pangu_detokenize");
    }));
}

pangu_status pangu_token_to_bytes(const pangu_model *model, int32_t token, char *buf, size_t capacity, size_t *len) {
    if (!model || !len || (!buf && capacity))
        return bad_arg(nullptr, "pangu_token_to_bytes", "model, len, and buf when capacity is non-zero, must not be NULL");
    const pangu::Model &m = *pangu::from_handle(model);
    return model_guarded_finish(model, guarded(nullptr, [&] {
        if (token < 0 || token >= m.cfg.n_vocab)
            pangu::fail(PANGU_ERR_INVALID_TOKEN, "pangu_token_to_bytes: token id " + std::to_string(token) +
                                                     " is outside the vocabulary");
        const std::string bytes = token < m.vocab.n_vocab() ? std::string(m.vocab.token_bytes(token)) : std::string();
        return copy_text(bytes, buf, capacity, len, "pangu_token_to_bytes");
    }));
}

pangu_status pangu_apply_chat_template(const pangu_model *model, const pangu_chat_message *messages, size_t n_messages,
                                       int32_t add_generation_prompt, char *buf, size_t capacity, size_t *len) {
    if (!model || (!messages && n_messages) || !len || (!buf && capacity))
        return bad_arg(nullptr, "pangu_apply_chat_template", "model, len, and messages/buf when their sizes are non-zero, must not be NULL");
    const pangu::Model &m = *pangu::from_handle(model);
    return model_guarded_finish(model, guarded(nullptr, [&] {
        return copy_text(m.vocab.apply_chat_template(messages, n_messages, add_generation_prompt != 0), buf, capacity,
                         len, "pangu_apply_chat_template");
    }));
}

pangu_status pangu_chat_stop_tokens(const pangu_model *model, int32_t *ids, size_t capacity, size_t *n) {
    if (!model || !n || (!ids && capacity))
        return bad_arg(nullptr, "pangu_chat_stop_tokens", "model and n must not be NULL, nor ids when capacity > 0");
    const pangu::Model &m = *pangu::from_handle(model);
    return model_guarded_finish(model, guarded(nullptr, [&] {
        const std::vector<int32_t> v = m.vocab.chat_stop_tokens();
        *n = v.size();
        if (capacity < v.size())
            return recordf(PANGU_ERR_BUFFER_TOO_SMALL, nullptr, "pangu_chat_stop_tokens: %zu ids do not fit in %zu",
                           v.size(), capacity);
        std::memcpy(ids, v.data(), v.size() * sizeof(int32_t));
        return PANGU_OK;
    }));
}

/* ---- sessions ---- */

namespace {

// Every default, in the library's whole struct.
void session_params_defaults(pangu_session_params *p) {
    std::memset(p, 0, sizeof(*p));
    p->struct_size = sizeof(*p);
    p->n_ctx = 0;  // resolved against the model at creation: min(2048, max_position_embeddings)
    p->n_batch = 64;
    p->n_threads = 1;
    p->spec_mode = PANGU_SPEC_PLD;
    p->spec_ngram = 3;
    p->spec_draft_len = 4;
    p->kv_type = PANGU_KV_F16;
}

}  // namespace

// 1.0's init: exactly the 1.0 struct, which is all a 1.0 caller has.
void pangu_session_params_init(pangu_session_params *p) {
    if (!p) return;
    pangu_session_params d;
    session_params_defaults(&d);
    d.struct_size = kSessionParamsV1;
    std::memcpy(p, &d, kSessionParamsV1);
}

pangu_status pangu_session_params_init_sized(pangu_session_params *p, size_t size) {
    if (!p) return bad_arg(nullptr, "pangu_session_params_init_sized", "params must not be NULL");
    if (size < kSessionParamsV1 || size > sizeof(pangu_session_params))
        return recordf(PANGU_ERR_STRUCT_SIZE, nullptr,
                       "pangu_session_params_init_sized: size %zu is not one this library (%s) knows; expected %zu "
                       "to %zu",
                       size, PANGU_VERSION_STRING, kSessionParamsV1, sizeof(pangu_session_params));
    pangu_session_params d;
    session_params_defaults(&d);
    d.struct_size = size;
    std::memcpy(p, &d, size);
    return PANGU_OK;
}

namespace {

// Resolves defaults against the model and checks every field; throws pangu::Error.
void resolve_session_params(const pangu::Model &m, pangu_session_params &p, const char *fn) {
    if (p.n_ctx == 0) p.n_ctx = std::min(2048, m.cfg.n_ctx_train);
    if (p.n_ctx < 1 || p.n_ctx > m.cfg.n_ctx_train)
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT, std::string(fn) + ": n_ctx " + std::to_string(p.n_ctx) +
                                                    " must be between 1 and the model's max_position_embeddings (" +
                                                    std::to_string(m.cfg.n_ctx_train) + ")");
    if (p.n_batch < 1 || p.n_batch > 4096)
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT,
                    std::string(fn) + ": n_batch " + std::to_string(p.n_batch) + " must be between 1 and 4096");
    if (p.n_threads < 1 || p.n_threads > 256)
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT,
                    std::string(fn) + ": n_threads " + std::to_string(p.n_threads) + " must be between 1 and 256");
    if (p.context_policy != PANGU_CONTEXT_ERROR && p.context_policy != PANGU_CONTEXT_SLIDE)
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT,
                    std::string(fn) + ": unknown context_policy " + std::to_string(p.context_policy));
    if (p.n_keep < 0 || (p.n_keep > 0 && p.n_keep >= p.n_ctx / 2))
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT, std::string(fn) + ": n_keep " + std::to_string(p.n_keep) +
                                                    " must be at least 0 and less than n_ctx / 2");
    if (p.spec_mode < PANGU_SPEC_OFF || p.spec_mode > PANGU_SPEC_SELF)
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT, std::string(fn) + ": unknown spec_mode " + std::to_string(p.spec_mode));
    if (p.spec_ngram < 1 || p.spec_ngram > 8)
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT,
                    std::string(fn) + ": spec_ngram " + std::to_string(p.spec_ngram) + " must be between 1 and 8");
    if (p.spec_draft_len < 1 || p.spec_draft_len > pangu::kMaxDraftLen)
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT, std::string(fn) + ": spec_draft_len " + std::to_string(p.spec_draft_len) +
                                                    " must be between 1 and " + std::to_string(pangu::kMaxDraftLen));
    if (p.spec_mode == PANGU_SPEC_DRAFT) {
        if (!p.draft_model)
            pangu::fail(PANGU_ERR_INVALID_ARGUMENT, std::string(fn) + ": spec_mode PANGU_SPEC_DRAFT needs draft_model");
        const pangu::Model &d = *pangu::from_handle(p.draft_model);
        // Drafts are token ids: they only mean the same thing if both vocabularies are the same, piece by piece.
        const int32_t diff = d.cfg.n_vocab != m.cfg.n_vocab ? -2 : d.vocab.first_difference(m.vocab);
        if (diff != -1)
            pangu::fail(PANGU_ERR_VOCAB_MISMATCH,
                        std::string(fn) + ": the draft model (" + d.dir + ") has a different vocabulary from the target (" +
                            m.dir + "): " +
                            (diff >= 0 ? "token " + std::to_string(diff) + " differs"
                                       : "vocab sizes " + std::to_string(d.cfg.n_vocab) + " and " +
                                             std::to_string(m.cfg.n_vocab)));
        if (p.n_ctx > d.cfg.n_ctx_train)
            pangu::fail(PANGU_ERR_INVALID_ARGUMENT, std::string(fn) + ": n_ctx " + std::to_string(p.n_ctx) +
                                                        " exceeds the draft model's max_position_embeddings");
    }
    if (p.spec_mode == PANGU_SPEC_SELF && p.self_draft_layers) {
        if (p.n_self_draft_layers < 1 || p.n_self_draft_layers > m.cfg.n_layer)
            pangu::fail(PANGU_ERR_INVALID_ARGUMENT, std::string(fn) + ": n_self_draft_layers must be 1.." +
                                                        std::to_string(m.cfg.n_layer));
        for (int32_t i = 0; i < p.n_self_draft_layers; ++i) {
            const int32_t l = p.self_draft_layers[i];
            if (l < 0 || l >= m.cfg.n_layer || (i > 0 && l <= p.self_draft_layers[i - 1]))
                pangu::fail(PANGU_ERR_INVALID_ARGUMENT,
                            std::string(fn) + ": self_draft_layers must be ascending layer indices below " +
                                std::to_string(m.cfg.n_layer));
        }
    }
    if (p.kv_type < PANGU_KV_F32 || p.kv_type > PANGU_KV_Q8)
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT, std::string(fn) + ": unknown kv_type " + std::to_string(p.kv_type) +
                                                    " (PANGU_KV_F32 0, PANGU_KV_F16 1, PANGU_KV_BF16 2, PANGU_KV_Q8 3)");
    if (!p.arena && p.arena_size)
        pangu::fail(PANGU_ERR_INVALID_ARGUMENT, std::string(fn) + ": arena_size is set but arena is NULL");
    if (p.n_batch > p.n_ctx) p.n_batch = p.n_ctx;
}

}  // namespace

pangu_status pangu_session_estimate(const pangu_model *model, const pangu_session_params *params,
                                    pangu_session_memory *out) {
    if (!model || !out) return bad_arg(nullptr, "pangu_session_estimate", "model and out must not be NULL");
    if (pangu_status st = check_out_struct(out, kSessionMemoryV1, "pangu_session_estimate", nullptr))
        return model_guarded_finish(model, st);
    pangu_session_params p;
    session_params_defaults(&p);
    if (pangu_status st = read_params(params, &p, kSessionParamsV1, "pangu_session_estimate", nullptr))
        return model_guarded_finish(model, st);
    return model_guarded_finish(model, guarded(nullptr, [&] {
        p.arena = nullptr;
        p.arena_size = 0;
        resolve_session_params(*pangu::from_handle(model), p, "pangu_session_estimate");
        const pangu::SessionLayout L = pangu::plan_session(*pangu::from_handle(model), p);
        pangu_session_memory r{};
        r.struct_size = out->struct_size;
        r.arena_bytes = L.total;
        r.alignment = L.alignment;
        r.kv_cache_bytes = L.kv_bytes;
        r.activation_bytes = L.activation_bytes;
        r.logits_bytes = L.logits_bytes;
        r.other_bytes = L.total + L.device_bytes - L.kv_bytes - L.activation_bytes - L.logits_bytes;
        r.device_bytes = L.device_bytes;
        std::memcpy(out, &r, out->struct_size);
        return PANGU_OK;
    }));
}

pangu_status pangu_session_create(pangu_model *model, const pangu_session_params *params, pangu_session **out) {
    if (out) *out = nullptr;
    if (!model || !out) return bad_arg(nullptr, "pangu_session_create", "model and out must not be NULL");
    pangu_session_params p;
    session_params_defaults(&p);
    if (pangu_status st = read_params(params, &p, kSessionParamsV1, "pangu_session_create", nullptr))
        return model_guarded_finish(model, st);
    return model_guarded_finish(model, guarded(nullptr, [&] {
        resolve_session_params(*pangu::from_handle(model), p, "pangu_session_create");
        *out = pangu::to_handle(pangu::create_session(*pangu::from_handle(model), p));
        return PANGU_OK;
    }));
}

void pangu_session_free(pangu_session *session) { pangu::destroy_session(pangu::from_handle(session)); }

const char *pangu_session_last_error(const pangu_session *session) {
    return session ? pangu::from_handle(session)->last_error.c_str() : "";
}

#define SESSION_CHECK(fn)                                                            \
    if (!session) return bad_arg(nullptr, fn, "session must not be NULL");           \
    pangu::Session &S = *pangu::from_handle(session)

pangu_status pangu_session_reset(pangu_session *session) {
    SESSION_CHECK("pangu_session_reset");
    S.reset();
    return PANGU_OK;
}

size_t pangu_session_n_tokens(const pangu_session *session) { return session ? pangu::from_handle(session)->n_tokens : 0; }

pangu_status pangu_session_get_tokens(const pangu_session *session, int32_t *ids, size_t capacity, size_t *n) {
    if (!session || !n || (!ids && capacity))
        return bad_arg(nullptr, "pangu_session_get_tokens", "session, n, and ids when capacity is non-zero, must not be NULL");
    const pangu::Session &S = *pangu::from_handle(session);
    *n = S.n_tokens;
    if (S.n_tokens > capacity)
        return recordf(PANGU_ERR_BUFFER_TOO_SMALL, &S.last_error, "pangu_session_get_tokens: %zu tokens do not fit in %zu",
                       S.n_tokens, capacity);
    if (S.n_tokens) std::memcpy(ids, S.tokens, S.n_tokens * sizeof(int32_t));
    return PANGU_OK;
}

pangu_status pangu_session_truncate(pangu_session *session, size_t n_keep) {
    SESSION_CHECK("pangu_session_truncate");
    return guarded(&S.last_error, [&] {
        S.truncate(n_keep);
        return PANGU_OK;
    });
}

pangu_status pangu_session_eval(pangu_session *session, const int32_t *ids, size_t n, float *logits) {
    SESSION_CHECK("pangu_session_eval");
    if (!ids && n) return bad_arg(&S.last_error, "pangu_session_eval", "ids must not be NULL when n > 0");
    return guarded(&S.last_error, [&] {
        S.eval(ids, n, logits);
        return PANGU_OK;
    });
}

pangu_status pangu_session_get_logits(pangu_session *session, const float **logits, int32_t *n_vocab) {
    SESSION_CHECK("pangu_session_get_logits");
    if (!logits) return bad_arg(&S.last_error, "pangu_session_get_logits", "logits must not be NULL");
    return guarded(&S.last_error, [&] {
        S.sync();
        if (!S.logits_valid)
            pangu::fail(PANGU_ERR_INVALID_ARGUMENT, "pangu_session_get_logits: no token has been evaluated");
        *logits = S.logits();
        if (n_vocab) *n_vocab = S.model.cfg.n_vocab;
        return PANGU_OK;
    });
}

pangu_status pangu_session_get_stats(const pangu_session *session, pangu_session_stats *stats) {
    if (!session || !stats) return bad_arg(nullptr, "pangu_session_get_stats", "session and stats must not be NULL");
    if (pangu_status st = check_out_struct(stats, kSessionStatsV1, "pangu_session_get_stats", nullptr))
        return st;
    const pangu::Session &S = *pangu::from_handle(session);
    pangu_session_stats r{};
    r.struct_size = stats->struct_size;
    r.arena_bytes = S.layout.total;
    r.arena_high_water = S.high_water();
    r.kv_cache_bytes = S.layout.kv_bytes;
    r.caller_arena = S.caller_arena ? 1 : 0;
    r.n_ctx = S.layout.n_ctx;
    r.n_tokens = static_cast<int32_t>(S.n_tokens);
    r.n_threads = S.layout.n_threads;
    r.n_forward = S.n_forward;
    r.n_evaluated = S.n_evaluated;
    r.n_context_shifts = S.n_context_shifts;
    r.n_generated = S.n_generated_total;
    r.generate_ms = S.generate_ms_total;
    r.n_verify = S.n_verify;
    r.n_drafted = S.n_drafted;
    r.n_accepted = S.n_accepted;
    static_assert(sizeof r.accepted_hist == sizeof S.accepted_hist, "one histogram entry per accepted count");
    std::memcpy(r.accepted_hist, S.accepted_hist, sizeof r.accepted_hist);
    pgd_stream_stats ds{};
    if (S.device_stats(&ds)) {
        r.device_est_ms = ds.est_ms;
        r.host_to_device_bytes = static_cast<int64_t>(ds.host_to_device_bytes);
        r.device_to_host_bytes = static_cast<int64_t>(ds.device_to_host_bytes);
        r.fp16_overflows = static_cast<int64_t>(ds.saturated);
    }
    std::memcpy(stats, &r, stats->struct_size);
    return PANGU_OK;
}

void pangu_session_set_abort_callback(pangu_session *session, pangu_abort_callback callback, void *user_data) {
    if (!session) return;
    pangu::from_handle(session)->abort_cb = callback;
    pangu::from_handle(session)->abort_user = user_data;
}

/* ---- generation ---- */

void pangu_sampling_params_init(pangu_sampling_params *p) {
    if (!p) return;
    std::memset(p, 0, sizeof(*p));
    p->struct_size = sizeof(*p);
    p->temperature = 0.0f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0;
    p->max_new_tokens = 256;
}

pangu_status pangu_model_get_sampling_defaults(const pangu_model *model, pangu_sampling_params *params) {
    if (!model || !params)
        return bad_arg(nullptr, "pangu_model_get_sampling_defaults", "model and params must not be NULL");
    if (pangu_status st = check_out_struct(params, kSamplingParamsV1, "pangu_model_get_sampling_defaults", nullptr))
        return model_guarded_finish(model, st);
    const pangu::GenerationConfig &g = pangu::from_handle(model)->gen;
    pangu_sampling_params r;
    pangu_sampling_params_init(&r);
    if (g.temperature) r.temperature = static_cast<float>(*g.temperature);
    if (g.do_sample && !*g.do_sample) r.temperature = 0.0f;
    if (g.top_k) r.top_k = *g.top_k;
    if (g.top_p) r.top_p = static_cast<float>(*g.top_p);
    if (g.repetition_penalty) r.repetition_penalty = static_cast<float>(*g.repetition_penalty);
    if (g.max_new_tokens) r.max_new_tokens = *g.max_new_tokens;
    r.struct_size = params->struct_size;
    std::memcpy(params, &r, std::min(params->struct_size, sizeof r));
    return PANGU_OK;
}

pangu_status pangu_session_generate_tokens(pangu_session *session, const int32_t *ids, size_t n,
                                           const pangu_sampling_params *params, pangu_token_callback callback,
                                           void *user_data, pangu_generate_result *result) {
    SESSION_CHECK("pangu_session_generate_tokens");
    if (!ids && n) return bad_arg(&S.last_error, "pangu_session_generate_tokens", "ids must not be NULL when n > 0");
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    if (pangu_status st = read_params(params, &sp, kSamplingParamsV1, "pangu_session_generate", &S.last_error)) return st;
    if (result)
        if (pangu_status st = check_out_struct(result, kResultV1, "pangu_session_generate", &S.last_error)) return st;
    return guarded(&S.last_error, [&] {
        // Expected stops are recorded without exceptions or allocation.
        const pangu_status st = S.generate(ids, n, sp, callback, user_data, result);
        if (st == PANGU_ERR_CANCELLED) return record(st, "generation cancelled", &S.last_error);
        if (st == PANGU_ERR_NUMERIC)
            return recordf(st, &S.last_error,
                           "generation stopped: the %s's logits after %zu tokens of context hold NaN or Inf (its "
                           "weights or activations are not finite); reset or truncate the session before going on",
                           !S.numeric_in_draft                       ? "model"
                           : S.params.spec_mode == PANGU_SPEC_SELF   ? "self-draft"
                                                                     : "draft model",
                           S.numeric_pos);
        if (st == PANGU_ERR_CONTEXT_FULL)
            return record(
                st,
                S.params.context_policy == PANGU_CONTEXT_SLIDE
                    ? "generation stopped: the context is full and too small to slide (n_ctx must leave room "
                      "for the kept n_keep tokens, the last token and the next one)"
                    : "generation stopped: the context is full (context_policy PANGU_CONTEXT_SLIDE would slide it)",
                &S.last_error);
        return st;
    });
}

pangu_status pangu_session_generate(pangu_session *session, const char *prompt, const pangu_sampling_params *params,
                                    pangu_token_callback callback, void *user_data, pangu_generate_result *result) {
    SESSION_CHECK("pangu_session_generate");
    if (!prompt) return bad_arg(&S.last_error, "pangu_session_generate", "prompt must not be NULL");
    std::vector<int32_t> ids;
    pangu_status st = guarded(&S.last_error, [&] {
        const bool bos = S.n_tokens == 0 && S.model.vocab.add_bos();
        S.model.vocab.tokenize(prompt, bos, true, ids);
        return PANGU_OK;
    });
    if (st != PANGU_OK) return st;
    return pangu_session_generate_tokens(session, ids.data(), ids.size(), params, callback, user_data, result);
}

}  // extern "C"
