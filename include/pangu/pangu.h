/*
 * libpangu_c -- run openPangu-Embedded language models from C.
 *
 * This header is the whole contract of the library. It is C99 and compiles as C++.
 *
 * Conventions that hold for every function unless its comment says otherwise:
 *
 *  - Handles are opaque. A `pangu_model` holds the read-only weights (memory-mapped) and the tokenizer;
 *    a `pangu_session` holds one conversation: its KV cache, its working memory and its sampler state.
 *  - Functions return a `pangu_status`. PANGU_OK (0) is success; every other value is an error whose
 *    fixed description is `pangu_status_string()` and whose detailed message (naming the file, tensor
 *    or argument at fault) is available from the handle (`pangu_model_last_error`,
 *    `pangu_session_last_error`) and, for every failed call, from `pangu_last_error()` on the calling thread.
 *  - Output parameters are written only on success, except where a comment says a required size is
 *    reported on PANGU_ERR_BUFFER_TOO_SMALL.
 *  - A NULL handle or a NULL required pointer returns PANGU_ERR_INVALID_ARGUMENT; it never crashes.
 *    `*_free(NULL)` is a no-op.
 *  - Parameter structs begin with `struct_size`. Fill them with their `*_init` function, which sets
 *    `struct_size` and every default, then change the fields you need. Passing NULL instead of a struct
 *    means "all defaults". A `struct_size` smaller than the first published version of the struct or
 *    larger than this library knows returns PANGU_ERR_STRUCT_SIZE. Fields are only ever appended.
 *  - Strings are UTF-8. Text passed in must be valid UTF-8 (PANGU_ERR_INVALID_UTF8 otherwise); text passed
 *    out always is.
 *  - No function calls exit() or abort(), and no C++ exception crosses this interface.
 *
 * Thread safety: a `pangu_model` is immutable after loading and may be used from any number of threads
 * at once (tokenizing, creating sessions). A `pangu_session` must be used by one thread at a time; distinct
 * sessions, even on the same model, run concurrently without locking each other. A model must outlive
 * every session created on it.
 */
#ifndef PANGU_PANGU_H
#define PANGU_PANGU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Version                                                                                          */
/* ------------------------------------------------------------------------------------------------ */

#define PANGU_VERSION_MAJOR 1
#define PANGU_VERSION_MINOR 2
#define PANGU_VERSION_PATCH 0
/* MAJOR*10000 + MINOR*100 + PATCH; the major is the ABI version carried in the SONAME. */
#define PANGU_VERSION_NUMBER (PANGU_VERSION_MAJOR * 10000 + PANGU_VERSION_MINOR * 100 + PANGU_VERSION_PATCH)
#define PANGU_VERSION_STRING "1.2.0"

#if defined(_WIN32)
#define PANGU_API
#elif defined(__GNUC__)
#define PANGU_API __attribute__((visibility("default")))
#else
#define PANGU_API
#endif

/* The version of the library actually linked, as PANGU_VERSION_NUMBER. Compare with the macro to detect
 * a header/library mismatch. Thread-safe, never fails. */
PANGU_API unsigned pangu_version_number(void);
/* The same as a static string such as "1.0.0". Never NULL, never to be freed. */
PANGU_API const char *pangu_version_string(void);

/* ------------------------------------------------------------------------------------------------ */
/* Status codes (append-only: values are never renumbered or reused)                               */
/* ------------------------------------------------------------------------------------------------ */

