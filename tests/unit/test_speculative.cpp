// Speculative decoding: drafts never change the output. Greedy: token for token identical to plain
// decoding; sampling with prompt lookup: the same tokens for the same seed (a one-hot draft is accepted
// exactly when the sampled token equals it, and the sampler draws once per token either way).
#include <gtest/gtest.h>
#include <json/json.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "pangu/pangu.h"
#include "runtime/session.h"
#include "decode/speculative.h"

namespace {

pangu_model *g_model = nullptr;
pangu_model *g_draft = nullptr;

struct ModelEnv : ::testing::Environment {
    void SetUp() override {
        ASSERT_EQ(pangu_model_load(PANGU_MODEL_DIR, nullptr, &g_model), PANGU_OK);
        ASSERT_EQ(pangu_model_load(PANGU_DRAFT_DIR, nullptr, &g_draft), PANGU_OK) << pangu_last_error();
    }
    void TearDown() override {
        pangu_model_free(g_draft);
        pangu_model_free(g_model);
    }
};
const auto *kEnv = ::testing::AddGlobalTestEnvironment(new ModelEnv);

struct GenRun {
    std::vector<int32_t> ids;
    std::string text;
    pangu_session_stats stats{};
};

// Test hooks for the sessions the helpers below create.
pangu::SessionTestHooks g_hooks;
void set_always_draft(bool on) { g_hooks.always_draft = on; }
void set_broken_acceptance(bool on) { g_hooks.broken_acceptance = on; }

GenRun generate(const std::vector<int32_t> &prompt, int spec_mode, const pangu_sampling_params &sp, int k = 4,
             int threads = 1) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 1024;
    p.spec_mode = spec_mode;
    if (spec_mode == PANGU_SPEC_DRAFT) p.draft_model = g_draft;
    p.spec_draft_len = k;
    p.n_threads = threads;
    pangu_session *s = nullptr;
    EXPECT_EQ(pangu_session_create(g_model, &p, &s), PANGU_OK) << pangu_last_error();
    pangu::from_handle(s)->set_test_hooks(g_hooks);
    GenRun r;
    auto cb = [](void *u, int32_t t, const char *piece, size_t len) {
        auto *run = static_cast<GenRun *>(u);
        run->ids.push_back(t);
        run->text.append(piece, len);
        return 0;
    };
    EXPECT_EQ(pangu_session_generate_tokens(s, prompt.data(), prompt.size(), &sp, cb, &r, nullptr), PANGU_OK)
        << pangu_session_last_error(s);
    r.stats.struct_size = sizeof r.stats;
    EXPECT_EQ(pangu_session_get_stats(s, &r.stats), PANGU_OK);
    pangu_session_free(s);
    return r;
}

std::vector<int32_t> tokenize(const std::string &text) {
    size_t n = 0;
    pangu_tokenize(g_model, text.data(), text.size(), 1, 0, nullptr, 0, &n);
    std::vector<int32_t> ids(n);
    EXPECT_EQ(pangu_tokenize(g_model, text.data(), text.size(), 1, 0, ids.data(), n, &n), PANGU_OK);
    return ids;
}

// 50 prompts cut from dev.jsonl: the first 48..160 tokens of documents (Python and Chinese alike).
std::vector<std::vector<int32_t>> dev_prompts(size_t count) {
    std::ifstream f(std::string(PANGU_SHARED_DIR) + "/data/dev.jsonl");
    std::vector<std::vector<int32_t>> out;
    std::string line;
    std::mt19937 g(1);
    while (out.size() < count && std::getline(f, line)) {
        Json::Value doc;
        std::istringstream(line) >> doc;
        auto ids = tokenize(doc["text"].asString());
        const size_t len = 48 + g() % 113;
        if (ids.size() < len + 8) continue;
        ids.resize(len);
        out.push_back(ids);
    }
    return out;
}

pangu_sampling_params greedy(int n) {
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = n;
    return sp;
}

}  // namespace

TEST(Speculative, PldGreedyIsIdenticalOnGoldenPrompts) {
    Json::Value golden;
    std::ifstream(std::string(PANGU_MODEL_DIR) + "/golden.json") >> golden;
    for (const auto &c : golden["cases"]) {
        std::vector<int32_t> prompt;
        for (const auto &v : c["prompt_ids"]) prompt.push_back(v.asInt());
        const GenRun off = generate(prompt, PANGU_SPEC_OFF, greedy(64));
        const GenRun pld = generate(prompt, PANGU_SPEC_PLD, greedy(64));
        EXPECT_EQ(pld.ids, off.ids) << c["prompt"].asString();
        EXPECT_EQ(pld.text, off.text);
        // the first 24 are golden.json's own continuation
        for (Json::ArrayIndex i = 0; i < c["greedy_ids"].size(); ++i) EXPECT_EQ(pld.ids[i], c["greedy_ids"][i].asInt());
    }
}

