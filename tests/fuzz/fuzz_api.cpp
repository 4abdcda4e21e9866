// Fuzzes the public C API: the input is a small program. It picks a target model and fills session parameters
// (any value, or a plausible one: every speculative mode, context policy, cache type), estimates and creates a
// session (in the library's memory or a caller arena of the input's choosing), then runs up to 32 calls on it in
// any order: eval, generate from ids or text with any sampling parameters, stop tokens and strings, cancellation
// from the token or the abort callback, truncate, reset, logits, tokens, stats, the tokenizer and chat calls, the
// model's information, a model load with any parameters, and every session and model call on a NULL handle.
//
// What the header promises is checked on every call: a status the call's contract allows, with a message when it
// fails; output parameters untouched on failure (except the sizes BUFFER_TOO_SMALL reports); streamed pieces in
// UTF-8. And after every call, what the context must hold: this harness keeps its own copy of the context's
// tokens (what eval appended, what generation streamed, what truncate kept), which pangu_session_get_tokens and
// pangu_session_n_tokens must match; a session stays usable after PANGU_ERR_CANCELLED; and a greedy generation
// with speculative decoding streams the same tokens as a session without it given the same context.
//
// The models are loaded once (LLVMFuzzerInitialize): a target and a draft that pangu-gen-model writes into the
// build tree (CMakeLists.txt: two layers of width 16 and one of width 8, vocabulary 416 over the tiny chat
// model's 400-piece tokenizer, so that ids without a piece exist), the same target on npu-sim and with bf16
// activations, and the tiny chat model of data/ (another vocabulary and shape, 64 positions). A generated token
// costs tens of microseconds, so an input runs dozens of calls and the fuzzer ~1000 inputs a second.
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

using fuzz::Input;

struct Target {
    pangu_model *model;
    int32_t vocab;
};
enum { kApi, kApiNpu, kApiBf16, kChat, kTargets };
Target g_targets[kTargets];
pangu_model *g_draft;  // api-target's draft: same vocabulary, one layer
const Target *g_t;     // the current input's target

int32_t vocab_of(pangu_model *m) {
    pangu_model_info info;
    std::memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    pangu_model_get_info(m, &info);
    return info.n_vocab;
}

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

void check(pangu_status st, const char *call, std::initializer_list<pangu_status> allowed) {
    if (fuzz::verbose())
        std::fprintf(stderr, "%s: %s %s\n", call, pangu_status_string(st), st ? pangu_last_error() : "");
    fuzz::check_failure_contract(st, call);
    FUZZ_CHECK(st == PANGU_OK || fuzz::one_of(st, allowed), "%s: unexpected status %d: %s", call, (int)st,
               pangu_last_error());
}

// Output parameters are pre-filled with this byte; a failing call must leave it there.
constexpr uint8_t kPoison = 0xA5;
template <class T>
void poison(T *p, size_t n = 1) {
    if (n) std::memset(static_cast<void *>(p), kPoison, sizeof(T) * n);
}
bool poisoned(const void *p, size_t bytes) {
    const uint8_t *b = static_cast<const uint8_t *>(p);
    for (size_t i = 0; i < bytes; ++i)
        if (b[i] != kPoison) return false;
    return true;
}
template <class T>
bool untouched(const T &v) {
    return poisoned(&v, sizeof v);
}
// A struct whose struct_size the caller set: on failure, nothing after that field may be written.
template <class T>
bool untouched_after_size(const T &v) {
    return poisoned(reinterpret_cast<const uint8_t *>(&v) + sizeof(size_t), sizeof v - sizeof(size_t));
}

// ---- callbacks: what was streamed, and cancellation at a chosen token or poll ----

struct Callbacks {
    int stop_after = -1;              // token callback: cancel at this count (-1: never)
    int polls = 0, abort_after = -1;  // abort callback: cancel after this many polls (-1: never)
    std::vector<int32_t> tokens;
    std::string text;
    void start(int stop, int abort) {
        stop_after = stop;
        abort_after = abort;
        polls = 0;
        tokens.clear();
        text.clear();
    }
};

int on_token(void *user, int32_t token, const char *piece, size_t len) {
    FUZZ_CHECK(token >= 0 && token < g_t->vocab, "callback got token %d", token);
    FUZZ_CHECK(pangu::utf8_valid(std::string_view(piece, len)), "streamed piece is not UTF-8");
    Callbacks *c = static_cast<Callbacks *>(user);
    c->tokens.push_back(token);
    c->text.append(piece, len);
    return c->stop_after >= 0 && static_cast<int>(c->tokens.size()) >= c->stop_after;
}

int on_abort(void *user) {
    Callbacks *c = static_cast<Callbacks *>(user);
    return c->abort_after >= 0 && ++c->polls > c->abort_after;
}

// ---- the program's state: the session, its parameters, and the context as the calls so far imply it ----

struct Program {
    Input &in;
    pangu_session *s;
    pangu_session_params p;
    int32_t n_ctx;
    Callbacks cb;
    std::vector<int32_t> ctx;      // the context the calls imply
    pangu_session *ref = nullptr;  // without speculative decoding, for the greedy comparison
};

