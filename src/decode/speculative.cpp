#include "decode/speculative.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace pangu {

namespace {

size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

uint64_t hash_ngram(const int32_t *t, int len) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(len);
    for (int i = 0; i < len; ++i) {
        h ^= static_cast<uint32_t>(t[i]);
        h *= 0xff51afd7ed558ccdull;
        h ^= h >> 29;
    }
    return h | 1;  // never 0
}

}  // namespace

size_t NgramIndex::bytes(int n_ctx, int max_n) {
    return sizeof(Slot) * pow2_at_least(2 * static_cast<size_t>(n_ctx)) * static_cast<size_t>(max_n);
}

void NgramIndex::init(void *mem, int n_ctx, int max_n) {
    tables_ = static_cast<Slot *>(mem);
    cap_ = pow2_at_least(2 * static_cast<size_t>(n_ctx));
    max_n_ = max_n;
    clear();
}

void NgramIndex::clear() {
    for (size_t i = 0; i < cap_ * static_cast<size_t>(max_n_); ++i) tables_[i] = Slot{0, -1, 0};
    indexed_ = 0;
    fingerprint_ = 0;
}

void NgramIndex::insert(const int32_t *tokens, int len, size_t end) {
    Slot *tab = tables_ + static_cast<size_t>(len - 1) * cap_;
    const uint64_t key = hash_ngram(tokens + end + 1 - len, len);
    for (size_t i = key & (cap_ - 1);; i = (i + 1) & (cap_ - 1)) {
        if (tab[i].pos < 0 || tab[i].key == key) {
            tab[i] = Slot{key, static_cast<int32_t>(end), 0};
            return;
        }
    }
}

void NgramIndex::update(const int32_t *tokens, size_t n) {
    if (!tables_) return;
    // A cut context (or one rewritten in place by a slide) starts over; appends are indexed incrementally.
    if (n < indexed_) {
        clear();
    } else if (indexed_ > 0) {
        const uint64_t fp = static_cast<uint64_t>(indexed_) << 32 | static_cast<uint32_t>(tokens[indexed_ - 1]);
        if (fp != fingerprint_) clear();
    }
    for (size_t p = indexed_ > 0 ? indexed_ : 1; p < n; ++p) {
        // n-grams ending at p - 1 now have a continuation (tokens[p])
        for (int len = 1; len <= max_n_ && static_cast<size_t>(len) <= p; ++len) insert(tokens, len, p - 1);
    }
    indexed_ = n;
    fingerprint_ = n ? (static_cast<uint64_t>(n) << 32 | static_cast<uint32_t>(tokens[n - 1])) : 0;
}

int NgramIndex::propose(const int32_t *tokens, size_t n, int k, int32_t *out, int *depth) const {
    if (depth) *depth = 0;
    if (!tables_ || k <= 0) return 0;
    for (int len = max_n_; len >= 1; --len) {
        if (static_cast<size_t>(len) >= n) continue;
        const int32_t *suffix = tokens + n - len;
        const uint64_t key = hash_ngram(suffix, len);
        const Slot *tab = tables_ + static_cast<size_t>(len - 1) * cap_;
        for (size_t i = key & (cap_ - 1); tab[i].pos >= 0; i = (i + 1) & (cap_ - 1)) {
            if (tab[i].key != key) continue;
            const size_t end = static_cast<size_t>(tab[i].pos);
            if (end + 1 >= n || end + 1 < static_cast<size_t>(len)) break;
            if (std::memcmp(tokens + end + 1 - len, suffix, sizeof(int32_t) * len) != 0) break;  // collision
            // What followed that occurrence, as far as the context goes. When the occurrence is recent (closer
            // than k tokens to the end) the text is repeating with that period, and the draft goes on with
            // the period: positions past the end are the drafted tokens themselves (end + 1 < n, so
            // `src - n` is always an index already written).
            for (int m = 0; m < k; ++m) {
                const size_t src = end + 1 + m;
                out[m] = src < n ? tokens[src] : out[src - n];
            }
            if (depth) {
                // How far back the context goes on agreeing with the text before the occurrence (bounded, so
                // a step costs O(1); end < n - 1, so the two never coincide).
                size_t d = static_cast<size_t>(len);
                while (d < static_cast<size_t>(kMaxDepth) && d <= end && tokens[end - d] == tokens[n - 1 - d]) ++d;
                *depth = static_cast<int>(d);
            }
            return k;
        }
    }
    return 0;
}

