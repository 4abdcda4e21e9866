// Speculative decoding pieces: the n-gram index behind prompt-lookup drafting (PLD), and the controller
// that decides, step by step, how many tokens to draft so that speculation never costs more than it saves.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pangu {

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
    // Up to k tokens that followed the most recent earlier occurrence of the context's last N tokens, for
    // N = max_n down to 1. Returns how many were written to out.
    int propose(const int32_t *tokens, size_t n, int k, int32_t *out) const;

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

// Chooses the draft length for the next step from what it has seen: an estimate of how often drafted
// tokens are accepted, and the measured cost of verifying m positions at once relative to one. It drafts
// only when the expected tokens per unit of time beat plain decoding, and while that is not the case it
// probes with one drafted token now and then, backing off exponentially, so that it notices when the text
// starts repeating.
class SpecController {
public:
    void reset(int k_max);
    // The number of tokens to draft, 0..min(k_max, available).
    int choose(int available);
    // After a step that drafted k (>= 0) tokens, of which `accepted` were accepted, with the forward taking
    // `ms` for k + 1 positions.
    void record(int k, int accepted, double ms);
    double acceptance() const { return (acc_ + 1.0) / (seen_ + 2.0); }

private:
    double cost(int m) const;
    int k_max_ = 0;
    double acc_ = 0, seen_ = 0;  // decayed counts of accepted and examined drafted tokens
    double ms_[17] = {0};        // moving average of forward time by number of positions
    int since_probe_ = 0, probe_gap_ = 4;
};

// Test hook: draft whatever is available, whatever the timings say, so that tests of the drafting mechanism
// do not depend on how busy the machine is.
void set_always_draft_for_tests(bool on);

}  // namespace pangu