std::vector<int32_t> session_tokens(const pangu_session *s) {
    std::vector<int32_t> ids(pangu_session_n_tokens(s) + 1);
    size_t n = 0;
    check(pangu_session_get_tokens(s, ids.data(), ids.size(), &n), "pangu_session_get_tokens", {});
    ids.resize(n);
    return ids;
}

pangu_session_stats stats_of(const pangu_session *s) {
    pangu_session_stats st;
    std::memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    check(pangu_session_get_stats(s, &st), "pangu_session_get_stats", {});
    return st;
}

int64_t context_shifts(const pangu_session *s) { return stats_of(s).n_context_shifts; }

// After every call: the session holds the context the calls imply (resynchronised after a context slide, which
// drops tokens the harness does not predict), within n_ctx, and n_tokens, get_tokens and the stats agree.
void check_context(Program &pr, bool slid) {
    const std::vector<int32_t> now = session_tokens(pr.s);
    FUZZ_CHECK(now.size() == pangu_session_n_tokens(pr.s), "get_tokens %zu, n_tokens %zu", now.size(),
               pangu_session_n_tokens(pr.s));
    FUZZ_CHECK(now.size() <= static_cast<size_t>(pr.n_ctx), "%zu tokens in a context of %d", now.size(), pr.n_ctx);
    const pangu_session_stats st = stats_of(pr.s);
    FUZZ_CHECK(static_cast<size_t>(st.n_tokens) == now.size(), "stats.n_tokens %d, get_tokens %zu", st.n_tokens,
               now.size());
    if (!slid)
        FUZZ_CHECK(now == pr.ctx, "the context holds %zu tokens, the calls imply %zu", now.size(), pr.ctx.size());
    pr.ctx = now;
}

// A call that appended `ids` (all, some or none of them, by its status) and then streamed `streamed`: the
// context is the old one, a prefix of ids, then the streamed tokens. OK means every id.
void expect_appended(Program &pr, const std::vector<int32_t> &old, const std::vector<int32_t> &ids,
                     const std::vector<int32_t> &streamed, pangu_status st) {
    const std::vector<int32_t> now = session_tokens(pr.s);
    FUZZ_CHECK(now.size() >= old.size() + streamed.size() && std::equal(old.begin(), old.end(), now.begin()),
               "status %d: the context lost tokens (%zu before, %zu after)", (int)st, old.size(), now.size());
    const size_t from_ids = now.size() - old.size() - streamed.size();
    FUZZ_CHECK(from_ids <= ids.size() && std::equal(ids.begin(), ids.begin() + from_ids, now.begin() + old.size()),
               "status %d: the context does not continue with the prompt", (int)st);
    FUZZ_CHECK(std::equal(streamed.begin(), streamed.end(), now.end() - streamed.size()),
               "status %d: the context does not end with the streamed tokens", (int)st);
    if (st == PANGU_OK) FUZZ_CHECK(from_ids == ids.size(), "success but %zu of %zu ids kept", from_ids, ids.size());
    if (!fuzz::one_of(st, {PANGU_OK, PANGU_ERR_CANCELLED, PANGU_ERR_CONTEXT_FULL, PANGU_ERR_NUMERIC}))
        FUZZ_CHECK(now == old, "status %d changed the context", (int)st);
    pr.ctx = now;
}

// After PANGU_ERR_CANCELLED the session must go on: its logits can be had (running a pending token).
void check_usable(Program &pr) {
    pr.cb.abort_after = -1;
    const float *lg = nullptr;
    const pangu_status st = pangu_session_get_logits(pr.s, &lg, nullptr);
    if (pr.ctx.empty()) FUZZ_CHECK(st == PANGU_ERR_INVALID_ARGUMENT, "logits of an empty context: %d", (int)st);
    else FUZZ_CHECK(st == PANGU_OK, "after CANCELLED: %s %s", pangu_status_string(st), pangu_last_error());
    volatile float sink = st == PANGU_OK ? lg[g_t->vocab - 1] : 0.0f;  // readable (AddressSanitizer)
    (void)sink;
}

// ---- sampling parameters ----

struct Sampling {
    pangu_sampling_params sp;
    bool null_params = false;
    std::vector<int32_t> stop_ids;
    std::vector<std::string> stop_text;
    std::vector<const char *> stop_ptrs;
    bool greedy() const { return null_params || sp.temperature == 0.0f; }
    const pangu_sampling_params *get() const { return null_params ? nullptr : &sp; }
};