typedef enum pangu_status {
    PANGU_OK = 0,
    PANGU_ERR_INVALID_ARGUMENT = 1,  /* NULL pointer, out-of-range value or contradictory parameters */
    PANGU_ERR_STRUCT_SIZE = 2,       /* a parameter struct's struct_size is not one this library knows */
    PANGU_ERR_OUT_OF_MEMORY = 3,     /* an allocation failed */
    PANGU_ERR_FILE_NOT_FOUND = 4,    /* a required file (config.json, weights, tokenizer.model) is missing */
    PANGU_ERR_IO = 5,                /* a file could not be opened, read or memory-mapped */
    PANGU_ERR_CONFIG = 6,            /* config.json (or tokenizer_config.json) is malformed or inconsistent */
    PANGU_ERR_SAFETENSORS_HEADER = 7,/* safetensors header length or JSON is invalid */
    PANGU_ERR_TENSOR_BOUNDS = 8,     /* tensor data offsets outside the file, overlapping or size mismatch */
    PANGU_ERR_DTYPE = 9,             /* a tensor has an unknown or unsupported dtype */
    PANGU_ERR_SHAPE = 10,            /* a tensor's shape contradicts the configuration */
    PANGU_ERR_MISSING_TENSOR = 11,   /* a required tensor is absent */
    PANGU_ERR_TOKENIZER = 12,        /* tokenizer.model cannot be loaded or does not fit the model */
    PANGU_ERR_INVALID_UTF8 = 13,     /* input text is not valid UTF-8 */
    PANGU_ERR_CONTEXT_FULL = 14,     /* the tokens do not fit in the session's context */
    PANGU_ERR_BUFFER_TOO_SMALL = 15, /* a caller buffer is too small; the required size is reported */
    PANGU_ERR_CANCELLED = 16,        /* the callback asked to stop; the session remains usable */
    PANGU_ERR_UNSUPPORTED = 17,      /* the request is valid but this build or model cannot do it */
    PANGU_ERR_INVALID_TOKEN = 18,    /* a token id is outside the vocabulary */
    PANGU_ERR_NUMERIC = 19,          /* NaN or Inf appeared in the computation */
    PANGU_ERR_INTERNAL = 20,         /* a bug in libpangu_c; please report it with the message */
    PANGU_ERR_VOCAB_MISMATCH = 21    /* a draft model's vocabulary differs from the target's */
} pangu_status;

/* A fixed English description of a status, e.g. "buffer too small". Static storage; unknown values give
 * "unknown status". Thread-safe, never NULL. */
PANGU_API const char *pangu_status_string(pangu_status status);

/* The detailed message of the most recent failed call made by the calling thread (thread-local storage),
 * or "" if none failed yet. Valid until the next failing call on this thread. Never NULL. */
PANGU_API const char *pangu_last_error(void);

/* ------------------------------------------------------------------------------------------------ */
/* Models                                                                                           */
/* ------------------------------------------------------------------------------------------------ */

typedef struct pangu_model pangu_model;

typedef struct pangu_model_params {
    size_t struct_size;   /* sizeof(pangu_model_params) */
    /* Pre-fault the weight mapping (MAP_POPULATE) so that the first tokens do not page in. Default 0. */
    int32_t prefault;
    /* Lock the weights in RAM (mlock) for devices that must not page; failure to lock is an error
     * (PANGU_ERR_IO with the reason) rather than a silent downgrade. Default 0. */
    int32_t lock_memory;
    /* Precision of the activations that enter matrix multiplications (products always accumulate in
     * fp32): PANGU_PRECISION_AUTO (default: fp32 for floating-point checkpoints, and what a quantized
     * checkpoint's quantization_config names: bf16 for W8A16, int8 for W8A8 and W4A8), PANGU_PRECISION_F32,
     * PANGU_PRECISION_BF16, or (since 1.2) PANGU_PRECISION_INT8 / PANGU_PRECISION_INT16: the inputs of
     * integer weights quantized per row to int8 / int16 with a dynamic scale and multiplied in integers (a
     * checkpoint without integer weights is PANGU_ERR_UNSUPPORTED; W4A8 checkpoints take int8 or int16). */
    int32_t activation_precision;
    /* The device that runs the model: "cpu" (default), or "npu-sim", an emulated Ascend 310P-class NPU
     * (fp16 numerics, a device memory budget, fractal weight layout, a latency model). NULL means the
     * PANGU_BACKEND environment variable if set, else "cpu". An unknown name is PANGU_ERR_UNSUPPORTED. */
    const char *backend;
    /* npu-sim: device memory budget in bytes (0 = 24 GiB, an Atlas 300I Pro). A model or session that does not
     * fit fails cleanly at load or creation with PANGU_ERR_OUT_OF_MEMORY. */
    size_t device_memory;
    /* npu-sim: a JSON device profile for the latency model (AI cores, TOPS, TFLOPS, GB/s, launch overhead);
     * NULL = the built-in 310P profile. */
    const char *device_profile;
} pangu_model_params;

