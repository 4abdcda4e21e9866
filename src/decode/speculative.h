// Speculative decoding pieces: the n-gram index behind prompt-lookup drafting (PLD), and the controller
// that decides, step by step, how many tokens to draft so that speculation never costs more than it saves.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pangu {

// Most tokens drafted per step (spec_draft_len's upper bound): a verification runs up to kMaxDraftLen + 1
// positions, and pangu_session_stats.accepted_hist has kMaxDraftLen + 1 entries.
constexpr int kMaxDraftLen = 15;

// For each n-gram length 1..max_n, a hash table from an n-gram to the most recent position where it ended
// with a known continuation. Appending a token indexes at most max_n n-grams (O(1) per token; the context is
// never rescanned), and a lookup verifies the candidate against the tokens, so hash collisions cannot
// produce a wrong draft. Lives in memory handed to it (the session arena).
class NgramIndex {
public:
    static size_t bytes(int n_ctx, int max_n);
    void init(void *mem, int n_ctx, int max_n);
    void clear();
    // Brings the index up to date with tokens[0..n): incremental when tokens were only appended since the
    // last call, a rebuild after the context was cut (truncate, reset, slide).
    void update(const int32_t *tokens, size_t n);
    // The k tokens that followed the most recent earlier occurrence of the context's last N tokens, for
    // N = max_n down to 1, continued with the period of the repetition when that occurrence is less than k
    // tokens from the end. Returns k, or 0 if nothing matched; `depth` (optional) receives how far the match
    // reaches back: the number of the context's last tokens that equal those before the occurrence's
    // continuation (at least the N that matched, at most kMaxDepth; 0 if nothing matched).
    int propose(const int32_t *tokens, size_t n, int k, int32_t *out, int *depth = nullptr) const;
    static constexpr int kMaxDepth = 64;

private:
    struct Slot {
        uint64_t key;
        int32_t pos;  // position of the n-gram's last token; -1 = empty
        int32_t pad;
    };
    void insert(const int32_t *tokens, int len, size_t end);
    Slot *tables_ = nullptr;  // max_n tables of cap_ slots
    size_t cap_ = 0;
    int max_n_ = 0;
    size_t indexed_ = 0;  // tokens[0..indexed_) are indexed
    uint64_t fingerprint_ = 0;  // last indexed token, to notice a cut that kept the length
};

// Prompt lookup's draft sources are the depths of its matches (NgramIndex::propose) in buckets. Returns the
// source (0..7) of a match reaching `depth` tokens back, and the acceptance of a first drafted token to assume
// for a source before it has been seen: d / (d + 1) for the least depth d of its bucket, odds of d to 1 that a
// copy that has run for d tokens goes on. (On pangu-tiny's greedy bench_spec outputs, first drafted tokens
// were right 0.33 of the time at depth 1, 0.70 at 3, 0.90 at 5-6, 0.93-0.95 at 9-32 and 1.00 beyond.)
int pld_source(int depth);
double pld_source_prior(int src);

// Chooses the draft length for the next step from what it has seen: how often drafted tokens are accepted,
// and the measured cost of verifying m positions at once relative to one. It drafts only when the expected
// tokens per unit of time beat plain decoding, and while that is not the case it probes with one drafted token
// now and then, backing off exponentially, so that it notices when the text starts repeating.
//
// Acceptance is estimated per draft source (`src`, 0..kSources-1: for prompt lookup, the depth of the match,
// see pld_source; a draft model has one source), and in two parts: the first drafted token, and each further
// one given that its predecessor was accepted. Drafts behave that way: a match reaching 30 tokens back is right
// far more often than a lone repeated token, and once a copy is under way it tends to continue, so a single
// rate would draft too little after strong matches and too much after weak ones.
class SpecController {
public:
    static constexpr int kSources = 9;
    // Forgets everything it measured and learnt (not the priors).
    void reset(int k_max);
    // The acceptance of a first drafted token from `src` to assume before any was seen (default 0.5). A
    // source whose prior is at least kTrustedPrior drafts the full length at once; any other drafts one token
    // until one of its drafts has been accepted in the request, unless a long draft costs about what a
    // one-token draft does (see choose).
    void set_prior(int src, double first_rate);
    static constexpr double kTrustedPrior = 0.75;
    // Forgets what it learnt of the text (acceptance), keeps what it measured of the costs, which belong to
    // the model and the machine: a new request on the same session starts from them.
    void new_request();
    // The number of tokens to draft, 0..min(k_max, available).
    int choose(int available, int src = 0);
    // After a step that drafted k (>= 0) tokens from source `src`, of which `accepted` were accepted: the
    // forward of k + 1 positions took `verify_ms`, drafting them `draft_ms` (a draft model's own steps,
    // including catching up with the tokens it has not seen; next to nothing for prompt lookup).
    void record(int k, int accepted, double verify_ms, int src = 0, double draft_ms = 0);
    // Test hook: draft whatever is available, whatever the timings say (tests of the drafting mechanism).
    void set_always_draft(bool on) { always_draft_ = on; }
    // Estimated probability that a first drafted token from `src` is accepted, and that a further one is.
    double first_rate(int src) const;
    double next_rate(int src) const;

private:
    double cost(int m) const;
    // Time of drafting k tokens, by the recent drafting time per drafted token.
    double draft_cost(int k) const { return k * draft_per_token_; }
    int k_max_ = 0;
    bool always_draft_ = false;
    double draft_per_token_ = 0;  // moving average
    static constexpr int kHopelessGap = 512;
    int hopeless_steps_ = 0;      // steps since the last probe while drafting cannot pay at any acceptance
    // Steps between probes of a source after drafting paid or a first probe failed; doubled up to kMaxProbeGap
    // while probes keep failing.
    static constexpr int kProbeGap = 4, kMaxProbeGap = 64;
    struct Rates {
        double first_acc = 0, first_seen = 0;  // decayed counts: first drafted tokens accepted / examined
        double next_acc = 0, next_seen = 0;    // further drafted tokens accepted / examined
        // A source not yet seen in the request is probed the first time it offers drafts (see new_request).
        int since_probe = 0, probe_gap = 1;
        bool proven = false;  // a draft of it accepted in this request: until then it drafts one token at a time
    };
    Rates rates_[kSources];
    double prior_[kSources] = {0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5};
    double ms_[kMaxDraftLen + 2] = {0};  // slowly rising minimum of the step time by number of positions
    // When each ms_ entry was last measured, counted in recorded steps: an entry older than kStaleSteps is
    // only trusted while it is below what the fresh ones suggest (see cost).
    int64_t steps_ = 0, measured_at_[kMaxDraftLen + 2] = {0};
    static constexpr int64_t kStaleSteps = 64;
    bool fresh(int m) const { return steps_ - measured_at_[m] <= kStaleSteps; }
};

}  // namespace pangu