// The generation is bounded by max_new_tokens or, when that is large (or the parameters are NULL: 256), by the
// token callback, so that one input never runs for long. Returns the token callback's cancel count.
int sampling(Input &in, Sampling &S) {
    pangu_sampling_params &sp = S.sp;
    pangu_sampling_params_init(&sp);
    if (in.u8() > 239) sp.struct_size = in.u32() % 256;
    sp.temperature = pick_float(in, 0.0f, 0.0f, 2.0f);
    sp.top_k = pick_int(in, 40, 0, 100);
    sp.top_p = pick_float(in, 0.95f, 0.0f, 1.0f);
    sp.min_p = pick_float(in, 0.0f, 0.0f, 1.0f);
    sp.repetition_penalty = pick_float(in, 1.0f, 0.5f, 2.0f);
    sp.repeat_last_n = pick_int(in, 64, 0, 128);
    sp.seed = in.u64();
    sp.max_new_tokens = pick_int(in, 8, 0, 16);
    int stop_after = static_cast<int>(in.u8() % 17);
    if (stop_after == 16) stop_after = -1;
    const uint8_t n_stop = in.u8() % 4;
    for (uint8_t i = 0; i < n_stop; ++i) S.stop_ids.push_back(pick_int(in, 2, 0, g_t->vocab - 1));
    sp.n_stop_tokens = S.stop_ids.size();
    sp.stop_tokens = S.stop_ids.empty() && in.flag() ? nullptr : S.stop_ids.data();
    if (sp.stop_tokens == nullptr && in.flag()) sp.n_stop_tokens = 1;  // NULL with a count: invalid
    const uint8_t n_text = in.u8() % 4;
    for (uint8_t i = 0; i < n_text; ++i) {
        const uint8_t k = in.u8();
        S.stop_text.push_back(k > 247 ? std::string(300, 'x') : in.bytes(12));  // may be empty or too long: invalid
    }
    for (const auto &s : S.stop_text) S.stop_ptrs.push_back(s.c_str());
    if (!S.stop_ptrs.empty() && in.u8() > 239) S.stop_ptrs[0] = nullptr;
    sp.stop_strings = S.stop_ptrs.empty() ? nullptr : S.stop_ptrs.data();
    sp.n_stop_strings = S.stop_ptrs.size();
    S.null_params = in.u8() > 239;
    const int32_t max_new = S.null_params ? 256 : sp.max_new_tokens;
    if (stop_after < 0 && (max_new < 0 || max_new > 16)) stop_after = 16;
    return stop_after;
}

std::vector<int32_t> some_ids(Input &in, size_t max) {
    std::vector<int32_t> ids(in.u8() % (max + 1));
    for (auto &id : ids) {
        const uint8_t k = in.u8();
        id = k < 240 ? static_cast<int32_t>(in.u32() % static_cast<uint32_t>(g_t->vocab)) : in.i32();
    }
    return ids;
}

// ---- the calls ----

void op_eval(Program &pr) {
    const std::vector<int32_t> ids = some_ids(pr.in, 40);
    std::vector<float> logits;
    if (pr.in.flag()) logits.resize(ids.size() * static_cast<size_t>(g_t->vocab));
    const std::vector<int32_t> old = pr.ctx;
    if (fuzz::verbose()) std::fprintf(stderr, "eval of %zu ids, context %zu\n", ids.size(), old.size());
    const pangu_status st = pangu_session_eval(pr.s, ids.data(), ids.size(), logits.empty() ? nullptr : logits.data());
    check(st, "pangu_session_eval",
          {PANGU_ERR_CONTEXT_FULL, PANGU_ERR_INVALID_TOKEN, PANGU_ERR_CANCELLED, PANGU_ERR_INVALID_ARGUMENT});
    expect_appended(pr, old, ids, {}, st);
    if (st == PANGU_ERR_CONTEXT_FULL) FUZZ_CHECK(pr.ctx == old, "eval: CONTEXT_FULL changed the context");
    if (st == PANGU_ERR_CANCELLED) check_usable(pr);
}

// The same generation on a session without speculative decoding, from the same context: greedy output must not
// depend on drafting. Only where it is defined: no context slide (its re-evaluation differs by design), and no
// abort callback armed (it is polled a different number of times).
void compare_without_drafts(Program &pr, const std::vector<int32_t> &old, const std::vector<int32_t> &ids,
                            const Sampling &S, size_t result_size, pangu_status st, int stop_after) {
    if (!pr.ref) {
        pangu_session_params q = pr.p;
        q.spec_mode = PANGU_SPEC_OFF;
        q.draft_model = nullptr;
        q.arena = nullptr;
        q.arena_size = 0;
        q.n_ctx = pr.n_ctx;
        check(pangu_session_create(g_t->model, &q, &pr.ref), "pangu_session_create (reference)", {});
    }
    check(pangu_session_reset(pr.ref), "pangu_session_reset (reference)", {});
    if (!old.empty())
        check(pangu_session_eval(pr.ref, old.data(), old.size(), nullptr), "pangu_session_eval (reference)", {});
    Callbacks rc;
    rc.start(stop_after, -1);
    pangu_generate_result r;
    std::memset(&r, 0, sizeof r);
    r.struct_size = result_size;
    const pangu_status rst = pangu_session_generate_tokens(pr.ref, ids.data(), ids.size(), S.get(), on_token, &rc, &r);
    FUZZ_CHECK(rst == st, "spec_mode %d: status %d, without drafts %d", pr.p.spec_mode, (int)st, (int)rst);
    FUZZ_CHECK(rc.tokens == pr.cb.tokens && rc.text == pr.cb.text,
               "spec_mode %d: greedy output differs from the output without drafts (%zu and %zu tokens)",
               pr.p.spec_mode, pr.cb.tokens.size(), rc.tokens.size());
}