/* activation_precision values */
#define PANGU_PRECISION_AUTO 0
#define PANGU_PRECISION_F32 1
#define PANGU_PRECISION_BF16 2
#define PANGU_PRECISION_INT8 3  /* since 1.2 */
/* Since 1.2: the inputs of integer weights as int16 per row with a dynamic scale, multiplied by the integer
 * kernels as two int8 digits (16-bit activations at the cost of int8 ones on CPUs with integer dot products;
 * the cpu backend only). */
#define PANGU_PRECISION_INT16 4

/* Fill `params` with defaults. NULL is a no-op. */
PANGU_API void pangu_model_params_init(pangu_model_params *params);

/* Load a model from a directory in the Hugging Face layout openPangu ships in: config.json,
 * model.safetensors or shards listed by model.safetensors.index.json, tokenizer.model and (optionally)
 * tokenizer_config.json. Weights are memory-mapped read-only, not copied, and are validated (header,
 * offsets, dtypes, shapes against config.json) before use.
 *
 * `params` may be NULL for defaults. On success `*out` receives a model the caller owns and releases with
 * pangu_model_free(); on failure `*out` is set to NULL and pangu_last_error() names the file and tensor.
 * Thread-safe (distinct calls are independent). */
PANGU_API pangu_status pangu_model_load(const char *dir, const pangu_model_params *params, pangu_model **out);

/* Release a model. Every session created on it must have been freed first. NULL is a no-op. */
PANGU_API void pangu_model_free(pangu_model *model);

/* The detailed message of the last failed call on this model ("" if none). Owned by the model, valid until
 * the next failing call on it. Never NULL (a NULL model gives ""). */
PANGU_API const char *pangu_model_last_error(const pangu_model *model);

/* Facts about a loaded model, for sizing buffers and showing to users. */
typedef struct pangu_model_info {
    size_t struct_size;        /* sizeof(pangu_model_info), set by the caller */
    int32_t n_vocab;
    int32_t n_layer;
    int32_t n_embd;            /* hidden size */
    int32_t n_head;
    int32_t n_head_kv;
    int32_t head_dim;
    int32_t n_ctx_train;       /* max_position_embeddings */
    int32_t bos_token;         /* -1 if none */
    int32_t eos_token;         /* -1 if none */
    int32_t add_bos;           /* tokenizer_config.json add_bos_token */
    int32_t has_chat_template; /* 1 if the vocabulary holds the openPangu chat tokens */
    int64_t n_params;          /* number of weight elements */
    int64_t weight_bytes;      /* bytes of weight data mapped */
    int32_t n_quantized;       /* weight matrices stored as integers (int8 per channel, or int4 per group) */
    int32_t activation_precision; /* PANGU_PRECISION_F32, _BF16 or (1.2) _INT8, _INT16, as resolved at load */
    /* Since 1.1. */
    int32_t chat_end_token;        /* the token that ends a chat message ([unused10]); -1 without chat tokens */
    int32_t has_generation_config; /* 1 if the checkpoint ships generation_config.json (see
                                      pangu_model_get_sampling_defaults) */
} pangu_model_info;

/* Fill `info` (whose struct_size the caller sets). Thread-safe. */
PANGU_API pangu_status pangu_model_get_info(const pangu_model *model, pangu_model_info *info);

/* The name of the device backend the model runs on ("cpu", "npu-sim"). Static storage; "" for NULL. */
PANGU_API const char *pangu_model_backend(const pangu_model *model);

/* ------------------------------------------------------------------------------------------------ */
/* Tokenizer                                                                                        */
/* ------------------------------------------------------------------------------------------------ */

/* Tokenize `len` bytes of UTF-8 `text` (it need not be NUL-terminated; len 0 is valid).
 * `add_bos`: prepend the BOS token: 1 yes, 0 no, -1 as tokenizer_config.json says.
 * `parse_special`: 1 to turn spelled-out special tokens in the text (e.g. "[unused9]") into their ids,
 *   0 to treat all text as plain text (safe for untrusted input).
 * Writes at most `capacity` ids to `ids` (which may be NULL when capacity is 0) and stores the number of
 * tokens in `*n_tokens`. If capacity is too small, returns PANGU_ERR_BUFFER_TOO_SMALL with `*n_tokens` set
 * to the required count, so a caller can size the buffer with a first call of capacity 0.
 * Tokenizing allocates temporary memory internally (it is not for the allocation-free generation loop).
 * Thread-safe. */