TEST(Speculative, PldGreedyIsIdenticalOnFiftyDevPrompts) {
    int64_t accepted = 0, drafted = 0, fwd_off = 0, fwd_pld = 0;
    const auto prompts = dev_prompts(50);
    ASSERT_EQ(prompts.size(), 50u);
    for (size_t i = 0; i < prompts.size(); ++i) {
        const GenRun off = generate(prompts[i], PANGU_SPEC_OFF, greedy(48));
        const GenRun pld = generate(prompts[i], PANGU_SPEC_PLD, greedy(48), 4, i % 2 ? 2 : 1);
        ASSERT_EQ(pld.ids, off.ids) << "prompt " << i;
        ASSERT_EQ(pld.text, off.text) << "prompt " << i;
        accepted += pld.stats.n_accepted;
        drafted += pld.stats.n_drafted;
        fwd_off += off.stats.n_forward;
        fwd_pld += pld.stats.n_forward;
    }
    std::printf("50 dev prompts: %lld drafted, %lld accepted, forwards %lld (plain %lld)\n", (long long)drafted,
                (long long)accepted, (long long)fwd_pld, (long long)fwd_off);
    EXPECT_GT(accepted, 0);  // the drafts were exercised, not skipped
    EXPECT_LT(fwd_pld, fwd_off);
}

TEST(Speculative, PldSamplingGivesTheSameTokensForTheSameSeed) {
    const auto prompts = dev_prompts(8);
    int64_t accepted = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
        pangu_sampling_params sp = greedy(64);
        sp.temperature = 0.7f;
        sp.top_p = 0.9f;
        sp.top_k = 50;
        sp.repetition_penalty = 1.05f;
        sp.seed = 1000 + i;
        const GenRun off = generate(prompts[i], PANGU_SPEC_OFF, sp);
        const GenRun pld = generate(prompts[i], PANGU_SPEC_PLD, sp);
        EXPECT_EQ(pld.ids, off.ids) << "prompt " << i;
        accepted += pld.stats.n_accepted;
    }
    EXPECT_GT(accepted, 0);
}

TEST(Speculative, DraftLengthsAndNgramSizesKeepOutputIdentical) {
    const auto prompts = dev_prompts(6);
    for (int k : {1, 2, 8, 15})
        for (size_t i = 0; i < prompts.size(); ++i) {
            pangu_session_params p;
            (void)p;
            const GenRun off = generate(prompts[i], PANGU_SPEC_OFF, greedy(40));
            const GenRun pld = generate(prompts[i], PANGU_SPEC_PLD, greedy(40), k);
            EXPECT_EQ(pld.ids, off.ids) << "k=" << k << " prompt " << i;
            for (int a = k + 1; a < 16; ++a) EXPECT_EQ(pld.stats.accepted_hist[a], 0);
        }
}

TEST(Speculative, RepeatedTextIsDraftedAndAccepted) {
    // Re-emitting a code block the prompt holds: many tokens come from accepted drafts.
    const std::string block =
        "def heappush(heap, item):\n    heap.append(item)\n    _siftdown(heap, 0, len(heap)-1)\n\n"
        "def heappop(heap):\n    lastelt = heap.pop()\n    if heap:\n        returnitem = heap[0]\n";
    const auto prompt = tokenize(block + "\n" + block + "\n" + block.substr(0, 30));
    // Whether drafting pays is decided from measured timings; here the drafting itself is under test.
    set_always_draft(true);
    const GenRun pld = generate(prompt, PANGU_SPEC_PLD, greedy(60));
    set_always_draft(false);
    const GenRun off = generate(prompt, PANGU_SPEC_OFF, greedy(60));
    EXPECT_EQ(pld.ids, off.ids);
    std::printf("re-emit: %lld of %lld drafted accepted in %lld verify steps, %lld forwards for 60 tokens\n",
                (long long)pld.stats.n_accepted, (long long)pld.stats.n_drafted, (long long)pld.stats.n_verify,
                (long long)pld.stats.n_forward);
    // pangu-tiny copies the block only partly before it drifts.
    EXPECT_GE(pld.stats.n_accepted, 20);
    EXPECT_LT(pld.stats.n_forward, off.stats.n_forward * 3 / 4);
}