void op_generate_tokens(Program &pr) {
    Input &in = pr.in;
    const std::vector<int32_t> ids = some_ids(in, 24);
    Sampling S;
    const int stop_after = sampling(in, S);
    pr.cb.start(stop_after, pr.cb.abort_after);
    pangu_generate_result r;
    poison(&r);
    const size_t result_size = in.u8() > 239 ? in.u8() : sizeof r;
    r.struct_size = result_size;
    const std::vector<int32_t> old = pr.ctx;
    const int64_t shifts = context_shifts(pr.s);
    const pangu_status st = pangu_session_generate_tokens(pr.s, ids.data(), ids.size(), S.get(), on_token, &pr.cb, &r);
    check(st, "pangu_session_generate_tokens",
          {PANGU_ERR_CONTEXT_FULL, PANGU_ERR_INVALID_TOKEN, PANGU_ERR_CANCELLED, PANGU_ERR_INVALID_ARGUMENT,
           PANGU_ERR_STRUCT_SIZE, PANGU_ERR_NUMERIC, PANGU_ERR_INVALID_UTF8});
    if (st == PANGU_OK) {
        FUZZ_CHECK(r.stop_reason > PANGU_STOP_NONE && r.stop_reason <= PANGU_STOP_CONTEXT_FULL,
                   "success with stop reason %d", r.stop_reason);
        FUZZ_CHECK(static_cast<size_t>(r.n_generated) == pr.cb.tokens.size(), "n_generated %d, %zu streamed",
                   r.n_generated, pr.cb.tokens.size());
    }
    if (st == PANGU_ERR_STRUCT_SIZE || st == PANGU_ERR_INVALID_ARGUMENT)
        FUZZ_CHECK(untouched_after_size(r), "result written on failure");
    const bool slid = context_shifts(pr.s) != shifts;
    if (slid) check_context(pr, true);
    else expect_appended(pr, old, ids, pr.cb.tokens, st);
    if (!slid && S.greedy() && pr.p.spec_mode != PANGU_SPEC_OFF && pr.cb.abort_after < 0)
        compare_without_drafts(pr, old, ids, S, result_size, st, stop_after);
    if (st == PANGU_ERR_CANCELLED) check_usable(pr);
}

void op_generate_text(Program &pr) {
    std::string prompt = pr.in.bytes(48);
    prompt.erase(std::find(prompt.begin(), prompt.end(), '\0'), prompt.end());
    Sampling S;
    pr.cb.start(sampling(pr.in, S), pr.cb.abort_after);
    const std::vector<int32_t> old = pr.ctx;
    const int64_t shifts = context_shifts(pr.s);
    const pangu_status st = pangu_session_generate(pr.s, prompt.c_str(), S.get(), on_token, &pr.cb, nullptr);
    check(st, "pangu_session_generate",
          {PANGU_ERR_CONTEXT_FULL, PANGU_ERR_INVALID_UTF8, PANGU_ERR_CANCELLED, PANGU_ERR_INVALID_ARGUMENT,
           PANGU_ERR_STRUCT_SIZE, PANGU_ERR_NUMERIC});
    // The prompt's tokens are the tokenizer's business: the context keeps what it had and ends with the stream.
    const bool slid = context_shifts(pr.s) != shifts;
    check_context(pr, true);
    if (!slid) {
        FUZZ_CHECK(
            pr.ctx.size() >= old.size() + pr.cb.tokens.size() && std::equal(old.begin(), old.end(), pr.ctx.begin()),
            "generate from text lost tokens");
        FUZZ_CHECK(std::equal(pr.cb.tokens.begin(), pr.cb.tokens.end(), pr.ctx.end() - pr.cb.tokens.size()),
                   "the context does not end with the streamed tokens");
    }
    if (st == PANGU_ERR_CANCELLED) check_usable(pr);
}

void op_truncate(Program &pr) {
    const size_t n = pr.ctx.size();
    const size_t keep = pr.in.flag() ? pr.in.u32() : (n ? pr.in.u32() % (n + 1) : 0);
    const pangu_status st = pangu_session_truncate(pr.s, keep);
    check(st, "pangu_session_truncate", {PANGU_ERR_INVALID_ARGUMENT});
    FUZZ_CHECK((st == PANGU_OK) == (keep <= n), "truncate to %zu of %zu: %d", keep, n, (int)st);
    if (st == PANGU_OK) pr.ctx.resize(keep);
}

void op_get_logits(Program &pr) {
    const float *lg;
    int32_t nv;
    poison(&lg);
    poison(&nv);
    const bool want_nv = pr.in.flag();
    const pangu_status st = pangu_session_get_logits(pr.s, &lg, want_nv ? &nv : nullptr);
    check(st, "pangu_session_get_logits", {PANGU_ERR_INVALID_ARGUMENT, PANGU_ERR_CANCELLED});
    FUZZ_CHECK((st == PANGU_ERR_INVALID_ARGUMENT) == pr.ctx.empty(), "get_logits: %d with %zu tokens", (int)st,
               pr.ctx.size());
    if (st == PANGU_OK) {
        volatile float sink = lg[0] + lg[g_t->vocab - 1];
        (void)sink;
        if (want_nv) FUZZ_CHECK(nv == g_t->vocab, "n_vocab %d", nv);
    } else {
        FUZZ_CHECK(untouched(lg) && untouched(nv), "get_logits wrote its outputs on failure");
    }
    if (st == PANGU_ERR_CANCELLED) check_usable(pr);
}