PANGU_API pangu_status pangu_tokenize(const pangu_model *model, const char *text, size_t len, int32_t add_bos,
                                      int32_t parse_special, int32_t *ids, size_t capacity, size_t *n_tokens);

/* Decode `n` token ids to UTF-8 text, exactly as the tokenizer's decoder would (the leading space of the
 * first piece dropped, byte-fallback pieces joined into characters, control tokens rendered as nothing).
 * Writes at most `capacity` bytes plus a terminating NUL to `buf` and stores the text length (without the
 * NUL) in `*len`. If capacity < length + 1, returns PANGU_ERR_BUFFER_TOO_SMALL with `*len` = required length.
 * Invalid byte sequences (possible only for arbitrary id sequences) become U+FFFD. Thread-safe. */
PANGU_API pangu_status pangu_detokenize(const pangu_model *model, const int32_t *ids, size_t n, char *buf,
                                        size_t capacity, size_t *len);

/* The raw bytes one token stands for (the space marker rendered as a space, a byte-fallback token as its
 * single byte, which may be part of a multi-byte character). Same buffer rules as pangu_detokenize(), except
 * that the bytes may not be valid UTF-8 on their own. Thread-safe. */
PANGU_API pangu_status pangu_token_to_bytes(const pangu_model *model, int32_t token, char *buf, size_t capacity,
                                            size_t *len);

/* One chat message for pangu_apply_chat_template(). */
typedef struct pangu_chat_message {
    const char *role;    /* "system", "user", "assistant", "tool", "function", or the Chinese role names */
    const char *content; /* UTF-8 */
} pangu_chat_message;

/* Render messages with the openPangu chat template: each message as "[unused9]role：content[unused10]",
 * with the roles 系统/用户/助手/工具/方法 (system, user, assistant, tool, function; "function" since 1.1), an
 * empty system message first when there is none, and with `add_generation_prompt` the opening "[unused9]助手：". Tokenize the result with parse_special = 1.
 * Buffer rules as pangu_detokenize(). Returns PANGU_ERR_UNSUPPORTED if the model's vocabulary does not hold
 * the chat tokens, PANGU_ERR_INVALID_ARGUMENT for an unknown role. Thread-safe. */
PANGU_API pangu_status pangu_apply_chat_template(const pangu_model *model, const pangu_chat_message *messages,
                                                 size_t n_messages, int32_t add_generation_prompt, char *buf,
                                                 size_t capacity, size_t *len);

/* The tokens that end a reply under the chat template, for pangu_sampling_params.stop_tokens: the end of a
 * message ([unused10]) and the start of the next one ([unused9]). Writes up to `capacity` ids to `ids` and
 * the number there are (2) to `*n`; PANGU_ERR_BUFFER_TOO_SMALL, with `*n` set, when capacity is smaller.
 * PANGU_ERR_UNSUPPORTED if the model's vocabulary has no chat tokens. Thread-safe. Since 1.1. */
PANGU_API pangu_status pangu_chat_stop_tokens(const pangu_model *model, int32_t *ids, size_t capacity, size_t *n);

/* ------------------------------------------------------------------------------------------------ */
/* Sessions                                                                                         */
/* ------------------------------------------------------------------------------------------------ */

typedef struct pangu_session pangu_session;