TEST(NgramIndex, ProposesTheMostRecentContinuationWithFallback) {
    std::vector<uint8_t> mem(pangu::NgramIndex::bytes(64, 3));
    pangu::NgramIndex idx;
    idx.init(mem.data(), 64, 3);
    //                      0  1  2  3  4  5  6  7  8  9 10 11 12 13
    std::vector<int32_t> t = {5, 6, 7, 8, 9, 5, 6, 7, 1, 2, 3, 6, 7};
    idx.update(t.data(), t.size());
    int32_t out[8];
    // suffix (5?) "6 7": trigram "3 6 7" unseen; bigram "6 7" last seen ending at 7 -> continuation 1 2 3 6
    int n = idx.propose(t.data(), t.size(), 4, out);
    ASSERT_EQ(n, 4);
    EXPECT_EQ(std::vector<int32_t>(out, out + 4), (std::vector<int32_t>{1, 2, 3, 6}));
    // trigram wins over bigram: "5 6 7" ends at 7 (most recent), continuation 1 2
    t.push_back(5);
    t.push_back(6);
    t.push_back(7);
    idx.update(t.data(), t.size());
    n = idx.propose(t.data(), t.size(), 2, out);
    ASSERT_EQ(n, 2);
    EXPECT_EQ(out[0], 1);
    EXPECT_EQ(out[1], 2);
    // unigram fallback; the occurrence is 2 tokens from the end, so the text repeats with period 2 and the
    // draft goes on with it
    std::vector<int32_t> u = {4, 9, 4};
    idx.update(u.data(), u.size());  // shorter: rebuilt
    n = idx.propose(u.data(), u.size(), 4, out);
    ASSERT_EQ(n, 4);
    EXPECT_EQ(std::vector<int32_t>(out, out + 4), (std::vector<int32_t>{9, 4, 9, 4}));
    // a run of one token continues as a run
    std::vector<int32_t> r = {1, 2, 7, 7, 7};
    idx.update(r.data(), r.size());
    n = idx.propose(r.data(), r.size(), 4, out);
    ASSERT_EQ(n, 4);
    EXPECT_EQ(std::vector<int32_t>(out, out + 4), (std::vector<int32_t>{7, 7, 7, 7}));
    // nothing seen before: no draft
    std::vector<int32_t> v = {1, 2, 3};
    idx.update(v.data(), v.size());
    int depth = -1;
    EXPECT_EQ(idx.propose(v.data(), v.size(), 4, out, &depth), 0);
    EXPECT_EQ(depth, 0);
}

TEST(NgramIndex, ReportsHowFarBackAMatchReaches) {
    std::vector<uint8_t> mem(pangu::NgramIndex::bytes(64, 3));
    pangu::NgramIndex idx;
    idx.init(mem.data(), 64, 3);
    int32_t out[4];
    int depth = -1;
    // "3 4 5" matched, and before it "1 2" too, up to the start of the context: 5 tokens
    std::vector<int32_t> t = {1, 2, 3, 4, 5, 9, 1, 2, 3, 4, 5};
    idx.update(t.data(), t.size());
    ASSERT_EQ(idx.propose(t.data(), t.size(), 4, out, &depth), 4);
    EXPECT_EQ(out[0], 9);
    EXPECT_EQ(depth, 5);
    // only the bigram "6 7" matches, and the tokens before it differ (5 against 3)
    std::vector<int32_t> u = {5, 6, 7, 8, 9, 3, 6, 7};
    idx.update(u.data(), u.size());
    ASSERT_EQ(idx.propose(u.data(), u.size(), 2, out, &depth), 2);
    EXPECT_EQ(depth, 2);
    // a long run: the depth stops at kMaxDepth
    std::vector<int32_t> r(200, 7);
    idx.update(r.data(), r.size());
    ASSERT_EQ(idx.propose(r.data(), r.size(), 4, out, &depth), 4);
    EXPECT_EQ(depth, pangu::NgramIndex::kMaxDepth);
}

TEST(SpecController, PromptLookupSourcesAreMatchDepths) {
    // Buckets of depth, and odds of d to 1 for the least depth d of a bucket.
    EXPECT_EQ(pangu::pld_source(1), 0);
    EXPECT_EQ(pangu::pld_source(2), 1);
    EXPECT_EQ(pangu::pld_source(3), 2);
    EXPECT_EQ(pangu::pld_source(5), 3);
    EXPECT_EQ(pangu::pld_source(8), 4);
    EXPECT_EQ(pangu::pld_source(16), 5);
    EXPECT_EQ(pangu::pld_source(32), 6);
    EXPECT_EQ(pangu::pld_source(33), 7);
    EXPECT_EQ(pangu::pld_source(pangu::NgramIndex::kMaxDepth), 7);
    EXPECT_LT(pangu::pld_source(pangu::NgramIndex::kMaxDepth), pangu::SpecController::kSources);
    EXPECT_DOUBLE_EQ(pangu::pld_source_prior(0), 0.5);
    EXPECT_DOUBLE_EQ(pangu::pld_source_prior(2), 0.75);
    EXPECT_DOUBLE_EQ(pangu::pld_source_prior(7), 33.0 / 34.0);
    for (int s = 1; s < 8; ++s) EXPECT_GT(pangu::pld_source_prior(s), pangu::pld_source_prior(s - 1)) << s;
}