namespace {
// The least depth of each prompt-lookup source's bucket.
constexpr int kDepthFloor[] = {1, 2, 3, 4, 6, 9, 17, 33};
constexpr int kDepthSources = static_cast<int>(sizeof kDepthFloor / sizeof kDepthFloor[0]);
static_assert(kDepthSources <= SpecController::kSources, "a source per depth bucket");
static_assert(kDepthFloor[kDepthSources - 1] <= NgramIndex::kMaxDepth, "the deepest bucket is reachable");
}  // namespace

int pld_source(int depth) {
    int s = 0;
    while (s + 1 < kDepthSources && depth >= kDepthFloor[s + 1]) ++s;
    return s;
}

double pld_source_prior(int src) {
    const double d = kDepthFloor[std::min(std::max(src, 0), kDepthSources - 1)];
    return d / (d + 1.0);
}

void SpecController::set_prior(int src, double first_rate) {
    if (src >= 0 && src < kSources) prior_[src] = std::min(std::max(first_rate, 0.0), 1.0);
}

void SpecController::reset(int k_max) {
    k_max_ = k_max;
    draft_per_token_ = 0;
    std::memset(ms_, 0, sizeof ms_);
    std::memset(measured_at_, 0, sizeof measured_at_);
    steps_ = 0;
    hopeless_steps_ = 0;
    new_request();
}

void SpecController::new_request() {
    // A source not yet seen in this request is probed the first time it offers drafts: with the prior's even
    // odds, drafting pays only where a verification costs under 1.3 steps, and a prompt lookup on a model whose
    // verification costs more (1.35 steps on the 1B shape on the CPU) would otherwise wait for its first
    // scheduled probe while a copy of the prompt goes by undrafted. One failed probe costs a fraction of a step.
    for (Rates &r : rates_) r = Rates{};
}

double SpecController::first_rate(int src) const {
    const Rates &r = rates_[src];
    return (r.first_acc + prior_[src]) / (r.first_seen + 1.0);
}

double SpecController::next_rate(int src) const {
    // Until further tokens have been examined (a source drafted one token at a time never shows them), assume
    // a copy goes on as often as it starts: the first rate stands in as the prior.
    const Rates &r = rates_[src];
    return (r.next_acc + first_rate(src)) / (r.next_seen + 1.0);
}

double SpecController::cost(int m) const {
    if (ms_[m] > 0 && fresh(m)) return ms_[m];
    // Not measured lately: extrapolate linearly from one position and the largest batch measured lately; with
    // nothing measured, assume each extra position adds a quarter of a plain step, which holds when weights
    // dominate (memory-bound decode) and errs towards drafting, so that the real cost gets measured.
    const double one = ms_[1] > 0 ? ms_[1] : 1.0;
    double slope = 0.25 * one;
    for (int j = kMaxDraftLen + 1; j >= 2; --j)
        if (ms_[j] > 0 && fresh(j) && ms_[1] > 0) {
            slope = std::max(0.0, (ms_[j] - ms_[1]) / (j - 1));
            break;
        }
    const double guess = one + slope * (m - 1);
    // An old measurement stands only while it is below what the recent ones suggest: a batch size measured
    // once, slowly (the first use of its buffers, another program's burst), and never chosen again because of
    // that, would otherwise keep drafting short for good (a 4-position forward measured at 3.6 plain steps on
    // pangu-tiny, where it costs about 2, held every prompt-lookup draft there to one token).
    return ms_[m] > 0 ? std::min(ms_[m], guess) : guess;
}