typedef struct pangu_session_params {
    size_t struct_size;  /* sizeof(pangu_session_params) */
    /* Context length in tokens (KV cache size). Default min(2048, the model's max_position_embeddings);
     * at most max_position_embeddings. Memory is sized from it up front. */
    int32_t n_ctx;
    /* Most tokens evaluated in one forward pass (prefill chunk). Default 64. */
    int32_t n_batch;
    /* Compute threads for this session, including the calling thread. Default 1. */
    int32_t n_threads;
    /* What generation does when the context is full: PANGU_CONTEXT_ERROR (default) stops with
     * PANGU_ERR_CONTEXT_FULL; PANGU_CONTEXT_SLIDE keeps the first n_keep tokens and the most recent half of
     * the rest, re-evaluates them (inside the same memory) and goes on. */
    int32_t context_policy;
    /* PANGU_CONTEXT_SLIDE: tokens at the start of the context that are always kept (e.g. a system prompt).
     * Must be less than n_ctx / 2. Default 0. */
    int32_t n_keep;
    /* Caller-provided memory for the whole session, or NULL to let the library allocate it. Size and
     * alignment come from pangu_session_estimate() with the same parameters. The caller keeps ownership and
     * must keep it valid, and untouched, until pangu_session_free(). Default NULL. */
    void *arena;
    size_t arena_size;
    /* Speculative decoding (see PANGU_SPEC_*). Default PANGU_SPEC_PLD: prompt-lookup drafting, which never
     * changes the output (greedy: token for token; sampling: the same tokens for the same seed) and backs off
     * by itself when drafts do not pay, so that it costs nothing on text without repetition. */
    int32_t spec_mode;
    /* PLD: longest n-gram looked up (tries spec_ngram, then shorter down to 1). Default 3, range 1..8. */
    int32_t spec_ngram;
    /* Most tokens drafted per step (K); each step verifies up to K+1 positions in one batched forward, which
     * n_batch bounds like any forward pass: at most n_batch - 1 tokens are drafted (none with n_batch 1).
     * Default 4, range 1..15. */
    int32_t spec_draft_len;
    /* PANGU_SPEC_DRAFT: a smaller model with the same vocabulary that drafts autoregressively (its KV cache
     * lives in this session's memory). It must outlive the session. */
    const pangu_model *draft_model;
    /* PANGU_SPEC_SELF: the target's layers that make up the draft, ascending; NULL for the default (every
     * 4th layer from 0: 0, 4, 8, ...), always followed by the final norm and the head. */
    const int32_t *self_draft_layers;
    int32_t n_self_draft_layers;
    /* 1.0 ends here, followed on LP64 by 4 bytes of padding that a 1.0 caller passes in struct_size (88) but may
     * not have zeroed: a field appended later starts at offset 88 or beyond (docs/abi.md). */
    int32_t reserved_v1_pad_; /* ignored: 1.0's padding, made explicit so that kv_type starts at 88 */
    /* Since 1.2 (fill the struct with pangu_session_params_init_sized to reach it). The element type of the KV
     * cache, one of PANGU_KV_*: default PANGU_KV_F16. A backend whose device holds its cache in one type only
     * (npu-sim: fp16) uses that one whatever this says; pangu_session_estimate() reports what is used. */
    int32_t kv_type;
} pangu_session_params;

/* kv_type values (since 1.2) */
#define PANGU_KV_F32 0  /* 4 bytes an element: the reference */
#define PANGU_KV_F16 1  /* 2 bytes an element (IEEE half): the default */
#define PANGU_KV_BF16 2 /* 2 bytes an element (bfloat16) */
#define PANGU_KV_Q8 3   /* 1 byte an element: int8 with one fp32 scale per position and KV head */

/* spec_mode values */
#define PANGU_SPEC_OFF 0   /* plain decoding, one forward per token */
#define PANGU_SPEC_PLD 1   /* prompt-lookup (n-gram) drafting from the session's own tokens */
#define PANGU_SPEC_DRAFT 2 /* a draft model (draft_model) */
#define PANGU_SPEC_SELF 3  /* self-draft with a subset of the target's layers */

/* context_policy values */
#define PANGU_CONTEXT_ERROR 0
#define PANGU_CONTEXT_SLIDE 1

/* Fill `params` with defaults. NULL is a no-op.
 * It fills the struct as 1.0 published it (struct_size 88 on LP64) and nothing beyond, since a program built
 * against 1.0 passes a struct of that size: the fields appended since (kv_type) keep their defaults in every call
 * made with that struct_size, whatever the caller writes there. To set them, use
 * pangu_session_params_init_sized. */
PANGU_API void pangu_session_params_init(pangu_session_params *params);

/* Since 1.2. Fill the first `size` bytes of `params` with defaults and set struct_size to `size`: pass
 * sizeof *params (the struct as the header the caller was built with knows it). The library writes exactly
 * `size` bytes; the caller owns the struct. PANGU_ERR_INVALID_ARGUMENT if params is NULL,
 * PANGU_ERR_STRUCT_SIZE (nothing written) if size is smaller than 1.0's struct or larger than this library's.
 *     pangu_session_params p;
 *     pangu_session_params_init_sized(&p, sizeof p);
 *     p.kv_type = PANGU_KV_Q8; */
