// The memory plan of a session: every region of its block as an offset, computed from the model and the
// parameters alone, before anything is allocated (what pangu_session_estimate reports).
#pragma once

#include <cstddef>
#include <cstdint>

#include "model/model.h"
#include "pangu/pangu.h"

namespace pangu {

// Every region of a session's memory, as offsets, computed from the model and parameters alone. Two regions:
// the host region (the session object, tokens, sampler, text, the logits the sampler reads, speculation's
// buffers) is in the caller's arena or a host allocation; the device region (RoPE table, positions and ids the
// operators read, activations, workspaces, the KV cache) is what the device's operators touch. On a device
// whose buffers the host may touch (cpu) the device region follows the host region in the same block, so one
// arena holds everything; otherwise it is allocated from the device (device_bytes).
// The KV cache comes last, in blocks of kv_block positions ([block][layer][K: kv_block rows | V: kv_block
// rows]): the part of the memory a session touches grows with its context (pages past the longest context used
// are never written), and attention reads each layer's keys and values in contiguous runs of kv_block rows
// rather than one row per position scattered across every layer's (which costs a TLB miss a row).
struct SessionLayout {
    int32_t n_ctx = 0, n_batch = 0, n_threads = 1, n_logit_rows = 1;
    // host region
    size_t object = 0;  // the session object itself
    size_t layer_ids = 0, tokens = 0, sampler = 0, text = 0, last_logits = 0, pos = 0;
    size_t spec_ids = 0, spec_logits = 0, ngram = 0, ngram_bytes = 0;
    size_t spec_q = 0, spec_p = 0;  // draft distributions [spec_k, V] and one target row [V]
    size_t draft = 0;               // the draft's own session's host region (draft model or self-draft)
    // device region
    size_t rope = 0, dev_pos = 0, dev_ids = 0;
    size_t x = 0, xb = 0, xb2 = 0, q = 0, k = 0, v = 0, att = 0, hb = 0, hb2 = 0;
    size_t logits = 0, attn_ws = 0, attn_ws_bytes = 0, mm_ws = 0, mm_ws_bytes = 0;
    size_t draft_dev = 0;           // the draft's device region
    size_t kv = 0, kv_bytes = 0, kv_pos_bytes = 0;  // kv_pos_bytes: one position of every layer, K and V
    int32_t kv_block = 0;                           // positions per KV block
    int32_t kv_dtype = 0;    // pgd_dtype of the cache's elements: kv_type, or what the device holds instead
    size_t kv_row_bytes = 0; // one position of one layer's K (or V): its elements, and for I8 its scales
    size_t kv_block_bytes = 0;
    int32_t spec_k = 0;             // most tokens drafted per step (0: speculation off)
    // Layers this session runs: all of the model's, or a self-draft's subset. The first n_shared of them
    // coincide with the target's first layers and use the target's KV cache rows (no copy, no duplicate).
    int32_t n_layers = 0, n_shared = 0;
    size_t activation_bytes = 0, logits_bytes = 0;
    size_t host_bytes = 0, dev_bytes = 0;  // the two regions' sizes (a draft's included)
    bool dev_in_arena = true;               // the device region follows the host region in the arena
    size_t dev_offset = 0;                  // where, when it does
    size_t total = 0;                       // the arena: what pangu_session_estimate calls arena_bytes
    size_t device_bytes = 0;                // allocated from the device: dev_bytes, or 0 when in the arena
    size_t alignment = 64;
};

// A self-draft runs a subset of the target's layers; a draft model runs all of its own.
struct LayerSubset {
    const int32_t *ids = nullptr;  // ascending layer indices; nullptr = all layers
    int32_t n = 0;
};

// The pgd_dtype of a session's KV cache: the kv_type asked for if the device holds it, else F16, else F32.
int32_t kv_cache_dtype(const pgd_device &dev, int32_t kv_type);

SessionLayout plan_session(const Model &m, const pangu_session_params &p, LayerSubset subset = {});

// The draft's parameters and model for a target session's params (PANGU_SPEC_DRAFT / PANGU_SPEC_SELF).
pangu_session_params draft_params(const pangu_session_params &p);
// The default self-draft layers (every 4th from 0) when the caller gives none; writes into `buf`.
LayerSubset self_draft_layers(const Model &m, const pangu_session_params &p, int32_t *buf, int32_t cap);

// sizeof(Session), which the plan reserves at the start of the block (defined in session.cpp).
size_t session_object_bytes();

}  // namespace pangu