int SpecController::choose(int available, int src) {
    const int kmax = available < k_max_ ? available : k_max_;
    if (kmax <= 0) return 0;
    if (always_draft_) return kmax;
    // Every decision compares against a plain step: measure one first.
    if (ms_[1] <= 0) return 0;
    src = std::min(std::max(src, 0), kSources - 1);
    Rates &r = rates_[src];
    const double a1 = first_rate(src), a2 = next_rate(src);
    // Drafting must beat a plain step by a margin: the estimates are noisy, and a draft that only breaks even
    // on paper loses in practice (misses cost cache traffic the estimate does not see). The margin is on what
    // drafting adds: the expected extra tokens must be kMargin times the extra cost in plain steps (about the
    // same as asking 15 % more tokens per unit of time where 5 positions cost 1.6 steps), so that where a
    // verification costs next to nothing more than a step (a device dominated by fixed costs per operator,
    // npu-sim) even a small expected gain is taken: it is a sure one.
    constexpr double kMargin = 1.4, kMinGain = 0.02;
    const double one = cost(1);
    double best = 1.0 / one, best_case = 0;
    int best_k = 0;
    double expect = 1.0, p = a1;
    for (int k = 1; k <= kmax; ++k) {
        expect += p;  // expected tokens from drafting k: 1 + a1 + a1 a2 + ... + a1 a2^(k-1)
        p *= a2;
        const double c = cost(k + 1) + draft_cost(k);
        best_case = std::max(best_case, (k + 1) / c);
        if (expect - 1.0 >= kMargin * (c / one - 1.0) + kMinGain && expect / c > best) {
            best = expect / c;
            best_k = k;
        }
    }
    if (best_k > 0) {
        r.probe_gap = kProbeGap;
        r.since_probe = 0;
        // A weak prior alone never buys a long draft: a failed first draft of 4 tokens cost about half a step
        // where one of 1 token costs a quarter (shallow prompt-lookup matches under sampling, about 4 % of a
        // generation of 48 tokens on the 1B shape on the CPU), and a source that copies proves it in one step.
        // A deep match needs no proof: it is a copy under way; nor a long draft that costs about what a short
        // one does (a failed draft of 4 tokens then loses no more than one of 1).
        const bool long_is_cheap = cost(best_k + 1) + draft_cost(best_k) <= 1.1 * (cost(2) + draft_cost(1));
        return r.proven || prior_[src] >= kTrustedPrior || long_is_cheap ? best_k : 1;
    }
    // A draft model's probe pays for catching up with every token since the last one. When even drafts that
    // are always accepted would be slower than plain steps (a draft model nearly as slow as the target), no
    // text can make it pay: probe only now and then, to notice that the costs changed.
    if (draft_cost(1) > 0.25 * cost(1) && best_case * cost(1) <= 1.0) {
        if (++hopeless_steps_ < kHopelessGap) return 0;
        hopeless_steps_ = 0;
        return 1;
    }
    // Otherwise drafting does not pay at the current acceptance estimate: probe with one token every so
    // often, less often the longer it keeps failing.
    if (++r.since_probe >= r.probe_gap) {
        r.since_probe = 0;
        r.probe_gap = r.probe_gap < kProbeGap ? kProbeGap : std::min(2 * r.probe_gap, kMaxProbeGap);
        return 1;
    }
    return 0;
}

void SpecController::record(int k, int accepted, double verify_ms, int src, double draft_ms) {
    const int m = k + 1;
    // Noise on a shared machine only ever adds time (preemption, other programs' cache traffic), so track a
    // slowly rising minimum rather than a mean: one slow step must not make plain decoding look expensive
    // and drafting cheap (or the reverse).
    ++steps_;
    if (m >= 1 && m <= kMaxDraftLen + 1) {
        ms_[m] = ms_[m] > 0 ? std::min(verify_ms, ms_[m] * 1.02) : verify_ms;
        measured_at_[m] = steps_;
    }
    if (k <= 0) return;
    // Drafting time varies with how far a draft model has to catch up: an average, not a minimum.
    const double per_token = draft_ms / k;
    draft_per_token_ = draft_per_token_ > 0 ? 0.7 * draft_per_token_ + 0.3 * per_token : per_token;
    Rates &r = rates_[std::min(std::max(src, 0), kSources - 1)];
    // A step examines drafted tokens until the first rejection: the first one always, each further one if
    // its predecessor was accepted. A memory of some seven steps per source: whether the text repeats changes
    // within a request, but a rate must also be able to come close to 0 or 1 (the prior counts half a step).
    constexpr double kDecay = 0.85;
    r.first_acc = kDecay * r.first_acc + (accepted > 0 ? 1 : 0);
    r.first_seen = kDecay * r.first_seen + 1;
    if (accepted > 0) {
        const int further = accepted < k ? accepted : k - 1;  // examined after the first
        const int further_acc = accepted - 1;
        r.next_acc = kDecay * r.next_acc + further_acc;
        r.next_seen = kDecay * r.next_seen + further;
    }
    // A probe that succeeded: look again sooner. Not at once: a source right one time in four (sampling from
    // a flat distribution, say) must not be probed every few steps; if it has really started to repeat, a few
    // successes raise its rate until drafting pays.
    if (accepted > 0) r.proven = true;
    if (accepted == k && r.probe_gap > kProbeGap) r.probe_gap /= 2;
}

}  // namespace pangu