PANGU_API pangu_status pangu_session_params_init_sized(pangu_session_params *params, size_t size);

/* The memory a session needs, from pangu_session_estimate(). */
typedef struct pangu_session_memory {
    size_t struct_size;      /* sizeof(pangu_session_memory), set by the caller */
    size_t arena_bytes;      /* exactly what pangu_session_create() uses: pass at least this as arena_size */
    size_t alignment;        /* required alignment of the arena's address */
    size_t kv_cache_bytes;   /* of which: keys and values of n_ctx positions of every layer */
    size_t activation_bytes; /* of which: per-layer activations for n_batch tokens */
    size_t logits_bytes;     /* of which: logits rows */
    size_t other_bytes;      /* of which: session state, RoPE table, workspaces, sampler, tokens, text */
    /* Since 1.1. Device memory the session allocates from its device besides the arena: 0 on backends whose
     * memory the host may use (cpu), where everything is in the arena; on a discrete device (npu-sim) the
     * device's buffers (activations, KV cache, workspaces, RoPE table), which the arena then does not hold.
     * The "of which" figures above count both. */
    size_t device_bytes;
} pangu_session_memory;

/* Compute, without allocating anything, the memory pangu_session_create() will need for `model` and
 * `params` (NULL = defaults; the arena fields are ignored): in the style of ZSTD_estimateCCtxSize. The same
 * model and parameters always give the same figures. Thread-safe. */
PANGU_API pangu_status pangu_session_estimate(const pangu_model *model, const pangu_session_params *params,
                                              pangu_session_memory *out);

/* Create a session on `model`. All of the session's memory (session state, KV cache, activations, logits,
 * sampler and detokenizer buffers) is one block: the caller's `params->arena` if given (at least
 * pangu_session_estimate().arena_bytes, aligned as it says; PANGU_ERR_BUFFER_TOO_SMALL or
 * PANGU_ERR_INVALID_ARGUMENT otherwise, and nothing is written to the arena), else one allocation.
 * Apart from that block, creation allocates only the worker threads (n_threads - 1) and their bookkeeping.
 * Afterwards, evaluation and generation allocate nothing (pangu_session_generate() from text tokenizes the
 * prompt first, which allocates; pangu_session_generate_tokens() does not).
 * `params` may be NULL for defaults. On success `*out` receives a session the caller owns and frees with
 * pangu_session_free(); on failure `*out` is NULL. Thread-safe with respect to the model. */
PANGU_API pangu_status pangu_session_create(pangu_model *model, const pangu_session_params *params,
                                            pangu_session **out);

/* Release a session and its memory. NULL is a no-op. */
PANGU_API void pangu_session_free(pangu_session *session);

/* The detailed message of the last failed call on this session ("" if none). Owned by the session. */
PANGU_API const char *pangu_session_last_error(const pangu_session *session);

/* Forget the context: the session is as if just created (its sampler seed included), except that it keeps
 * what it measured of the cost of speculative decoding on this machine (which changes its speed, never its
 * output). */
PANGU_API pangu_status pangu_session_reset(pangu_session *session);

/* Number of tokens in the session's context (prompt and generated). 0 for NULL. */
PANGU_API size_t pangu_session_n_tokens(const pangu_session *session);

/* Copy the context's tokens to `ids` (capacity entries) and store their count in `*n`; buffer too small
 * reports the required count. */
PANGU_API pangu_status pangu_session_get_tokens(const pangu_session *session, int32_t *ids, size_t capacity,
                                                size_t *n);

/* Drop the context back to its first `n_keep` tokens (n_keep <= n_tokens), e.g. to regenerate a reply or to
 * roll back rejected draft tokens. The KV cache entries of the kept tokens are reused; nothing is copied or
 * run. The next evaluation starts right after them; if the logits are asked for first
 * (pangu_session_get_logits), the last kept token is run again to make them current. */
PANGU_API pangu_status pangu_session_truncate(pangu_session *session, size_t n_keep);