void op_get_tokens(Program &pr) {
    const size_t cap = pr.in.u8() % 64;
    std::vector<int32_t> ids(cap);
    poison(ids.data(), cap);
    size_t n;
    poison(&n);
    const pangu_status st = pangu_session_get_tokens(pr.s, cap ? ids.data() : nullptr, cap, &n);
    check(st, "pangu_session_get_tokens", {PANGU_ERR_BUFFER_TOO_SMALL});
    FUZZ_CHECK(n == pr.ctx.size(), "get_tokens count %zu of %zu", n, pr.ctx.size());
    if (st == PANGU_OK) FUZZ_CHECK(std::equal(pr.ctx.begin(), pr.ctx.end(), ids.begin()), "get_tokens ids");
    else FUZZ_CHECK(poisoned(ids.data(), cap * sizeof(int32_t)), "get_tokens wrote ids into a buffer too small");
    pangu_session_stats stats;
    poison(&stats);
    stats.struct_size = pr.in.u8() > 223 ? pr.in.u8() : sizeof stats;
    const pangu_status sst = pangu_session_get_stats(pr.s, &stats);
    check(sst, "pangu_session_get_stats", {PANGU_ERR_STRUCT_SIZE});
    if (sst != PANGU_OK) FUZZ_CHECK(untouched_after_size(stats), "get_stats wrote on failure");
}

// Buffer rules of the text calls: OK or BUFFER_TOO_SMALL reports the length; any other failure writes nothing.
void check_text_out(pangu_status st, const std::vector<char> &buf, size_t len, const char *call) {
    if (st == PANGU_OK) {
        FUZZ_CHECK(len < buf.size() && buf[len] == '\0', "%s: %zu bytes, no NUL in a buffer of %zu", call, len,
                   buf.size());
    } else if (st == PANGU_ERR_BUFFER_TOO_SMALL) {
        FUZZ_CHECK(len + 1 > buf.size() && poisoned(buf.data(), buf.size()), "%s: too small for %zu in %zu, or written",
                   call, len, buf.size());
    } else {
        FUZZ_CHECK(untouched(len) && poisoned(buf.data(), buf.size()), "%s wrote its outputs on failure", call);
    }
}

void op_tokenizer(Program &pr) {
    Input &in = pr.in;
    const std::string text = in.bytes(64);
    const size_t cap = in.u8() % 80;
    std::vector<int32_t> ids(cap);
    poison(ids.data(), cap);
    size_t n;
    poison(&n);
    const pangu_status st = pangu_tokenize(g_t->model, text.data(), text.size(), static_cast<int8_t>(in.u8()) % 3,
                                           in.u8(), cap ? ids.data() : nullptr, cap, &n);
    check(st, "pangu_tokenize", {PANGU_ERR_BUFFER_TOO_SMALL, PANGU_ERR_INVALID_UTF8});
    if (st == PANGU_ERR_BUFFER_TOO_SMALL) FUZZ_CHECK(n > cap && poisoned(ids.data(), cap * 4), "tokenize: too small");
    if (st == PANGU_ERR_INVALID_UTF8)
        FUZZ_CHECK(untouched(n) && poisoned(ids.data(), cap * 4), "tokenize wrote on failure");
    const std::vector<int32_t> back = some_ids(in, 16);
    std::vector<char> buf(in.u8());
    poison(buf.data(), buf.size());
    size_t len;
    poison(&len);
    const pangu_status dst =
        pangu_detokenize(g_t->model, back.data(), back.size(), buf.empty() ? nullptr : buf.data(), buf.size(), &len);
    check(dst, "pangu_detokenize", {PANGU_ERR_BUFFER_TOO_SMALL, PANGU_ERR_INVALID_TOKEN});
    check_text_out(dst, buf, len, "pangu_detokenize");
    if (dst == PANGU_OK)
        FUZZ_CHECK(pangu::utf8_valid(std::string_view(buf.data(), len)), "detokenized text is not UTF-8");
    poison(buf.data(), buf.size());
    poison(&len);
    const pangu_status tst =
        pangu_token_to_bytes(g_t->model, in.i32(), buf.empty() ? nullptr : buf.data(), buf.size(), &len);
    check(tst, "pangu_token_to_bytes", {PANGU_ERR_BUFFER_TOO_SMALL, PANGU_ERR_INVALID_TOKEN});
    check_text_out(tst, buf, len, "pangu_token_to_bytes");
}