TEST(SpecController, ADeepMatchDraftsTheFullLengthAtOnce) {
    // Verifying 5 positions costs 1.5 steps (prompt lookup on the 1B shape on the CPU). A source with even
    // odds is not worth a long draft before it has proven itself; a match 20 tokens deep is a copy under way,
    // and its prior alone buys the full length.
    pangu::SpecController c;
    c.reset(4);
    for (int s = 0; s < pangu::SpecController::kSources; ++s) c.set_prior(s, pangu::pld_source_prior(s));
    c.record(0, 0, 1.0);
    c.record(4, 0, 1.5, 0);
    const int deep = pangu::pld_source(20), shallow = pangu::pld_source(1);
    EXPECT_EQ(c.choose(4, deep), 4);
    EXPECT_LE(c.choose(4, shallow), 1);
    // The priors survive a new request and a reset; what was learnt does not.
    for (int i = 0; i < 20; ++i) c.record(4, 0, 1.5, deep);
    EXPECT_LT(c.first_rate(deep), 0.2);
    EXPECT_EQ(c.choose(4, deep) < 4, true);
    c.new_request();
    EXPECT_NEAR(c.first_rate(deep), 17.0 / 18.0, 1e-12);
    c.reset(4);
    c.record(0, 0, 1.0);
    c.record(4, 0, 1.5, 0);
    EXPECT_EQ(c.choose(4, deep), 4);
}

TEST(NgramIndex, MatchesABruteForceSearchOnRandomText) {
    std::mt19937 g(5);
    const int n_ctx = 3000;
    std::vector<uint8_t> mem(pangu::NgramIndex::bytes(n_ctx, 3));
    pangu::NgramIndex idx;
    idx.init(mem.data(), n_ctx, 3);
    std::vector<int32_t> t;
    for (int i = 0; i < n_ctx; ++i) {
        t.push_back(static_cast<int32_t>(g() % 12));  // small alphabet: many repeats and hash probes
        idx.update(t.data(), t.size());               // one token at a time, as generation does
        if (i % 7) continue;
        int32_t out[4];
        const int n = idx.propose(t.data(), t.size(), 4, out);
        // brute force: longest N in 3..1 whose suffix occurred earlier, most recent occurrence, and the 4
        // tokens after it in the context extended by the draft itself
        int expect = 0, expect_depth = 0;
        int32_t ref[4];
        for (int len = 3; len >= 1 && !expect; --len) {
            if (static_cast<size_t>(len) >= t.size()) continue;
            for (int64_t end = static_cast<int64_t>(t.size()) - 2; end >= len - 1; --end) {
                if (std::equal(t.end() - len, t.end(), t.begin() + end - len + 1)) {
                    // the longest run of the context's last tokens equal to those ending at `end`
                    const int64_t last = static_cast<int64_t>(t.size()) - 1;
                    while (expect_depth < pangu::NgramIndex::kMaxDepth && end - expect_depth >= 0 &&
                           t[end - expect_depth] == t[last - expect_depth])
                        ++expect_depth;
                    std::vector<int32_t> ext = t;
                    for (; expect < 4; ++expect) ext.push_back(ref[expect] = ext[end + 1 + expect]);
                    break;
                }
            }
        }
        ASSERT_EQ(n, expect) << "at " << i;
        for (int j = 0; j < n; ++j) ASSERT_EQ(out[j], ref[j]) << "at " << i;
        int depth = -1;
        idx.propose(t.data(), t.size(), 4, out, &depth);
        ASSERT_EQ(depth, expect_depth) << "at " << i;
    }
}