/* Append `n` tokens to the context and run the model over them, in chunks of n_batch.
 * If `logits` is not NULL it receives n * n_vocab floats: the next-token logits after every one of the n
 * tokens, row by row (useful for scoring and perplexity). Either way, the logits after the last token are
 * kept for pangu_session_get_logits(). Returns PANGU_ERR_CONTEXT_FULL (and changes nothing) if the tokens do
 * not fit, PANGU_ERR_INVALID_TOKEN for an id outside the vocabulary. Allocates nothing. */
PANGU_API pangu_status pangu_session_eval(pangu_session *session, const int32_t *ids, size_t n, float *logits);

/* A pointer to the n_vocab next-token logits after the context's last token, owned by the session and valid
 * until the next call that changes the session. If generation left its final token in the context without
 * running it, or a truncate made the logits stale, this call runs that token first. `n_vocab` may be NULL. PANGU_ERR_INVALID_ARGUMENT if the context is
 * empty. */
PANGU_API pangu_status pangu_session_get_logits(pangu_session *session, const float **logits, int32_t *n_vocab);

/* Called between prefill chunks and between generated tokens; return non-zero to stop the running
 * evaluation or generation with PANGU_ERR_CANCELLED. Unlike the token callback it can interrupt a long
 * prompt. It may be called from the thread running the session only. */
typedef int (*pangu_abort_callback)(void *user_data);

/* Install (or, with NULL, remove) the session's abort callback. A NULL session is a no-op. The callback is
 * also the way to cancel from another thread: have it read a flag that thread sets. */
PANGU_API void pangu_session_set_abort_callback(pangu_session *session, pangu_abort_callback callback,
                                                void *user_data);

/* Counters and memory figures of a session. */
typedef struct pangu_session_stats {
    size_t struct_size;          /* sizeof(pangu_session_stats), set by the caller */
    size_t arena_bytes;          /* the session's block (caller's or allocated) */
    size_t arena_high_water;     /* furthest byte of the block written so far (grows with the context) */
    size_t kv_cache_bytes;       /* capacity of the KV cache */
    int32_t caller_arena;        /* 1 if the block is the caller's */
    int32_t n_ctx;
    int32_t n_tokens;            /* tokens in the context now */
    int32_t n_threads;
    int64_t n_forward;           /* forward passes run */
    int64_t n_evaluated;         /* token positions run through the model (prompt, generated, re-evaluated) */
    int64_t n_context_shifts;    /* PANGU_CONTEXT_SLIDE shifts */
    /* speculative decoding, counted over all generations */
    int64_t n_generated;         /* tokens generated */
    double generate_ms;          /* wall time spent generating them */
    int64_t n_verify;            /* verification forwards (a step that drafted k >= 1 tokens) */
    int64_t n_drafted;           /* tokens drafted */
    int64_t n_accepted;          /* drafted tokens accepted */
    int64_t accepted_hist[16];   /* accepted_hist[a]: verification steps that accepted a drafts */
    /* device accounting (the npu-sim backend fills these; the cpu backend reports zeros) */
    double device_est_ms;        /* estimated device time of this session's operators (latency model) */
    int64_t host_to_device_bytes;
    int64_t device_to_host_bytes;
    int64_t fp16_overflows;      /* values that overflowed fp16 and were saturated to +-65504 */
} pangu_session_stats;

/* Fill `stats` (whose struct_size the caller sets). Counters run from session creation (reset does not
 * clear them). Same thread rules as the session. */
PANGU_API pangu_status pangu_session_get_stats(const pangu_session *session, pangu_session_stats *stats);

/* ------------------------------------------------------------------------------------------------ */
/* Generation                                                                                       */
/* ------------------------------------------------------------------------------------------------ */