void op_chat(Program &pr) {
    Input &in = pr.in;
    static const char *const roles[] = {"system", "user", "assistant", "tool", "function", "用户", "narrator", nullptr};
    std::string contents[3];
    pangu_chat_message msgs[3];
    const size_t n = in.u8() % 4;
    for (size_t i = 0; i < n; ++i) {
        contents[i] = in.bytes(24);
        contents[i].erase(std::find(contents[i].begin(), contents[i].end(), '\0'), contents[i].end());
        msgs[i].role = roles[in.u8() % 8];
        msgs[i].content = in.u8() > 239 ? nullptr : contents[i].c_str();
    }
    std::vector<char> buf(in.u8() * 2);
    poison(buf.data(), buf.size());
    size_t len;
    poison(&len);
    const pangu_status st = pangu_apply_chat_template(g_t->model, n ? msgs : nullptr, n, in.u8(),
                                                      buf.empty() ? nullptr : buf.data(), buf.size(), &len);
    check(st, "pangu_apply_chat_template",
          {PANGU_ERR_BUFFER_TOO_SMALL, PANGU_ERR_UNSUPPORTED, PANGU_ERR_INVALID_ARGUMENT, PANGU_ERR_INVALID_UTF8});
    check_text_out(st, buf, len, "pangu_apply_chat_template");
    int32_t stop[2];
    poison(stop, 2);
    size_t ns;
    poison(&ns);
    const size_t cap = in.u8() % 3;
    const pangu_status cst = pangu_chat_stop_tokens(g_t->model, cap ? stop : nullptr, cap, &ns);
    check(cst, "pangu_chat_stop_tokens",
          {PANGU_ERR_BUFFER_TOO_SMALL, PANGU_ERR_UNSUPPORTED, PANGU_ERR_INVALID_ARGUMENT});
    if (cst == PANGU_OK || cst == PANGU_ERR_BUFFER_TOO_SMALL) FUZZ_CHECK(ns == 2, "chat_stop_tokens: %zu", ns);
    if (cst == PANGU_ERR_BUFFER_TOO_SMALL || cst == PANGU_ERR_UNSUPPORTED)
        FUZZ_CHECK(poisoned(stop, sizeof stop), "stop ids written");
    if (cst == PANGU_ERR_UNSUPPORTED) FUZZ_CHECK(untouched(ns), "chat_stop_tokens wrote n on failure");
}

void op_model_info(Program &pr) {
    Input &in = pr.in;
    pangu_model_info info;
    poison(&info);
    info.struct_size = in.u8() > 223 ? in.u8() : sizeof info;
    const pangu_status st = pangu_model_get_info(g_t->model, &info);
    check(st, "pangu_model_get_info", {PANGU_ERR_STRUCT_SIZE});
    if (st == PANGU_OK)
        FUZZ_CHECK(info.struct_size < offsetof(pangu_model_info, n_layer) || info.n_vocab == g_t->vocab, "n_vocab");
    else FUZZ_CHECK(untouched_after_size(info), "get_info wrote on failure");
    pangu_sampling_params sp;
    poison(&sp);
    sp.struct_size = in.u8() > 223 ? in.u8() : sizeof sp;
    const pangu_status dst = pangu_model_get_sampling_defaults(g_t->model, &sp);
    check(dst, "pangu_model_get_sampling_defaults", {PANGU_ERR_STRUCT_SIZE});
    if (dst != PANGU_OK) FUZZ_CHECK(untouched_after_size(sp), "sampling defaults written on failure");
    FUZZ_CHECK(pangu_model_backend(g_t->model)[0] != '\0', "no backend name");
    FUZZ_CHECK(pangu_status_string(static_cast<pangu_status>(in.i32())) != nullptr, "status string NULL");
    (void)pangu_model_last_error(g_t->model);
    (void)pangu_session_last_error(pr.s);
}

// Every call on a NULL handle or a NULL required pointer: INVALID_ARGUMENT (or nothing, for the void ones), and
// the outputs untouched.
void op_null(Program &pr) {
    int32_t ids[4];
    poison(ids, 4);
    size_t n;
    poison(&n);
    char buf[8];
    poison(buf, 8);
    const float *lg;
    poison(&lg);
    pangu_session_stats stats;
    poison(&stats);
    stats.struct_size = sizeof stats;
    pangu_model_info info;
    poison(&info);
    info.struct_size = sizeof info;
    pangu_session_params p;
    pangu_session_params_init(&p);
    pangu_session_memory mem;
    poison(&mem);
    mem.struct_size = sizeof mem;
    int dummy = 0;  // what *out points at before create/load, which must set it to NULL on failure
    pangu_session *out = reinterpret_cast<pangu_session *>(&dummy);
    pangu_model *mout = reinterpret_cast<pangu_model *>(&dummy);
    const int32_t tok = 3;
    pangu_status st = PANGU_OK;
    const char *call = "";
    switch (pr.in.u8() % 16) {
        case 0: st = pangu_session_eval(nullptr, &tok, 1, nullptr), call = "eval(NULL)"; break;
        case 1: st = pangu_session_eval(pr.s, nullptr, 1, nullptr), call = "eval(ids NULL)"; break;
        case 2:
            st = pangu_session_generate(pr.s, nullptr, nullptr, nullptr, nullptr, nullptr),
            call = "generate(prompt NULL)";
            break;
        case 3:
            st = pangu_session_generate_tokens(nullptr, &tok, 1, nullptr, nullptr, nullptr, nullptr),
            call = "generate_tokens(NULL)";
            break;
        case 4: st = pangu_session_get_tokens(nullptr, ids, 4, &n), call = "get_tokens(NULL)"; break;
        case 5: st = pangu_session_get_logits(nullptr, &lg, nullptr), call = "get_logits(NULL)"; break;
        case 6: st = pangu_session_get_stats(nullptr, &stats), call = "get_stats(NULL)"; break;
        case 7: st = pangu_session_truncate(nullptr, 0), call = "truncate(NULL)"; break;
        case 8: st = pangu_session_reset(nullptr), call = "reset(NULL)"; break;
        case 9: st = pangu_tokenize(nullptr, "a", 1, 0, 0, ids, 4, &n), call = "tokenize(NULL)"; break;
        case 10: st = pangu_detokenize(nullptr, &tok, 1, buf, 8, &n), call = "detokenize(NULL)"; break;
        case 11: st = pangu_model_get_info(nullptr, &info), call = "get_info(NULL)"; break;
        case 12: st = pangu_session_estimate(nullptr, &p, &mem), call = "estimate(NULL)"; break;
        case 13:
            st = pangu_session_create(nullptr, &p, &out), call = "create(NULL)";
            FUZZ_CHECK(out == nullptr, "create(NULL) left *out");
            break;
        case 14:
            st = pangu_model_load(nullptr, nullptr, &mout), call = "load(NULL)";
            FUZZ_CHECK(mout == nullptr, "load(NULL) left *out");
            break;
        default:
            pangu_session_free(nullptr);
            pangu_model_free(nullptr);
            pangu_session_set_abort_callback(nullptr, on_abort, nullptr);
            FUZZ_CHECK(pangu_session_n_tokens(nullptr) == 0 && pangu_session_last_error(nullptr) != nullptr &&
                           pangu_model_last_error(nullptr) != nullptr && pangu_model_backend(nullptr) != nullptr,
                       "NULL handles");
            return;
    }
    check(st, call, {PANGU_ERR_INVALID_ARGUMENT});
    FUZZ_CHECK(st == PANGU_ERR_INVALID_ARGUMENT, "%s: %d", call, (int)st);
    FUZZ_CHECK(poisoned(ids, sizeof ids) && poisoned(buf, 8) && untouched(lg) && untouched_after_size(stats) &&
                   untouched_after_size(info) && untouched_after_size(mem) && untouched(n),
               "%s wrote its outputs", call);
}