TEST(SpecController, BacksOffWhenDraftsFailAndProbesAgain) {
    pangu::SpecController c;
    c.reset(4);
    int drafted_steps = 0;
    for (int step = 0; step < 400; ++step) {
        const int k = c.choose(4);
        if (k > 0) ++drafted_steps;
        c.record(k, 0, 1.0 + 0.5 * k);  // every draft rejected; verifying costs more than a plain step
    }
    // A few probes, spaced further and further apart: far fewer than one step in ten drafts.
    EXPECT_GT(drafted_steps, 2);
    EXPECT_LT(drafted_steps, 40);
    // When drafts start being accepted, it drafts the full length again.
    for (int step = 0; step < 200; ++step) {
        const int k = c.choose(4);
        c.record(k, k, 1.0 + 0.1 * k);
    }
    EXPECT_EQ(c.choose(4), 4);
    EXPECT_EQ(c.choose(2), 2);  // never more than the drafts available
    EXPECT_EQ(c.choose(0), 0);
}

TEST(SpecController, ProbesANewSourceAtOnce) {
    // A verification of 2 positions costs 1.35 plain steps (prompt lookup on the 1B shape on the CPU): at the
    // prior's even odds drafting would not pay, so a source is tried the first time it offers drafts in a
    // request, and then drafts on if it was right or waits for its scheduled probes if it was wrong.
    pangu::SpecController c;
    c.reset(4);
    c.record(0, 0, 1.0);  // a plain step
    EXPECT_EQ(c.choose(4, 3), 1);
    c.record(1, 1, 1.35, 3);
    EXPECT_GE(c.choose(4, 3), 1);
    EXPECT_EQ(c.choose(4, 1), 1);
    c.record(1, 0, 1.35, 1);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(c.choose(4, 1), 0) << i;
    // The next request starts over: its text may repeat where the last one's did not.
    c.new_request();
    EXPECT_EQ(c.choose(4, 1), 1);
}

TEST(SpecController, AnUnprovenSourceDraftsOneToken) {
    // Verifying is fairly cheap (the 1B shape on the CPU: 2 positions 1.23 steps, 5 positions 1.52): the
    // prior alone would draft 3 tokens. Until a source has had a draft accepted in the request it
    // drafts one token; once it has, the full length.
    pangu::SpecController c;
    c.reset(4);
    c.record(0, 0, 1.0);
    const double curve[] = {1.23, 1.40, 1.41, 1.52};  // 2..5 positions (source 0, which failed)
    for (int k = 1; k <= 4; ++k) c.record(k, 0, curve[k - 1], 0);
    EXPECT_EQ(c.choose(4, 2), 1);
    c.record(1, 0, 1.23, 2);
    EXPECT_EQ(c.choose(4, 3), 1);
    c.record(1, 1, 1.23, 3);
    EXPECT_EQ(c.choose(4, 3), 4);
    c.new_request();  // proven in the last request, not in this one
    EXPECT_EQ(c.choose(4, 3), 1);
}

TEST(SpecController, WhereVerifyingCostsNextToNothingMoreDraftsDespiteWeakOdds) {
    // A device whose steps are dominated by fixed costs (npu-sim: 5 positions cost 1.01 steps). A failed draft
    // of 4 tokens costs no more than one of 1, so an unproven source drafts the full length; and a source
    // right one time in ten still drafts, where verification costs a real share of a step it does not.
    // A plain step costs 1; verifying 2 and 5 positions `two` and `five` (measured on source 0's failed drafts).
    const auto measured = [](pangu::SpecController &c, double two, double five) {
        c.reset(4);
        c.record(0, 0, 1.0);
        c.record(1, 0, two, 0);
        c.record(4, 0, five, 0);
    };
    pangu::SpecController flat, cpu;
    measured(flat, 1.005, 1.01);
    measured(cpu, 1.23, 1.52);
    EXPECT_EQ(flat.choose(4, 1), 4);
    for (int i = 0; i < 30; ++i) {  // source 1 is right one time in ten
        flat.record(1, i % 10 == 0, 1.005, 1);
        cpu.record(1, i % 10 == 0, 1.23, 1);
    }
    ASSERT_LT(flat.first_rate(1), 0.3);
    int flat_drafts = 0, cpu_drafts = 0;  // of 8 steps; the CPU only probes now and then
    for (int i = 0; i < 8; ++i) {
        flat_drafts += flat.choose(4, 1) > 0;
        cpu_drafts += cpu.choose(4, 1) > 0;
    }
    EXPECT_EQ(flat_drafts, 8);
    EXPECT_LE(cpu_drafts, 3);
}

TEST(SpecController, ASlowMeasurementDoesNotHoldDraftsShortForGood) {
    // One 5-position verification is hit by a burst (4 plain steps instead of 1.8). Believed at first, it
    // would keep the controller from ever drafting 4 tokens again, and so from measuring it again; once it is
    // older than the measurements of smaller batches, what those suggest wins.
    pangu::SpecController c;
    c.reset(4);
    c.record(0, 0, 1.0);
    c.record(1, 1, 1.2, 7);
    c.record(4, 4, 4.0, 7);
    EXPECT_LT(c.choose(4, 7), 4);
    for (int step = 0; step < 100; ++step) {
        const int k = c.choose(4, 7);
        c.record(k, k, 1.0 + 0.2 * k, 7);  // every draft accepted; the true cost of k + 1 positions
    }
    EXPECT_EQ(c.choose(4, 7), 4);
}

