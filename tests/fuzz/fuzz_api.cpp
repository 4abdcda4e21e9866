// Fuzzes the public C API with arbitrary parameter values: the input is a small program. It fills session
// parameters (any value, or a plausible one), estimates and creates a session (in the library's memory or a
// caller arena of the input's choosing), then runs up to 24 operations on it: eval, generate from ids or
// text with arbitrary sampling parameters, stop tokens and stop strings, cancellation from the token or the
// abort callback, truncate, reset, get_logits, get_tokens, stats, tokenize/detokenize and the chat template.
// Every call must return a status its contract allows, with a message when it fails; streamed pieces must
// be UTF-8; the session's token count must stay within its context; AddressSanitizer watches the rest.
// Models, loaded once: the target is the fuzz data's tiny chat model (fast, so most inputs run many
// operations) or, for one input in four, pangu-tiny; drafts are pangu-tiny-draft, the target itself or a
// model with another vocabulary.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "model/vocab.h"

namespace {

pangu_model *g_tiny, *g_draft, *g_chat;
// The current input's target model and its vocabulary size.
pangu_model *g_model;
int32_t g_vocab;

int32_t vocab_of(pangu_model *m) {
    pangu_model_info info;
    std::memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    pangu_model_get_info(m, &info);
    return info.n_vocab;
}

using fuzz::Input;

// Zero bytes mean the ordinary, valid choice throughout, so that an input of zeros runs the defaults.
// An int field: the default, a plausible value, or (one time in eight) any 32-bit value.
int32_t pick_int(Input &in, int32_t def, int32_t lo, int32_t hi) {
    const uint8_t k = in.u8();
    if (k < 96) return def;
    if (k < 224) return lo + static_cast<int32_t>(in.u32() % static_cast<uint32_t>(hi - lo + 1));
    return in.i32();
}

float pick_float(Input &in, float def, float lo, float hi) {
    const uint8_t k = in.u8();
    if (k < 96) return def;
    if (k < 224) return lo + (hi - lo) * static_cast<float>(in.u8()) / 255.0f;
    return in.any_float();
}

struct Callbacks {
    int tokens = 0, stop_after = -1;  // token callback: cancel at this count (-1: never)
    int polls = 0, abort_after = -1;  // abort callback: cancel at this poll (-1: never)
};

int on_token(void *user, int32_t token, const char *piece, size_t len) {
    FUZZ_CHECK(token >= 0 && token < g_vocab, "callback got token %d", token);
    FUZZ_CHECK(pangu::utf8_valid(std::string_view(piece, len)), "streamed piece is not UTF-8");
    Callbacks *c = static_cast<Callbacks *>(user);
    ++c->tokens;
    return c->stop_after >= 0 && c->tokens >= c->stop_after;
}

int on_abort(void *user) {
    Callbacks *c = static_cast<Callbacks *>(user);
    ++c->polls;
    return c->abort_after >= 0 && c->polls > c->abort_after;
}

void check(pangu_status st, const char *call, std::initializer_list<pangu_status> allowed) {
    if (fuzz::verbose()) std::fprintf(stderr, "%s: %s %s\n", call, pangu_status_string(st), st ? pangu_last_error() : "");
    fuzz::check_failure_contract(st, call);
    FUZZ_CHECK(st == PANGU_OK || fuzz::one_of(st, allowed), "%s: unexpected status %d: %s", call, (int)st,
               pangu_last_error());
}

// Sampling parameters; the generation is bounded by max_new_tokens or, when that is large, by the token
// callback, so that one input never runs for long.
pangu_sampling_params sampling(Input &in, std::vector<int32_t> &stop_ids, std::vector<std::string> &stop_text,
                               std::vector<const char *> &stop_ptrs, Callbacks &cb) {
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    if (in.u8() > 239) sp.struct_size = in.u32() % 256;
    sp.temperature = pick_float(in, 0.0f, 0.0f, 2.0f);
    sp.top_k = pick_int(in, 40, 0, 100);
    sp.top_p = pick_float(in, 0.95f, 0.0f, 1.0f);
    sp.min_p = pick_float(in, 0.0f, 0.0f, 1.0f);
    sp.repetition_penalty = pick_float(in, 1.0f, 0.5f, 2.0f);
    sp.repeat_last_n = pick_int(in, 64, 0, 128);
    sp.seed = in.u64();
    sp.max_new_tokens = pick_int(in, 8, 0, 12);
    cb.stop_after = static_cast<int>(in.u8() % 13);
    if (cb.stop_after == 12) cb.stop_after = -1;
    if (cb.stop_after < 0 && (sp.max_new_tokens < 0 || sp.max_new_tokens > 12)) cb.stop_after = 12;
    const uint8_t n_stop = in.u8() % 4;
    for (uint8_t i = 0; i < n_stop; ++i) stop_ids.push_back(pick_int(in, 2, 0, g_vocab - 1));
    sp.n_stop_tokens = stop_ids.size();
    sp.stop_tokens = stop_ids.empty() && in.flag() ? nullptr : stop_ids.data();
    if (sp.stop_tokens == nullptr && in.flag()) sp.n_stop_tokens = 1;  // NULL with a count: invalid
    const uint8_t n_text = in.u8() % 4;
    for (uint8_t i = 0; i < n_text; ++i) {
        const uint8_t k = in.u8();
        stop_text.push_back(k > 247 ? std::string(300, 'x') : in.bytes(12));  // may be empty or too long: invalid
    }
    for (const auto &s : stop_text) stop_ptrs.push_back(s.c_str());
    if (!stop_ptrs.empty() && in.u8() > 239) stop_ptrs[0] = nullptr;
    sp.stop_strings = stop_ptrs.empty() ? nullptr : stop_ptrs.data();
    sp.n_stop_strings = stop_ptrs.size();
    return sp;
}

std::vector<int32_t> some_ids(Input &in, size_t max) {
    std::vector<int32_t> ids(in.u8() % (max + 1));
    for (auto &id : ids) {
        const uint8_t k = in.u8();
        id = k < 240 ? static_cast<int32_t>(in.u32() % static_cast<uint32_t>(g_vocab)) : in.i32();
    }
    return ids;
}

void run_ops(pangu_session *s, int32_t n_ctx, Input &in) {
    Callbacks cb;
    const bool use_abort = in.flag();
    if (use_abort) pangu_session_set_abort_callback(s, on_abort, &cb);
    for (int op = 0; op < 24 && !in.empty(); ++op) {
        cb.tokens = cb.polls = 0;
        cb.abort_after = in.u8() > 223 ? static_cast<int>(in.u8() % 8) : -1;
        switch (in.u8() % 12) {
            case 0:
            case 1: {
                const std::vector<int32_t> ids = some_ids(in, 40);
                std::vector<float> logits;
                if (in.flag()) logits.resize(ids.size() * static_cast<size_t>(g_vocab));
                check(pangu_session_eval(s, ids.data(), ids.size(), logits.empty() ? nullptr : logits.data()),
                      "pangu_session_eval",
                      {PANGU_ERR_CONTEXT_FULL, PANGU_ERR_INVALID_TOKEN, PANGU_ERR_CANCELLED, PANGU_ERR_INVALID_ARGUMENT});
                break;
            }
            case 2:
            case 3:
            case 4: {
                const std::vector<int32_t> ids = some_ids(in, 24);
                std::vector<int32_t> stop_ids;
                std::vector<std::string> stop_text;
                std::vector<const char *> stop_ptrs;
                pangu_sampling_params sp = sampling(in, stop_ids, stop_text, stop_ptrs, cb);
                pangu_generate_result r;
                std::memset(&r, 0, sizeof r);
                r.struct_size = in.u8() > 239 ? in.u8() : sizeof r;
                const pangu_status st = pangu_session_generate_tokens(
                    s, ids.data(), ids.size(), in.u8() > 239 ? nullptr : &sp, on_token, &cb, &r);
                check(st, "pangu_session_generate_tokens",
                      {PANGU_ERR_CONTEXT_FULL, PANGU_ERR_INVALID_TOKEN, PANGU_ERR_CANCELLED, PANGU_ERR_INVALID_ARGUMENT,
                       PANGU_ERR_STRUCT_SIZE, PANGU_ERR_NUMERIC, PANGU_ERR_INVALID_UTF8});
                if (st == PANGU_OK) FUZZ_CHECK(r.stop_reason != PANGU_STOP_NONE, "success without a stop reason");
                break;
            }
            case 5: {
                std::string prompt = in.bytes(48);
                prompt.erase(std::find(prompt.begin(), prompt.end(), '\0'), prompt.end());
                std::vector<int32_t> stop_ids;
                std::vector<std::string> stop_text;
                std::vector<const char *> stop_ptrs;
                pangu_sampling_params sp = sampling(in, stop_ids, stop_text, stop_ptrs, cb);
                check(pangu_session_generate(s, prompt.c_str(), &sp, on_token, &cb, nullptr), "pangu_session_generate",
                      {PANGU_ERR_CONTEXT_FULL, PANGU_ERR_INVALID_UTF8, PANGU_ERR_CANCELLED, PANGU_ERR_INVALID_ARGUMENT,
                       PANGU_ERR_STRUCT_SIZE, PANGU_ERR_NUMERIC});
                break;
            }
            case 6: {
                const size_t n = pangu_session_n_tokens(s);
                const size_t keep = in.flag() ? in.u32() : (n ? in.u32() % (n + 1) : 0);
                const pangu_status st = pangu_session_truncate(s, keep);
                check(st, "pangu_session_truncate", {PANGU_ERR_INVALID_ARGUMENT});
                FUZZ_CHECK((st == PANGU_OK) == (keep <= n), "truncate to %zu of %zu: %d", keep, n, (int)st);
                if (st == PANGU_OK) FUZZ_CHECK(pangu_session_n_tokens(s) == keep, "truncate kept the wrong count");
                break;
            }
            case 7:
                check(pangu_session_reset(s), "pangu_session_reset", {});
                FUZZ_CHECK(pangu_session_n_tokens(s) == 0, "reset left tokens");
                break;
            case 8: {
                const float *lg = nullptr;
                int32_t nv = 0;
                const pangu_status st = pangu_session_get_logits(s, &lg, in.flag() ? &nv : nullptr);
                check(st, "pangu_session_get_logits", {PANGU_ERR_INVALID_ARGUMENT, PANGU_ERR_CANCELLED});
                if (st == PANGU_OK) {
                    volatile float sink = lg[0] + lg[g_vocab - 1];
                    (void)sink;
                }
                break;
            }
            case 9: {
                const size_t cap = in.u8();
                std::vector<int32_t> ids(cap);
                size_t n = 0;
                const pangu_status st = pangu_session_get_tokens(s, cap ? ids.data() : nullptr, cap, &n);
                check(st, "pangu_session_get_tokens", {PANGU_ERR_BUFFER_TOO_SMALL});
                FUZZ_CHECK(n == pangu_session_n_tokens(s), "get_tokens count");
                pangu_session_stats stats;
                std::memset(&stats, 0, sizeof stats);
                stats.struct_size = in.u8() > 223 ? in.u8() : sizeof stats;
                check(pangu_session_get_stats(s, &stats), "pangu_session_get_stats", {PANGU_ERR_STRUCT_SIZE});
                break;
            }
            case 10: {
                const std::string text = in.bytes(64);
                const size_t cap = in.u8() % 80;
                std::vector<int32_t> ids(cap);
                size_t n = 0;
                check(pangu_tokenize(g_model, text.data(), text.size(), static_cast<int8_t>(in.u8()) % 3, in.u8(),
                                     cap ? ids.data() : nullptr, cap, &n),
                      "pangu_tokenize", {PANGU_ERR_BUFFER_TOO_SMALL, PANGU_ERR_INVALID_UTF8});
                const std::vector<int32_t> back = some_ids(in, 16);
                std::vector<char> buf(in.u8());
                size_t len = 0;
                check(pangu_detokenize(g_model, back.data(), back.size(), buf.empty() ? nullptr : buf.data(),
                                       buf.size(), &len),
                      "pangu_detokenize", {PANGU_ERR_BUFFER_TOO_SMALL, PANGU_ERR_INVALID_TOKEN});
                check(pangu_token_to_bytes(g_model, in.i32(), buf.empty() ? nullptr : buf.data(), buf.size(), &len),
                      "pangu_token_to_bytes", {PANGU_ERR_BUFFER_TOO_SMALL, PANGU_ERR_INVALID_TOKEN});
                break;
            }
            case 11: {
                static const char *const roles[] = {"system", "user", "assistant", "tool", "用户", "narrator", nullptr};
                std::string contents[3];
                pangu_chat_message msgs[3];
                const size_t n = in.u8() % 4;
                for (size_t i = 0; i < n; ++i) {
                    contents[i] = in.bytes(24);
                    contents[i].erase(std::find(contents[i].begin(), contents[i].end(), '\0'), contents[i].end());
                    msgs[i].role = roles[in.u8() % 7];
                    msgs[i].content = in.u8() > 239 ? nullptr : contents[i].c_str();
                }
                std::vector<char> buf(in.u8() * 2);
                size_t len = 0;
                for (pangu_model *m : {g_tiny, g_chat})
                    check(pangu_apply_chat_template(m, n ? msgs : nullptr, n, in.u8(),
                                                    buf.empty() ? nullptr : buf.data(), buf.size(), &len),
                          "pangu_apply_chat_template",
                          {PANGU_ERR_BUFFER_TOO_SMALL, PANGU_ERR_UNSUPPORTED, PANGU_ERR_INVALID_ARGUMENT,
                           PANGU_ERR_INVALID_UTF8});
                break;
            }
        }
        FUZZ_CHECK(pangu_session_n_tokens(s) <= static_cast<size_t>(n_ctx), "%zu tokens in a context of %d",
                   pangu_session_n_tokens(s), n_ctx);
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    if (pangu_model_load(PANGU_MODEL_DIR, nullptr, &g_tiny) != PANGU_OK ||
        pangu_model_load(PANGU_DRAFT_DIR, nullptr, &g_draft) != PANGU_OK ||
        pangu_model_load(PANGU_FUZZ_DATA_DIR "/tiny-chat", nullptr, &g_chat) != PANGU_OK) {
        std::fprintf(stderr, "fuzz_api: cannot load the models: %s\n", pangu_last_error());
        std::abort();
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Input in(data, size);
    const bool big = in.u8() % 4 == 3;
    g_model = big ? g_tiny : g_chat;
    g_vocab = vocab_of(g_model);
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    if (in.u8() > 247) p.struct_size = in.u32() % 512;
    p.n_ctx = pick_int(in, 0, 1, 512);
    p.n_batch = pick_int(in, 64, 1, 80);
    // Any valid thread count works the same; above 3 it only costs the fuzzer time.
    p.n_threads = pick_int(in, 1, 1, 3);
    if (p.n_threads > 3 && p.n_threads <= 256) p.n_threads = 1 + p.n_threads % 3;
    p.context_policy = pick_int(in, PANGU_CONTEXT_ERROR, 0, 1);
    p.n_keep = pick_int(in, 0, 0, 64);
    p.spec_mode = pick_int(in, PANGU_SPEC_PLD, 0, 3);
    p.spec_ngram = pick_int(in, 3, 1, 8);
    p.spec_draft_len = pick_int(in, 4, 1, 15);
    const uint8_t draft = in.u8();
    // The matching draft (pangu-tiny-draft for pangu-tiny, the tiny model itself for itself), none, the
    // target itself, or one with another vocabulary.
    pangu_model *other = big ? g_chat : g_tiny;
    p.draft_model = draft < 128 ? (big ? g_draft : g_chat) : draft < 192 ? nullptr : draft < 224 ? g_model : other;
    int32_t layers[8];
    if (in.u8() > 191) {
        p.n_self_draft_layers = pick_int(in, 2, 0, 8);
        for (int32_t &l : layers) l = pick_int(in, 0, -1, 7);
        p.self_draft_layers = layers;
    }
    p.kv_type = pick_int(in, PANGU_KV_F16, 0, 3);  // every cache type, and (pick_int's strays) unknown ones
    pangu_session_memory mem;
    std::memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    const pangu_status est = pangu_session_estimate(g_model, &p, &mem);
    check(est, "pangu_session_estimate",
          {PANGU_ERR_INVALID_ARGUMENT, PANGU_ERR_STRUCT_SIZE, PANGU_ERR_VOCAB_MISMATCH});

    // Caller arena: exact, short by some bytes, misaligned, or a size without a buffer.
    std::vector<uint8_t> arena;
    const uint8_t arena_kind = in.u8() % 8;
    if (est == PANGU_OK && arena_kind == 1) {
        const size_t shortfall = in.u8() < 128 ? 0 : in.u8();
        const size_t skew = in.u8() < 200 ? 0 : 1 + in.u8() % 63;
        arena.resize(mem.arena_bytes + mem.alignment + skew);
        uintptr_t a = reinterpret_cast<uintptr_t>(arena.data());
        a = (a + mem.alignment - 1) / mem.alignment * mem.alignment + skew;
        p.arena = reinterpret_cast<void *>(a);
        p.arena_size = mem.arena_bytes - (shortfall < mem.arena_bytes ? shortfall : 0);
    } else if (arena_kind == 2) {
        p.arena_size = in.u32();
    }
    pangu_session *s = nullptr;
    const pangu_status st = pangu_session_create(g_model, &p, &s);
    check(st, "pangu_session_create",
          {PANGU_ERR_INVALID_ARGUMENT, PANGU_ERR_STRUCT_SIZE, PANGU_ERR_VOCAB_MISMATCH, PANGU_ERR_BUFFER_TOO_SMALL});
    // Estimation and creation judge the parameters alike; only the arena can make them differ.
    if (!p.arena && !p.arena_size) FUZZ_CHECK(st == est, "estimate %d but create %d", (int)est, (int)st);
    if (st != PANGU_OK) {
        FUZZ_CHECK(s == nullptr, "failed creation returned a session");
        return 0;
    }
    pangu_session_stats stats;
    std::memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    FUZZ_CHECK(pangu_session_get_stats(s, &stats) == PANGU_OK && stats.arena_bytes == mem.arena_bytes,
               "the session does not use the estimated memory");
    run_ops(s, stats.n_ctx, in);
    pangu_session_free(s);
    return 0;
}