// A model load with any parameters (backend names, precisions, device memory budgets), of the draft's directory:
// it loads or fails with a loader status, and a loaded one is freed. One input in a few: loading costs ~1 ms.
void op_load(Program &pr) {
    Input &in = pr.in;
    pangu_model_params mp;
    pangu_model_params_init(&mp);
    if (in.u8() > 239) mp.struct_size = in.u32() % 128;
    static const char *const backends[] = {nullptr, "cpu", "npu-sim", "gpu", ""};
    mp.backend = backends[in.u8() % 5];
    mp.activation_precision = pick_int(in, PANGU_PRECISION_AUTO, 0, 5);
    mp.prefault = in.u8() % 2;
    mp.device_memory = in.u8() > 200 ? in.u32() : 0;
    pangu_model *m = reinterpret_cast<pangu_model *>(&mp);
    const pangu_status st = pangu_model_load(PANGU_FUZZ_MODELS_DIR "/api-draft", &mp, &m);
    check(st, "pangu_model_load",
          {PANGU_ERR_STRUCT_SIZE, PANGU_ERR_UNSUPPORTED, PANGU_ERR_OUT_OF_MEMORY, PANGU_ERR_INVALID_ARGUMENT});
    FUZZ_CHECK((st == PANGU_OK) == (m != nullptr), "load: status %d, model %p", (int)st, (void *)m);
    pangu_model_free(m);
}

void run_ops(Program &pr) {
    Input &in = pr.in;
    if (in.flag()) pangu_session_set_abort_callback(pr.s, on_abort, &pr.cb);
    for (int op = 0; op < 32 && !in.empty(); ++op) {
        pr.cb.start(-1, in.u8() > 223 ? static_cast<int>(in.u8() % 8) : -1);
        const uint8_t k = in.u8() % 16;
        bool check_after = true;
        switch (k) {
            case 0:
            case 1: op_eval(pr); break;
            case 2:
            case 3:
            case 4: op_generate_tokens(pr); break;
            case 5: op_generate_text(pr); break;
            case 6: op_truncate(pr); break;
            case 7:
                check(pangu_session_reset(pr.s), "pangu_session_reset", {});
                pr.ctx.clear();
                break;
            case 8: op_get_logits(pr); break;
            case 9: op_get_tokens(pr); break;
            case 10: op_tokenizer(pr); break;
            case 11: op_chat(pr); break;
            case 12: op_model_info(pr); break;
            case 13: op_null(pr); break;
            case 14:  // the abort callback removed or installed again
                pangu_session_set_abort_callback(pr.s, in.flag() ? on_abort : nullptr, &pr.cb);
                check_after = false;
                break;
            default:
                if (in.u8() > 191) op_load(pr);
                check_after = false;
        }
        if (check_after) check_context(pr, false);
    }
}

// ---- the session ----