TEST(SpecController, DraftModelThatCannotPayStopsProbing) {
    // Every draft is accepted, but drafting a token costs more than a plain step (a draft model as slow as
    // the target, plus catching up): no acceptance could make it pay, so after measuring that it probes
    // only every few hundred steps, and a new request on the session does not measure it all again.
    pangu::SpecController c;
    c.reset(4);
    int drafted = 0;
    for (int step = 0; step < 1000; ++step) {
        const int k = c.choose(4);
        drafted += k > 0;
        c.record(k, k, 1.0 + 0.3 * k, 0, 1.2 * k);
    }
    EXPECT_LE(drafted, 4);
    c.new_request();
    drafted = 0;
    for (int step = 0; step < 400; ++step) {
        const int k = c.choose(4);
        drafted += k > 0;
        c.record(k, k, 1.0 + 0.3 * k, 0, 1.2 * k);
    }
    EXPECT_LE(drafted, 1);
    // A cheap draft of the same quality drafts the full length.
    pangu::SpecController d;
    d.reset(4);
    for (int step = 0; step < 100; ++step) {
        const int k = d.choose(4);
        d.record(k, k, 1.0 + 0.1 * k, 0, 0.1 * k);
    }
    EXPECT_EQ(d.choose(4), 4);
}

TEST(SpecController, KeepsAcceptancePerDraftSource) {
    // Prompt lookup: 3-gram matches are copied text and accepted, 1-gram matches are guesses and rejected.
    // Verifying costs a little per position, as on a memory-bound model.
    pangu::SpecController c;
    c.reset(4);
    int drafted_weak = 0;
    for (int step = 0; step < 300; ++step) {
        const int src = step % 2 ? 3 : 1;
        const int k = c.choose(4, src);
        if (src == 1 && k > 0) ++drafted_weak;
        c.record(k, src == 3 ? k : 0, 1.0 + 0.1 * k, src);
    }
    EXPECT_EQ(c.choose(4, 3), 4);   // the strong source drafts the full length
    EXPECT_LT(drafted_weak, 25);    // the weak one only probes now and then
    EXPECT_GT(c.first_rate(3), 0.9);
    EXPECT_LT(c.first_rate(1), 0.1);
    // A source whose first token is a coin toss but whose copies, once started, continue: longer drafts pay
    // more than a single token would suggest.
    pangu::SpecController d;
    d.reset(4);
    for (int step = 0; step < 400; ++step) {
        const int k = d.choose(4, 2);
        d.record(k, k > 0 && step % 2 ? k : 0, 1.0 + 0.1 * k, 2);
    }
    EXPECT_NEAR(d.first_rate(2), 0.5, 0.2);
    EXPECT_GT(d.next_rate(2), 0.9);
    EXPECT_EQ(d.choose(4, 2), 4);
}

TEST(Speculative, DraftModelAndSelfDraftGreedyAreIdentical) {
    const auto prompts = dev_prompts(12);
    int64_t acc_draft = 0, acc_self = 0, drafted_draft = 0, drafted_self = 0;
    set_always_draft(true);  // exercise verification at every step, whatever the timings
    for (size_t i = 0; i < prompts.size(); ++i) {
        const GenRun off = generate(prompts[i], PANGU_SPEC_OFF, greedy(40));
        const GenRun draft = generate(prompts[i], PANGU_SPEC_DRAFT, greedy(40), 4, i % 2 ? 2 : 1);
        const GenRun self = generate(prompts[i], PANGU_SPEC_SELF, greedy(40), 3);
        EXPECT_EQ(draft.ids, off.ids) << "draft model, prompt " << i;
        EXPECT_EQ(self.ids, off.ids) << "self-draft, prompt " << i;
        EXPECT_EQ(draft.text, off.text);
        acc_draft += draft.stats.n_accepted;
        drafted_draft += draft.stats.n_drafted;
        acc_self += self.stats.n_accepted;
        drafted_self += self.stats.n_drafted;
    }
    set_always_draft(false);
    std::printf("draft model: %lld of %lld accepted; self-draft: %lld of %lld accepted\n", (long long)acc_draft,
                (long long)drafted_draft, (long long)acc_self, (long long)drafted_self);
    EXPECT_GT(drafted_draft, 0);
    EXPECT_GT(acc_draft, 0);
    EXPECT_GT(drafted_self, 0);
}