typedef struct pangu_sampling_params {
    size_t struct_size;        /* sizeof(pangu_sampling_params) */
    float temperature;         /* 0 = greedy (argmax). Default 0. */
    int32_t top_k;             /* keep the k most likely tokens; 0 = all. Default 40. */
    float top_p;               /* nucleus: keep the smallest set whose probability reaches p; 1 = off. Default 0.95 */
    float min_p;               /* drop tokens with probability below min_p * p(max); 0 = off. Default 0. */
    float repetition_penalty;  /* > 1 discourages tokens seen in the last repeat_last_n; 1 = off. Default 1. */
    int32_t repeat_last_n;     /* window for the penalty; default 64; 0 = whole context */
    uint64_t seed;             /* random seed for sampling; the same seed gives the same text. Default 0. */
    int32_t max_new_tokens;    /* stop after this many generated tokens; default 256 */
    const int32_t *stop_tokens;/* extra stop token ids (the model's EOS always stops); may be NULL */
    size_t n_stop_tokens;
    const char *const *stop_strings; /* stop when the text ends with one of these; it is not emitted */
    size_t n_stop_strings;
} pangu_sampling_params;

/* Fill `params` with defaults. NULL is a no-op. */
PANGU_API void pangu_sampling_params_init(pangu_sampling_params *params);

/* The model's own sampling defaults: pangu_sampling_params_init's, overridden by what the checkpoint's
 * generation_config.json says (do_sample false: temperature 0; temperature, top_k, top_p, repetition_penalty,
 * max_new_tokens). The caller sets params->struct_size (pangu_sampling_params_init does); the library writes no
 * further than it. End-of-sequence ids need no parameter: generation stops at every one the checkpoint names
 * (config.json and generation_config.json, a number or a list each, and the tokenizer's). Thread-safe. Since 1.1. */
PANGU_API pangu_status pangu_model_get_sampling_defaults(const pangu_model *model, pangu_sampling_params *params);

/* Why generation ended, in pangu_generate_result.stop_reason. */
typedef enum pangu_stop_reason {
    PANGU_STOP_NONE = 0,       /* generation failed before producing a result */
    PANGU_STOP_EOS = 1,        /* the model produced its end-of-sequence token */
    PANGU_STOP_TOKEN = 2,      /* one of stop_tokens */
    PANGU_STOP_STRING = 3,     /* one of stop_strings */
    PANGU_STOP_MAX_TOKENS = 4, /* max_new_tokens reached */
    PANGU_STOP_CONTEXT_FULL = 5, /* the context filled up */
    PANGU_STOP_CANCELLED = 6   /* the callback returned non-zero */
} pangu_stop_reason;

/* Called once per generated token, in order. `piece` holds the text the token completes (`piece_len` bytes,
 * not NUL-terminated, always whole UTF-8 characters; it may be empty when the token is the first byte of a
 * multi-byte character or when text is held back because it could start a stop string). Return 0 to go
 * on, non-zero to stop: generation then ends with PANGU_ERR_CANCELLED and the session stays usable, with
 * every token delivered so far in its context. The callback must not call into the same session. */
typedef int (*pangu_token_callback)(void *user_data, int32_t token, const char *piece, size_t piece_len);

typedef struct pangu_generate_result {
    size_t struct_size;       /* sizeof(pangu_generate_result), set by the caller */
    int32_t n_prompt_tokens;  /* tokens evaluated from the prompt */
    int32_t n_generated;      /* tokens generated (the stop token, when one, is counted and kept) */
    int32_t stop_reason;      /* a pangu_stop_reason */
    double prompt_ms;         /* wall time of prompt evaluation */
    double generate_ms;       /* wall time from the first generated token to the last */
} pangu_generate_result;

/* Append the prompt text to the context (tokenized with parse_special = 1, BOS added only when the
 * context is empty and the tokenizer asks for it) and generate a continuation, streaming it to `callback`
 * (may be NULL). `params` may be NULL for greedy defaults; `result` may be NULL. The generated tokens stay
 * in the context, so the next call continues the conversation and reuses its KV cache.
 * Prompt tokenization may allocate; evaluation and generation do not. */
PANGU_API pangu_status pangu_session_generate(pangu_session *session, const char *prompt,
                                              const pangu_sampling_params *params, pangu_token_callback callback,
                                              void *user_data, pangu_generate_result *result);

/* The same from token ids (appended as given, no BOS added). n may be 0 to continue from the context.
 * Allocates nothing. */
PANGU_API pangu_status pangu_session_generate_tokens(pangu_session *session, const int32_t *ids, size_t n,
                                                     const pangu_sampling_params *params,
                                                     pangu_token_callback callback, void *user_data,
                                                     pangu_generate_result *result);

#ifdef __cplusplus
}
#endif

#endif /* PANGU_PANGU_H */