pangu_session_params session_params(Input &in, int32_t *layers) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    if (in.u8() > 247) p.struct_size = in.u32() % 512;
    p.n_ctx = pick_int(in, 0, 1, 256);
    p.n_batch = pick_int(in, 64, 1, 80);
    // Any valid thread count works the same; above 3 it only costs the fuzzer time.
    p.n_threads = pick_int(in, 1, 1, 3);
    if (p.n_threads > 3 && p.n_threads <= 256) p.n_threads = 1 + p.n_threads % 3;
    p.context_policy = pick_int(in, PANGU_CONTEXT_ERROR, 0, 1);
    p.n_keep = pick_int(in, 0, 0, 64);
    p.spec_mode = pick_int(in, PANGU_SPEC_PLD, 0, 3);
    p.spec_ngram = pick_int(in, 3, 1, 8);
    p.spec_draft_len = pick_int(in, 4, 1, 15);
    // The matching draft (api-draft for the api targets, the chat model itself for itself), none, the target
    // itself (every draft accepted), or one with another vocabulary.
    const uint8_t draft = in.u8();
    const bool chat = g_t == &g_targets[kChat];
    pangu_model *match = chat ? g_t->model : g_draft, *other = chat ? g_draft : g_targets[kChat].model;
    p.draft_model = draft < 128 ? match : draft < 192 ? nullptr : draft < 224 ? g_t->model : other;
    if (in.u8() > 191) {
        p.n_self_draft_layers = pick_int(in, 1, 0, 3);
        for (int i = 0; i < 4; ++i) layers[i] = pick_int(in, i, -1, 2);
        p.self_draft_layers = layers;
    }
    p.kv_type = pick_int(in, PANGU_KV_F16, 0, 3);  // every cache type, and (pick_int's strays) unknown ones
    return p;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    pangu_model_params npu, bf16;
    pangu_model_params_init(&npu);
    npu.backend = "npu-sim";
    pangu_model_params_init(&bf16);
    bf16.backend = "cpu";
    bf16.activation_precision = PANGU_PRECISION_BF16;
    const char *api = PANGU_FUZZ_MODELS_DIR "/api-target";
    if (pangu_model_load(api, nullptr, &g_targets[kApi].model) != PANGU_OK ||
        pangu_model_load(api, &npu, &g_targets[kApiNpu].model) != PANGU_OK ||
        pangu_model_load(api, &bf16, &g_targets[kApiBf16].model) != PANGU_OK ||
        pangu_model_load(PANGU_FUZZ_DATA_DIR "/tiny-chat", nullptr, &g_targets[kChat].model) != PANGU_OK ||
        pangu_model_load(PANGU_FUZZ_MODELS_DIR "/api-draft", nullptr, &g_draft) != PANGU_OK) {
        std::fprintf(stderr, "fuzz_api: cannot load the models: %s\n", pangu_last_error());
        std::abort();
    }
    for (Target &t : g_targets) t.vocab = vocab_of(t.model);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Input in(data, size);
    g_t = &g_targets[in.u8() % kTargets];
    int32_t layers[4];
    pangu_session_params p = session_params(in, layers);
    if (fuzz::verbose())
        std::fprintf(stderr,
                     "target %d: n_ctx %d n_batch %d n_threads %d policy %d n_keep %d spec %d ngram %d K %d "
                     "draft %s self-draft %d kv_type %d struct_size %zu\n",
                     (int)(g_t - g_targets), p.n_ctx, p.n_batch, p.n_threads, p.context_policy, p.n_keep, p.spec_mode,
                     p.spec_ngram, p.spec_draft_len,
                     !p.draft_model                ? "none"
                     : p.draft_model == g_draft    ? "api-draft"
                     : p.draft_model == g_t->model ? "self"
                                                   : "chat",
                     p.n_self_draft_layers, p.kv_type, p.struct_size);
    pangu_session_memory mem;
    poison(&mem);
    mem.struct_size = sizeof mem;
    const pangu_status est = pangu_session_estimate(g_t->model, &p, &mem);
    check(est, "pangu_session_estimate",
          {PANGU_ERR_INVALID_ARGUMENT, PANGU_ERR_STRUCT_SIZE, PANGU_ERR_VOCAB_MISMATCH, PANGU_ERR_UNSUPPORTED,
           PANGU_ERR_OUT_OF_MEMORY});
    if (est != PANGU_OK) FUZZ_CHECK(untouched_after_size(mem), "estimate wrote on failure");

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
    Program pr{in, nullptr, p, 0, {}, {}, nullptr};
    const pangu_status st = pangu_session_create(g_t->model, &p, &pr.s);
    check(st, "pangu_session_create",
          {PANGU_ERR_INVALID_ARGUMENT, PANGU_ERR_STRUCT_SIZE, PANGU_ERR_VOCAB_MISMATCH, PANGU_ERR_BUFFER_TOO_SMALL,
           PANGU_ERR_UNSUPPORTED, PANGU_ERR_OUT_OF_MEMORY});
    // Estimation and creation judge the parameters alike; only the arena can make them differ.
    if (!p.arena && !p.arena_size) FUZZ_CHECK(st == est, "estimate %d but create %d", (int)est, (int)st);
    if (st != PANGU_OK) {
        FUZZ_CHECK(pr.s == nullptr, "failed creation returned a session");
        return 0;
    }
    pangu_session_stats stats;
    std::memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    FUZZ_CHECK(pangu_session_get_stats(pr.s, &stats) == PANGU_OK && stats.arena_bytes == mem.arena_bytes,
               "the session does not use the estimated memory");
    pr.n_ctx = stats.n_ctx;
    run_ops(pr);
    pangu_session_free(pr.ref);
    pangu_session_free(pr.s);
    return 0;
}