TEST(Speculative, SelfDraftLayersAreValidated) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.spec_mode = PANGU_SPEC_SELF;
    const int32_t bad_order[] = {0, 3, 2};
    const int32_t out_of_range[] = {0, 6};
    const int32_t ok[] = {0, 1, 5};
    pangu_session *s = nullptr;
    p.self_draft_layers = bad_order;
    p.n_self_draft_layers = 3;
    EXPECT_EQ(pangu_session_create(g_model, &p, &s), PANGU_ERR_INVALID_ARGUMENT);
    p.self_draft_layers = out_of_range;
    p.n_self_draft_layers = 2;
    EXPECT_EQ(pangu_session_create(g_model, &p, &s), PANGU_ERR_INVALID_ARGUMENT);
    // Layers 0 and 1 coincide with the target's first two: their cache rows are the target's own, so this
    // draft needs exactly two layers' worth of cache less than one whose layers all differ from the prefix.
    const int32_t unshared[] = {2, 3, 5};
    pangu_session_memory shared{}, separate{}, off{};
    shared.struct_size = separate.struct_size = off.struct_size = sizeof off;
    p.self_draft_layers = ok;
    p.n_self_draft_layers = 3;
    ASSERT_EQ(pangu_session_estimate(g_model, &p, &shared), PANGU_OK);
    p.self_draft_layers = unshared;
    ASSERT_EQ(pangu_session_estimate(g_model, &p, &separate), PANGU_OK);
    pangu_session_params q = p;
    q.spec_mode = PANGU_SPEC_OFF;
    ASSERT_EQ(pangu_session_estimate(g_model, &q, &off), PANGU_OK);
    const size_t per_layer_kv = off.kv_cache_bytes / 6;
    EXPECT_EQ(separate.arena_bytes - shared.arena_bytes, 2 * per_layer_kv);
    p.self_draft_layers = ok;
    ASSERT_EQ(pangu_session_create(g_model, &p, &s), PANGU_OK);
    pangu_session_free(s);
}

TEST(Speculative, DraftWithAnotherVocabularyIsRefused) {
    // A model whose vocabulary has another size: pangu-gen-model is not needed, the config says so.
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.spec_mode = PANGU_SPEC_DRAFT;
    pangu_session *s = nullptr;
    EXPECT_EQ(pangu_session_create(g_model, &p, &s), PANGU_ERR_INVALID_ARGUMENT);  // no draft given
    EXPECT_NE(std::string(pangu_last_error()).find("draft_model"), std::string::npos);
    // the target as its own draft is fine (same vocabulary)...
    p.draft_model = g_model;
    ASSERT_EQ(pangu_session_create(g_model, &p, &s), PANGU_OK);
    pangu_session_free(s);
    // ...and the bundled model cannot draft for a model with a different vocabulary
    char tmpl[] = "/tmp/pangu_vocab_XXXXXX";
    const std::string dir = mkdtemp(tmpl);
    const std::string cmd = std::string(PANGU_GEN_MODEL_BIN) + " -o " + dir +
                            " --layers 1 --hidden 64 --heads 2 --kv-heads 1 --head-dim 32 --ff 128 --vocab 4100 --untied 2>/dev/null";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
    pangu_model *other = nullptr;
    ASSERT_EQ(pangu_model_load(dir.c_str(), nullptr, &other), PANGU_OK) << pangu_last_error();
    p.draft_model = g_model;
    EXPECT_EQ(pangu_session_create(other, &p, &s), PANGU_ERR_VOCAB_MISMATCH);
    EXPECT_NE(std::string(pangu_last_error()).find("vocabulary"), std::string::npos);
    EXPECT_EQ(s, nullptr);
    pangu_model_free(other);
    std::system(("rm -rf " + dir).c_str());
}

namespace {

// Upper tail of the chi-square distribution, Q(df/2, x/2), by the series and continued fraction of the
// regularized incomplete gamma function.
double chi2_sf(double x, int df) {
    const double a = df / 2.0, z = x / 2.0;
    if (z <= 0) return 1.0;
    const double lg = std::lgamma(a);
    if (z < a + 1) {
        double sum = 1.0 / a, term = sum;
        for (int n = 1; n < 1000; ++n) {
            term *= z / (a + n);
            sum += term;
            if (term < sum * 1e-15) break;
        }
        return 1.0 - sum * std::exp(-z + a * std::log(z) - lg);
    }
    double b = z + 1 - a, c = 1e300, d = 1 / b, h = d;
    for (int i = 1; i < 1000; ++i) {
        const double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (std::fabs(d) < 1e-300) d = 1e-300;
        c = b + an / c;
        if (std::fabs(c) < 1e-300) c = 1e-300;
        d = 1 / d;
        const double del = d * c;
        h *= del;
        if (std::fabs(del - 1) < 1e-15) break;
    }
    return std::exp(-z + a * std::log(z) - lg) * h;
}

// Counts of (second, third) generated token pairs over `runs` seeds, for one speculative mode.
std::map<std::pair<int, int>, int> pair_counts(int mode, int runs, uint64_t seed0) {
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 64;
    p.spec_mode = mode;
    p.spec_draft_len = 3;
    if (mode == PANGU_SPEC_DRAFT) p.draft_model = g_draft;
    pangu_session *s = nullptr;
    EXPECT_EQ(pangu_session_create(g_model, &p, &s), PANGU_OK);
    pangu::from_handle(s)->set_test_hooks(g_hooks);
    pangu_sampling_params sp = greedy(3);
    sp.temperature = 1.0f;
    sp.top_k = 0;
    sp.top_p = 1.0f;
    const auto prompt = tokenize("def ");
    std::map<std::pair<int, int>, int> counts;
    std::vector<int32_t> out;
    auto cb = [](void *u, int32_t t, const char *, size_t) {
        static_cast<std::vector<int32_t> *>(u)->push_back(t);
        return 0;
    };
    for (int r = 0; r < runs; ++r) {
        pangu_session_reset(s);
        out.clear();
        sp.seed = seed0 + r;
        EXPECT_EQ(pangu_session_generate_tokens(s, prompt.data(), prompt.size(), &sp, cb, &out, nullptr), PANGU_OK);
        if (out.size() >= 3) counts[{out[1], out[2]}]++;
    }
    pangu_session_free(s);
    return counts;
}

// p-value of a two-sample chi-square test of homogeneity; categories expected fewer than 5 times are pooled.
double homogeneity_p(const std::map<std::pair<int, int>, int> &a, const std::map<std::pair<int, int>, int> &b) {
    std::map<std::pair<int, int>, std::pair<double, double>> all;
    double na = 0, nb = 0;
    for (const auto &kv : a) {
        all[kv.first].first += kv.second;
        na += kv.second;
    }
    for (const auto &kv : b) {
        all[kv.first].second += kv.second;
        nb += kv.second;
    }
    std::vector<std::pair<double, double>> cats;
    std::pair<double, double> rest{0, 0};
    for (const auto &kv : all) {
        const double tot = kv.second.first + kv.second.second;
        if (tot * std::min(na, nb) / (na + nb) >= 5) cats.push_back(kv.second);
        else {
            rest.first += kv.second.first;
            rest.second += kv.second.second;
        }
    }
    if (rest.first + rest.second > 0) cats.push_back(rest);
    double x2 = 0;
    for (const auto &c : cats) {
        const double tot = c.first + c.second;
        const double ea = tot * na / (na + nb), eb = tot * nb / (na + nb);
        x2 += (c.first - ea) * (c.first - ea) / ea + (c.second - eb) * (c.second - eb) / eb;
    }
    return chi2_sf(x2, static_cast<int>(cats.size()) - 1);
}

}  // namespace

TEST(Speculative, SpeculativeSamplingKeepsTheDistribution) {
    // The second and third tokens come out of a verification step (the first is sampled from the prompt's
    // logits). Their joint distribution with a draft model or a self-draft must match plain sampling.
    const int runs = 1500;
    // Every step must draft, or the verification rule under test would not run at all.
    set_always_draft(true);
    const auto plain = pair_counts(PANGU_SPEC_OFF, runs, 1);
    const auto draft = pair_counts(PANGU_SPEC_DRAFT, runs, 100001);
    const auto self = pair_counts(PANGU_SPEC_SELF, runs, 200001);
    const double p_draft = homogeneity_p(plain, draft), p_self = homogeneity_p(plain, self);
    set_broken_acceptance(true);
    const auto broken = pair_counts(PANGU_SPEC_DRAFT, runs, 300001);
    set_broken_acceptance(false);
    const double p_broken = homogeneity_p(plain, broken);
    set_always_draft(false);
    std::printf("chi-square p-values vs plain sampling: draft %.3f, self-draft %.3f, broken rule %.2g\n", p_draft,
                p_self, p_broken);
    EXPECT_GT(p_draft, 0.01);
    EXPECT_GT(p_self, 0.01);
    EXPECT_LT(p_broken, 0.01);  // the test has the power to see a wrong acceptance rule
}
