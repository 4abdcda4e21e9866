// pangu-prune and pangu-distill on the bundled model (6 layers of MLP width 512, so --align 64): what they write
// (widths, config.json, reports, the weights), that they never change their inputs, their refusals of bad input
// (status 2 for usage errors, 1 for the others, nothing left behind), and distillation's resume and numeric
// stop, through the command line and through the library (tools/train/distill.h). Small calibration and
// training budgets keep the whole program to seconds.
#include <gtest/gtest.h>
#include <json/json.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "checkpoint.h"
#include "cli.h"
#include "common/common.h"
#include "distill.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "pangu/pangu.h"
#include "params.h"
#include "safetensors_writer.h"
#include "dev_text.h"
#include "test_util.h"
#include "train_test_util.h"

namespace fs = std::filesystem;
using namespace pangu;
using namespace pangu::train;
using pangu_test::TempDir;
using pangu_test::expect_error;
using pangu_test::expect_same;

namespace {

const std::string kModel = PANGU_MODEL_DIR;

// ctest runs the tests of this program in parallel processes: each keeps the tools' stderr in a file of its own.
std::string stderr_path() { return "/tmp/pangu_prune_stderr." + std::to_string(getpid()); }

struct Cleanup : ::testing::Environment {
    void TearDown() override { fs::remove(stderr_path()); }
};
const auto *kCleanup = ::testing::AddGlobalTestEnvironment(new Cleanup);

int run_tool(const std::string &bin, const std::string &args, bool quiet = true) {
    const std::string cmd = bin + (quiet ? " --quiet " : " ") + args + " 2>" + stderr_path();
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}
int prune(const std::string &args) { return run_tool(PANGU_PRUNE_BIN, args); }
int distill_cli(const std::string &args) { return run_tool(PANGU_DISTILL_BIN, args); }

std::string last_stderr() {
    std::ifstream f(stderr_path());
    return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string bytes_of(const fs::path &f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every file of a directory (not recursive) with its bytes: what "left untouched" compares.
std::map<std::string, std::string> snapshot(const fs::path &dir) {
    std::map<std::string, std::string> s;
    for (const auto &e : fs::directory_iterator(dir))
        s[e.path().filename().string()] = e.is_regular_file() ? bytes_of(e.path()) : std::string("<dir>");
    return s;
}

Json::Value json_of(const fs::path &f) {
    Json::Value v;
    std::ifstream in(f);
    in >> v;
    return v;
}

std::unique_ptr<Model> load(const fs::path &dir) { return Model::load(dir.string(), ModelLoadOptions{}); }

const Model &tiny() {
    static std::unique_ptr<Model> m = load(kModel);
    return *m;
}

std::vector<int> widths_of(const Model &m) {
    std::vector<int> w;
    for (const auto &L : m.layers) w.push_back(L.n_ff);
    return w;
}

int total(const std::vector<int> &w) {
    int n = 0;
    for (int x : w) n += x;
    return n;
}

// A few documents of dev.jsonl (every 40th, each cut to about 1500 bytes): calibration, training and held-out
// text for runs of a few hundred tokens.
std::string small_jsonl(const fs::path &dir) {
    return pangu_test::cut_jsonl(dir, "small.jsonl", [](int i) { return i % 40 == 0; }, 1500);
}

// Entries of `dir` whose name holds `part`.
int entries_with(const fs::path &dir, const std::string &part) {
    int n = 0;
    for (const auto &e : fs::directory_iterator(dir)) n += e.path().filename().string().find(part) != std::string::npos;
    return n;
}

// What a refused run must leave under `dir`: nothing named "out..." (the output, its .state, a .partial-PID).
void expect_no_output(const fs::path &dir, const std::string &what) {
    for (const auto &e : fs::directory_iterator(dir)) {
        const std::string name = e.path().filename().string();
        EXPECT_EQ(name.find("out"), std::string::npos) << what << ": " << e.path();
        EXPECT_EQ(name.find(".partial"), std::string::npos) << what << ": " << e.path();
    }
}

// Runs that must be refused: the arguments and the words their message must hold.
using Refusals = std::vector<std::pair<std::string, std::string>>;

// Each case exits with `status`, says its words on stderr and leaves no output under `dir`.
void expect_refused(int (*tool)(const std::string &), const Refusals &cases, int status, const fs::path &dir) {
    for (const auto &c : cases) {
        EXPECT_EQ(tool(c.first), status) << c.first << ": " << last_stderr();
        EXPECT_NE(last_stderr().find(c.second), std::string::npos) << c.first << ": " << last_stderr();
        expect_no_output(dir, c.first);
    }
}

// The bytes of one tensor of a checkpoint directory.
std::string tensor_bytes(const fs::path &dir, const std::string &name) {
    TensorStore st;
    st.open_dir(dir.string(), MapOptions{});
    const TensorInfo *t = st.find(name);
    if (!t) return "<missing>";
    return std::string(static_cast<const char *>(t->data), t->nbytes);
}

// A copy of the bundled model with every element of tensor `name` set to `value` (a bf16 bit pattern).
void write_variant(const fs::path &dir, const std::string &name, uint16_t value) {
    fs::create_directories(dir);
    for (const char *f : {"config.json", "tokenizer.model", "tokenizer_config.json"})
        fs::copy_file(fs::path(kModel) / f, dir / f);
    SafetensorsWriter w;
    std::vector<uint16_t> patched;
    for (const auto &kv : tiny().store.tensors()) {
        const TensorInfo &t = kv.second;
        if (kv.first != name) {
            w.add_copy(kv.first, t.dtype, t.shape, t.data);
            continue;
        }
        ASSERT_EQ(t.dtype, DType::BF16);
        patched.assign(t.nbytes / 2, value);
        w.add_copy(kv.first, t.dtype, t.shape, patched.data());
    }
    ASSERT_FALSE(patched.empty()) << name;
    w.write((dir / "model.safetensors").string());
}

// ---- tokenizer.model, read as protobuf wire format: ModelProto field 1 holds the pieces, each a message whose
// field 1 is the piece's text ----

uint64_t varint(const std::string &b, size_t &i) {
    uint64_t r = 0;
    for (int s = 0; i < b.size(); s += 7) {
        const auto x = static_cast<uint8_t>(b[i++]);
        r |= static_cast<uint64_t>(x & 0x7f) << s;
        if (x < 0x80) break;
    }
    return r;
}

// Where each piece's text starts in the file, and its length.
std::vector<std::pair<size_t, size_t>> piece_spans(const std::string &b) {
    std::vector<std::pair<size_t, size_t>> out;
    size_t i = 0;
    while (i < b.size()) {
        const uint64_t tag = varint(b, i);
        switch (tag & 7) {
        case 0: varint(b, i); break;
        case 1: i += 8; break;
        case 5: i += 4; break;
        case 2: {
            const size_t len = varint(b, i);
            if ((tag >> 3) == 1) {
                size_t j = i;
                if (varint(b, j) == (1 << 3 | 2)) {
                    const size_t plen = varint(b, j);
                    out.push_back({j, plen});
                }
            }
            i += len;
            break;
        }
        default: throw std::runtime_error("tokenizer.model: unexpected wire type");
        }
    }
    return out;
}

// A copy of the bundled model whose tokenizer has pieces a and b (of one length) swapped: the same size, ids
// a and b mean other text.
void write_swapped_tokenizer(const fs::path &dir, int a, int b) {
    fs::create_directories(dir);
    for (const char *f : {"config.json", "model.safetensors", "tokenizer_config.json"})
        fs::copy_file(fs::path(kModel) / f, dir / f);
    std::string t = bytes_of(fs::path(kModel) / "tokenizer.model");
    const auto spans = piece_spans(t);
    ASSERT_EQ(spans.size(), 4096u);
    const auto pa = spans[static_cast<size_t>(a)], pb = spans[static_cast<size_t>(b)];
    ASSERT_EQ(pa.second, pb.second);
    ASSERT_NE(t.substr(pa.first, pa.second), t.substr(pb.first, pb.second));
    const std::string sa = t.substr(pa.first, pa.second);
    t.replace(pa.first, pa.second, t.substr(pb.first, pb.second));
    t.replace(pb.first, pb.second, sa);
    std::ofstream(dir / "tokenizer.model", std::ios::binary) << t;
}

// ---- a child process that can be killed ----

// Starts `cmd` through the shell (exec, so the pid is the tool's) with stderr to `err`.
pid_t spawn(const std::string &cmd, const std::string &err) {
    const pid_t pid = fork();
    if (pid == 0) {
        const std::string full = "exec " + cmd + " 2>" + err;
        execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char *>(nullptr));
        _exit(127);
    }
    return pid;
}

}  // namespace

// ---- pangu-prune ----

// Taylor scores in two rounds on a small calibration set: the widths, the written model (loaded by the
// runtime, its kept neurons the original's), config.json's "pruning", the report, and the input unchanged.
TEST(Prune, TaylorInTwoRounds) {
    TempDir t("pangu_prune");
    const std::string text = small_jsonl(t.path);
    const auto before = snapshot(kModel);
    const fs::path out = t.path / "out", report = t.path / "report.json";
    ASSERT_EQ(prune("-i " + kModel + " -o " + out.string() + " --calib " + text +
                    " --ratio 0.25 --rounds 2 --align 64 --score taylor --calib-tokens 512 --calib-ctx 64 --eval " + text +
                    " --eval-tokens 256 --report " + report.string()),
              0)
        << last_stderr();

    const auto m = load(out);
    const std::vector<int> w = widths_of(*m);
    ASSERT_EQ(w.size(), 6u);
    for (size_t l = 0; l < w.size(); ++l) {
        EXPECT_EQ(w[l] % 64, 0) << "layer " << l << ": " << w[l];
        EXPECT_GE(w[l], 128) << "layer " << l << " below the default floor, a quarter of 512";
        EXPECT_LE(w[l], 512) << "layer " << l;
    }
    EXPECT_EQ(total(w), 2304) << "0.75 * 3072";

    // Each layer's neurons are the original's rows of gate and up and columns of down, in their order.
    const Params<float> orig = load_params(tiny()), got = load_params(*m);
    for (size_t l = 0; l < w.size(); ++l) {
        const LayerParams<float> &A = orig.layers[l], &B = got.layers[l];
        Eigen::Index j = 0;
        for (Eigen::Index k = 0; k < B.w_gate.rows(); ++k, ++j) {
            while (j < A.w_gate.rows() && A.w_gate.row(j) != B.w_gate.row(k)) ++j;
            ASSERT_LT(j, A.w_gate.rows()) << "layer " << l << ": neuron " << k << " is no original gate row";
            EXPECT_TRUE(A.w_up.row(j) == B.w_up.row(k)) << "layer " << l << " neuron " << k;
            EXPECT_TRUE(A.w_down.col(j) == B.w_down.col(k)) << "layer " << l << " neuron " << k;
        }
        EXPECT_TRUE(A.wq == B.wq) << "layer " << l << ": attention is not pruned";
    }
    EXPECT_TRUE(orig.embed == got.embed);
    EXPECT_TRUE(orig.head == got.head);

    // config.json
    const Json::Value cfg = json_of(out / "config.json");
    EXPECT_EQ(cfg["pruning"]["method"].asString(), "taylor");
    EXPECT_EQ(cfg["pruning"]["ratio"].asDouble(), 0.25);
    EXPECT_EQ(cfg["pruning"]["removed"].asDouble(), 0.25);
    EXPECT_EQ(cfg["pruning"]["rounds"].asInt(), 2);
    EXPECT_EQ(cfg["pruning"]["align"].asInt(), 64);
    EXPECT_EQ(cfg["pruning"]["original_intermediate_size"].asInt(), 512);
    EXPECT_EQ(cfg["intermediate_size"].asInt(), *std::max_element(w.begin(), w.end()));

    // The report: both rounds' widths on the linear schedule, perplexity before and after every round.
    const Json::Value r = json_of(report);
    EXPECT_EQ(r["score"].asString(), "taylor");
    EXPECT_EQ(r["calibration_tokens"].asInt(), 512);
    ASSERT_EQ(r["round"].size(), 2u) << r;
    const int want[2] = {2688, 2304};  // 12.5 % and 25 % of 3072, both whole units of 64
    std::vector<int> prev(6, 512);
    for (int k = 0; k < 2; ++k) {
        const Json::Value &R = r["round"][k];
        EXPECT_EQ(R["round"].asInt(), k + 1);
        EXPECT_EQ(R["target_width"].asInt(), want[k]);
        EXPECT_EQ(R["width"].asInt(), want[k]);
        ASSERT_EQ(R["widths"].size(), 6u);
        ASSERT_EQ(R["layers"].size(), 6u);
        int sum = 0;
        for (Json::ArrayIndex l = 0; l < 6; ++l) {
            const int wl = R["widths"][l].asInt();
            sum += wl;
            EXPECT_EQ(wl % 64, 0);
            EXPECT_LE(wl, prev[l]) << "a layer never widens";
            EXPECT_EQ(R["layers"][l]["width_before"].asInt(), prev[l]);
            EXPECT_EQ(R["layers"][l]["width"].asInt(), wl);
            const double share = R["layers"][l]["removed_score_share"].asDouble();
            EXPECT_GE(share, 0.0);
            EXPECT_LT(share, 1.0);
            if (wl == prev[l]) {
                EXPECT_EQ(share, 0.0) << "round " << k + 1 << " layer " << l;
            }
            prev[l] = wl;
        }
        EXPECT_EQ(sum, want[k]);
        ASSERT_TRUE(R["perplexity"].isDouble()) << R;
        EXPECT_TRUE(std::isfinite(R["perplexity"].asDouble()));
        EXPECT_GT(R["perplexity"].asDouble(), 1.0);
    }
    EXPECT_EQ(prev, w) << "the last round's widths are the model's";
    for (Json::ArrayIndex l = 0; l < 6; ++l) EXPECT_EQ(r["widths"][l].asInt(), w[l]);
    EXPECT_GT(r["perplexity_before"].asDouble(), 1.0);
    // The last round's perplexity is the written model's (pruning only selects bf16 values: saving is exact).
    const Windows eval = cli::read_windows(*m, text, false, 64, 256);
    const double tol = 1e-6 * r["perplexity_before"].asDouble();
    EXPECT_NEAR(perplexity(got, eval, 8), r["round"][1]["perplexity"].asDouble(), tol);
    EXPECT_NEAR(perplexity(orig, eval, 8), r["perplexity_before"].asDouble(), tol);

    // The runtime runs it.
    pangu_model *pm = nullptr;
    ASSERT_EQ(pangu_model_load(out.c_str(), nullptr, &pm), PANGU_OK) << pangu_last_error();
    pangu_session *s = nullptr;
    ASSERT_EQ(pangu_session_create(pm, nullptr, &s), PANGU_OK);
    const std::vector<int32_t> ids = {1, 300, 301, 302, 303, 304, 305, 306};
    std::vector<float> logits(ids.size() * 4096);
    EXPECT_EQ(pangu_session_eval(s, ids.data(), ids.size(), logits.data()), PANGU_OK);
    for (float z : logits) ASSERT_TRUE(std::isfinite(z));
    pangu_session_free(s);
    pangu_model_free(pm);

    EXPECT_EQ(entries_with(t.path, ".partial"), 0);
    EXPECT_TRUE(snapshot(kModel) == before) << "the input directory changed";
}

// Magnitude needs no calibration text; within a layer, every removed neuron scores no more than every kept
// one. Wanda, and --spread uniform (every layer the same width), and distillation between rounds.
TEST(Prune, MagnitudeWandaAndUniformSpread) {
    TempDir t("pangu_prune");
    const std::string text = small_jsonl(t.path);
    const std::string base = "-i " + kModel + " --ratio 0.25 --rounds 1 --align 64 ";

    const fs::path mag = t.path / "magnitude";
    ASSERT_EQ(prune(base + "--score magnitude -o " + mag.string()), 0) << last_stderr();
    EXPECT_EQ(total(widths_of(*load(mag))), 2304);
    EXPECT_EQ(json_of(mag / "config.json")["pruning"]["method"].asString(), "magnitude");
    const Params<float> orig = load_params(tiny()), got = load_params(*load(mag));
    for (size_t l = 0; l < 6; ++l) {
        const LayerParams<float> &A = orig.layers[l], &B = got.layers[l];
        std::vector<bool> kept(512, false);
        Eigen::Index j = 0;
        for (Eigen::Index k = 0; k < B.w_gate.rows(); ++k, ++j) {
            while (j < 512 && A.w_gate.row(j) != B.w_gate.row(k)) ++j;
            ASSERT_LT(j, 512);
            kept[static_cast<size_t>(j)] = true;
        }
        double kept_min = 1e300, removed_max = 0;
        for (Eigen::Index n = 0; n < 512; ++n) {
            const double s = A.w_gate.row(n).cast<double>().cwiseAbs().sum() + A.w_up.row(n).cast<double>().cwiseAbs().sum() +
                             A.w_down.col(n).cast<double>().cwiseAbs().sum();
            if (kept[static_cast<size_t>(n)])
                kept_min = std::min(kept_min, s);
            else
                removed_max = std::max(removed_max, s);
        }
        EXPECT_LE(removed_max, kept_min) << "layer " << l;
    }

    const fs::path wanda = t.path / "wanda";
    ASSERT_EQ(prune(base + "--score wanda --calib " + text + " --calib-tokens 512 --calib-ctx 64 -o " + wanda.string()), 0)
        << last_stderr();
    const std::vector<int> ww = widths_of(*load(wanda));
    EXPECT_EQ(total(ww), 2304);
    for (int x : ww) EXPECT_EQ(x % 64, 0);
    EXPECT_EQ(json_of(wanda / "config.json")["pruning"]["method"].asString(), "wanda");

    const fs::path uni = t.path / "uniform";
    ASSERT_EQ(prune(base + "--score magnitude --spread uniform -o " + uni.string()), 0) << last_stderr();
    EXPECT_EQ(widths_of(*load(uni)), std::vector<int>(6, 384));

    // Two steps of distillation from the unpruned model after the round: reported, and the weights moved off
    // the original's (the attention, which pruning leaves alone).
    const fs::path dist = t.path / "distilled", report = t.path / "report.json";
    ASSERT_EQ(prune(base + "--score magnitude --spread uniform --distill-steps 2 --batch 1 --lr 1e-3 --calib " + text +
                    " --calib-tokens 512 --calib-ctx 64 --report " + report.string() + " -o " + dist.string()),
              0)
        << last_stderr();
    EXPECT_EQ(widths_of(*load(dist)), std::vector<int>(6, 384));
    EXPECT_EQ(json_of(dist / "config.json")["pruning"]["distill_steps_per_round"].asInt(), 2);
    EXPECT_EQ(json_of(report)["round"][0]["distill_steps"].asInt(), 2);
    EXPECT_TRUE(std::isfinite(json_of(report)["round"][0]["distill_last_kl"].asDouble()));
    EXPECT_NE(tensor_bytes(dist, "model.layers.0.self_attn.q_proj.weight"),
              tensor_bytes(kModel, "model.layers.0.self_attn.q_proj.weight"));
    EXPECT_EQ(tensor_bytes(uni, "model.layers.0.self_attn.q_proj.weight"),
              tensor_bytes(kModel, "model.layers.0.self_attn.q_proj.weight"));
}

// Every refusal: a clear message, status 2 (usage) or 1, no output, no .partial, the input unchanged.
TEST(Prune, BadInput) {
    TempDir t("pangu_prune");
    const std::string text = small_jsonl(t.path);
    const auto before = snapshot(kModel);
    const std::string out = (t.path / "out").string();
    const std::string io = " -i " + kModel + " -o " + out + " --calib " + text + " --calib-tokens 512 --calib-ctx 64";
    const std::string ok = " --ratio 0.25 --align 64";
    const Refusals usage = {
        {"--ratio 0" + io, "--ratio takes a share of the neurons in (0, 1), not '0'"},
        {"--ratio 1" + io, "not '1'"},
        {"--ratio 1.5" + io, "not '1.5'"},
        {"--ratio -0.1" + io, "not '-0.1'"},
        {"--ratio abc" + io, "not 'abc'"},
        {"--ratio 0.25 --align 0" + io, "--align takes a positive number of neurons, not '0'"},
        {"--rounds 0" + ok + io, "--rounds takes 1 to 100 rounds, not '0'"},
        {"--score fisher" + ok + io, "--score takes taylor, magnitude or wanda, not 'fisher'"},
        {"--spread even" + ok + io, "--spread takes global or uniform, not 'even'"},
        {"--calib-ctx 1" + ok + io, "--calib-ctx takes a window of at least 2 tokens"},
        {ok + io + " --calib-tokens 32", "--calib-tokens 32 is less than one window of --calib-ctx 64"},
        {ok + " -i " + kModel + " -o " + out + " --score taylor", "--calib FILE is required"},
        {ok + " -i " + kModel + " -o " + out + " --score wanda", "--calib FILE is required"},
        {ok + " -i " + kModel + " -o " + out + " --score magnitude --distill-steps 2", "--calib FILE is required"},
        {"--align 64 -i " + kModel + " -o " + out, "-i IN, -o OUT and --ratio R are required"},
        {ok + " -o " + out, "-i IN, -o OUT and --ratio R are required"},
        {ok + io + " --bogus 1", "unknown option '--bogus'"},
        {ok + io + " --rounds", "unknown or incomplete option '--rounds'"},
    };
    expect_refused(prune, usage, 2, t.path);

    // A w8a16 copy of the bundled model, by the converter.
    const fs::path q8 = t.path / "q8";
    ASSERT_EQ(run_tool(PANGU_QUANTIZE_BIN, "--scheme w8a16 -i " + kModel + " -o " + q8.string()), 0) << last_stderr();
    const auto q8_before = snapshot(q8);
    const std::string empty = (t.path / "empty.txt").string(), blank = (t.path / "blank.jsonl").string(),
                      no_text = (t.path / "no_text.jsonl").string();
    std::ofstream(empty).close();
    std::ofstream(blank) << "\n  \n\n";
    std::ofstream(no_text) << "{\"text\": \"\"}\n";
    const Refusals runtime = {
        {"--ratio 0.25 --align 1024" + io, "--align 1024 is larger than layer 0's width 512"},
        {ok + " --score magnitude -i " + q8.string() + " -o " + out, "q8 is quantized (w8a16)"},
        {ok + " -i " + kModel + " -o " + out + " --calib " + empty, "empty.txt: holds no text"},
        {ok + " -i " + kModel + " -o " + out + " --calib " + blank, "blank.jsonl: holds no text"},
        {ok + " -i " + kModel + " -o " + out + " --calib " + no_text, "no_text.jsonl: holds no text"},
        {ok + " -i " + kModel + " -o " + out + " --calib " + (t.path / "none.txt").string(), "none.txt is not a file"},
        {ok + io + " --eval " + (t.path / "none.jsonl").string(), "none.jsonl is not a file"},
        {ok + io + " --report " + (t.path / "no/report.json").string(), "--report: " + (t.path / "no").string() + " is not a directory"},
        {ok + " -i " + (t.path / "nothing").string() + " -o " + out + " --score magnitude", "config.json"},
        {"--ratio 0.01 --align 64" + io, "--ratio 0.01 removes less than half of one --align 64 unit of neurons: nothing was removed"},
        {"--ratio 0.01 --align 64 --spread uniform" + io, "nothing was removed"},
    };
    expect_refused(prune, runtime, 1, t.path);

    // An existing output is kept unless --force; with it, replaced.
    fs::create_directories(out);
    std::ofstream(out + "/keep") << "x";
    EXPECT_EQ(prune(ok + " --score magnitude -i " + kModel + " -o " + out), 1);
    EXPECT_NE(last_stderr().find(out + " exists; use --force to replace it"), std::string::npos) << last_stderr();
    EXPECT_TRUE(fs::exists(out + "/keep"));
    EXPECT_EQ(bytes_of(out + "/keep"), "x");
    EXPECT_EQ(prune(ok + " --score magnitude --force -i " + kModel + " -o " + out + "/"), 0) << last_stderr();
    EXPECT_FALSE(fs::exists(out + "/keep"));
    EXPECT_EQ(total(widths_of(*load(out))), 2304);
    EXPECT_EQ(entries_with(t.path, ".partial"), 0);
    EXPECT_EQ(entries_with(t.path, ".old"), 0);

    EXPECT_TRUE(snapshot(kModel) == before) << "the input directory changed";
    EXPECT_TRUE(snapshot(q8) == q8_before) << "the quantized input changed";
}

// ---- pangu-distill ----

// A pruned student distilled for three steps: it loads with the student's widths, its config.json keeps the
// student's "pruning" and adds "distillation", its weights moved, the inputs are unchanged, and the state
// file written during the run is gone at the end.
TEST(Distill, TrainsAPrunedStudent) {
    TempDir t("pangu_distill");
    const std::string text = small_jsonl(t.path);
    const fs::path student = t.path / "student", out = t.path / "out", report = t.path / "report.json";
    ASSERT_EQ(prune("-i " + kModel + " -o " + student.string() + " --ratio 0.25 --rounds 1 --align 64 --score magnitude"), 0)
        << last_stderr();
    const auto teacher_before = snapshot(kModel), student_before = snapshot(student);
    ASSERT_EQ(distill_cli("--teacher " + kModel + " --student " + student.string() + " -o " + out.string() + " --data " +
                          text + " --steps 3 --batch 1 --seq 64 --lr 1e-3 --save-every 1 --eval " + text +
                          " --eval-tokens 256 --report " + report.string()),
              0)
        << last_stderr();

    const auto m = load(out);
    EXPECT_EQ(widths_of(*m), widths_of(*load(student)));
    const Json::Value cfg = json_of(out / "config.json");
    EXPECT_EQ(cfg["pruning"]["method"].asString(), "magnitude") << "the student's config carries over";
    const Json::Value &d = cfg["distillation"];
    ASSERT_TRUE(d.isObject()) << cfg;
    EXPECT_EQ(d["teacher"].asString(), "pangu-tiny");
    EXPECT_EQ(d["student"].asString(), "student");
    EXPECT_EQ(d["steps"].asInt(), 3);
    EXPECT_EQ(d["seq"].asInt(), 64);
    EXPECT_EQ(d["batch"].asInt(), 1);
    EXPECT_EQ(d["lr"].asDouble(), 1e-3);
    EXPECT_FALSE(d.isMember("data"));

    for (const char *name : {"model.layers.0.mlp.up_proj.weight", "model.layers.5.self_attn.o_proj.weight", "lm_head.weight"})
        EXPECT_NE(tensor_bytes(out, name), tensor_bytes(student, name)) << name << " did not change";

    const Json::Value r = json_of(report);
    EXPECT_EQ(r["steps"].asInt(), 3);
    EXPECT_EQ(r["resumed_from"].asInt(), 0);
    EXPECT_TRUE(std::isfinite(r["last_loss"].asDouble()));
    EXPECT_GT(r["perplexity_start"].asDouble(), 1.0);
    ASSERT_EQ(r["perplexity"].size(), 1u) << r;
    EXPECT_EQ(r["perplexity"][0]["step"].asInt(), 3);
    EXPECT_TRUE(std::isfinite(r["perplexity"][0]["ppl"].asDouble()));

    EXPECT_FALSE(fs::exists(out.string() + ".state")) << "the finished run's state is removed";
    EXPECT_EQ(entries_with(t.path, ".partial"), 0);
    EXPECT_TRUE(snapshot(kModel) == teacher_before);
    EXPECT_TRUE(snapshot(student) == student_before);
}

// distill() directly: a run stopped after step 3 (the progress callback throws, as a crash would) and resumed
// from its state (written at step 2) ends with the parameters of a run that never stopped, bit for bit.
TEST(Distill, ResumedRunEqualsUninterruptedRun) {
    TempDir t("pangu_distill");
    const Windows train = cli::read_windows(tiny(), small_jsonl(t.path), false, 64, SIZE_MAX);
    ASSERT_GT(train.size(), 4u);
    DistillOptions o;
    o.steps = 4, o.batch = 1, o.lr = 1e-3, o.save_every = 2;
    Json::Value meta;
    meta["run"] = "resume test";

    Params<float> a = load_params(tiny());
    o.state_path = (t.path / "a.state").string();
    const DistillResult ra = distill(tiny(), a, train, Windows{}, o, meta, nullptr);
    EXPECT_EQ(ra.steps_done, 4);
    EXPECT_EQ(ra.resumed_from, 0);
    EXPECT_TRUE(a.layers[0].w_up != load_params(tiny()).layers[0].w_up) << "no training happened";

    Params<float> b = load_params(tiny());
    o.state_path = (t.path / "b.state").string();
    int64_t last = 0;
    EXPECT_THROW(distill(tiny(), b, train, Windows{}, o, meta, nullptr,
                         [&](const DistillProgress &p) {
                             last = p.step;
                             if (p.step == 3) throw std::runtime_error("simulated crash");
                         }),
                 std::runtime_error);
    EXPECT_EQ(last, 3);
    const Shape shape = shape_of(tiny());
    TrainState sb = load_state(o.state_path, shape, o.train);
    EXPECT_EQ(sb.step, 2);
    EXPECT_EQ(sb.meta, meta);
    // The uninterrupted run wrote the same state at step 2 (and none at its last step).
    const TrainState sa = load_state((t.path / "a.state").string(), shape, o.train);
    EXPECT_EQ(sa.step, 2);
    expect_same(sa.params, sb.params);
    EXPECT_TRUE(sa.m == sb.m);
    EXPECT_TRUE(sa.v == sb.v);

    Params<float> c = std::move(sb.params);
    int64_t first = 0;
    const DistillResult rc = distill(tiny(), c, train, Windows{}, o, meta, &sb, [&](const DistillProgress &p) {
        if (!first) first = p.step;
    });
    EXPECT_EQ(first, 3) << "the resumed run starts at step 3";
    EXPECT_EQ(rc.resumed_from, 2);
    EXPECT_EQ(rc.steps_done, 4);
    expect_same(c, a);
}

// Through the command line: a run killed after its first state file, resumed with --resume, writes the model
// an uninterrupted run writes, byte for byte. --resume without a state, a state without --resume, and a state
// of other settings are refused, the state kept.
TEST(Distill, ResumeFromTheCommandLine) {
    TempDir t("pangu_distill");
    const std::string text = small_jsonl(t.path);
    const std::string run = " --teacher " + kModel + " --student " + kModel + " --data " + text +
                            " --steps 8 --batch 1 --seq 64 --lr 1e-3 --save-every 2";
    const fs::path whole = t.path / "whole", out = t.path / "out";
    const std::string state = out.string() + ".state";

    EXPECT_EQ(distill_cli(run + " -o " + out.string() + " --resume"), 1);
    EXPECT_NE(last_stderr().find("--resume: there is no " + state), std::string::npos) << last_stderr();
    expect_no_output(t.path, "--resume without a state");

    ASSERT_EQ(distill_cli(run + " -o " + whole.string()), 0) << last_stderr();

    // The interrupted run: killed as soon as its first state is in place (steps 3 to 8 take a while longer).
    const pid_t pid = spawn(std::string(PANGU_DISTILL_BIN) + " --quiet" + run + " -o " + out.string(), stderr_path());
    ASSERT_GT(pid, 0);
    bool ended = false;
    const auto t0 = std::chrono::steady_clock::now();
    while (!fs::exists(state) && !ended && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60)) {
        int st = 0;
        ended = waitpid(pid, &st, WNOHANG) == pid;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!ended) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
    }
    ASSERT_FALSE(ended) << "the run ended before it was killed: " << last_stderr();
    ASSERT_TRUE(fs::exists(state));
    ASSERT_FALSE(fs::exists(out));
    // A killed save may leave its temporary file; it is not the state.
    for (const auto &e : fs::directory_iterator(t.path))
        if (e.path().filename().string().find(".partial") != std::string::npos) fs::remove(e.path());
    const std::string saved = bytes_of(state);

    const Refusals refused = {
        {run + " -o " + out.string(), state + " holds an interrupted run: --resume to continue it"},
        {run + " -o " + out.string() + " --resume --lr 2e-3", state + " was written by a run with another lr (0.001, now 0.002)"},
        {run + " -o " + out.string() + " --resume --seed 2", "another seed (1, now 2)"},
        {run + " -o " + out.string() + " --resume --train mlp", "a state training \"all\" tensors, this run trains \"mlp\""},
        {run + " -o " + out.string() + " --resume --data-tokens 600", "another data_tokens (-1, now 600)"},
    };
    for (const auto &c : refused) {
        EXPECT_EQ(distill_cli(c.first), 1) << c.first;
        EXPECT_NE(last_stderr().find(c.second), std::string::npos) << c.first << ": " << last_stderr();
        EXPECT_FALSE(fs::exists(out)) << c.first;
        EXPECT_EQ(bytes_of(state), saved) << c.first << ": the state changed";
    }

    const std::string report = (t.path / "report.json").string();
    ASSERT_EQ(distill_cli(run + " -o " + out.string() + " --resume --report " + report), 0) << last_stderr();
    EXPECT_GE(json_of(report)["resumed_from"].asInt(), 2);
    EXPECT_EQ(json_of(report)["steps"].asInt(), 8);
    EXPECT_EQ(bytes_of(out / "model.safetensors"), bytes_of(whole / "model.safetensors"))
        << "the resumed run's model is not the uninterrupted run's";
    EXPECT_EQ(bytes_of(out / "config.json"), bytes_of(whole / "config.json"));
    EXPECT_FALSE(fs::exists(state));
    EXPECT_EQ(entries_with(t.path, ".partial"), 0);
}

// distill() directly: a weight set to NaN after step 3 makes step 4's loss NaN; the error names the step and
// the last state written (step 2), which is still a good state.
TEST(Distill, NonFiniteLossNamesTheStepAndTheLastCheckpoint) {
    TempDir t("pangu_distill");
    const Windows train = cli::read_windows(tiny(), small_jsonl(t.path), false, 64, SIZE_MAX);
    DistillOptions o;
    o.steps = 6, o.batch = 1, o.lr = 1e-3, o.save_every = 2;
    o.state_path = (t.path / "run.state").string();
    Params<float> s = load_params(tiny());
    expect_error(
        [&] {
            distill(tiny(), s, train, Windows{}, o, Json::Value(), nullptr, [&](const DistillProgress &p) {
                if (p.step == 3) s.layers[2].w_up(7, 11) = std::nanf("");
            });
        },
        PANGU_ERR_NUMERIC, {"step 4: the loss is not finite", o.state_path + " (step 2)"});
    const TrainState st = load_state(o.state_path, shape_of(tiny()), o.train);
    EXPECT_EQ(st.step, 2);
    EXPECT_FALSE(std::isnan(st.params.layers[2].w_up(7, 11)));

    // Before any state: "none written".
    Params<float> s2 = load_params(tiny());
    s2.layers[0].w_gate(0, 0) = std::numeric_limits<float>::infinity();
    o.state_path = (t.path / "never.state").string();
    expect_error([&] { distill(tiny(), s2, train, Windows{}, o, Json::Value(), nullptr); }, PANGU_ERR_NUMERIC,
                 {"step 1: the loss is not finite", "none written"});
    EXPECT_FALSE(fs::exists(o.state_path));
}

// Through the command line: a student whose final norm weights are 3e38 (finite in bf16, so it loads) has a
// loss that is not finite at step 1: status 1, the step named, nothing written.
TEST(Distill, NonFiniteLossFromTheCommandLine) {
    TempDir t("pangu_distill");
    const std::string text = small_jsonl(t.path);
    const fs::path huge = t.path / "huge";
    write_variant(huge, "model.norm.weight", 0x7F62);  // bf16 of 3e38
    const auto before = snapshot(huge);
    EXPECT_EQ(distill_cli("--teacher " + kModel + " --student " + huge.string() + " -o " + (t.path / "out").string() +
                          " --data " + text + " --steps 3 --batch 1 --seq 64 --save-every 1"),
              1);
    EXPECT_NE(last_stderr().find("step 1: the loss is not finite; the last good checkpoint: none written"), std::string::npos)
        << last_stderr();
    expect_no_output(t.path, "a loss that is not finite");
    EXPECT_TRUE(snapshot(huge) == before);
}

// Every refusal of pangu-distill: status, message, nothing left behind.
TEST(Distill, BadInput) {
    TempDir t("pangu_distill");
    const std::string text = small_jsonl(t.path);
    const std::string out = (t.path / "out").string();
    const std::string tiny_dir = kModel;
    const std::string run = " --data " + text + " -o " + out + " --steps 3 --batch 1 --seq 64";
    const std::string both = " --teacher " + tiny_dir + " --student " + tiny_dir;
    const Refusals usage = {
        {both + run + " --lr 0", "--lr takes a learning rate in (0, 1], not '0'"},
        {both + run + " --lr abc", "--lr takes a learning rate in (0, 1], not 'abc'"},
        {both + run + " --lr 2", "not '2'"},
        {both + run + " --steps 0", "--steps takes a positive whole number, not '0'"},
        {both + run + " --steps -3", "not '-3'"},
        {both + run + " --temp 0", "--temp takes a temperature in (0, 100], not '0'"},
        {both + run + " --seq 1", "--seq takes a window of at least 2 tokens, not '1'"},
        {both + run + " --batch 0", "--batch takes a positive number of windows, not '0'"},
        {both + run + " --train foo", "--train takes all, layers or mlp, not 'foo'"},
        {both + run + " --warmup 4", "--warmup 4 is more than --steps"},
        {both + run + " --eval-every 2", "--eval-every needs --eval FILE"},
        {both + run + " --save-every 0", "--save-every takes a positive number of steps"},
        {both + run + " --ce-weight -1", "--ce-weight takes a weight >= 0"},
        {" --student " + tiny_dir + run, "--teacher DIR, --student DIR, -o OUT and --data FILE are required"},
        {" --teacher " + tiny_dir + run, "are required"},
        {both + " --data " + text, "are required"},
        {both + " -o " + out, "are required"},
        {both + run + " --frobnicate", "unknown or incomplete option '--frobnicate'"},
        {both + run + " --frobnicate 1", "unknown option '--frobnicate'"},
    };
    expect_refused(distill_cli, usage, 2, t.path);

    const fs::path q8 = t.path / "q8", wide = t.path / "wide", swapped = t.path / "swapped";
    ASSERT_EQ(run_tool(PANGU_QUANTIZE_BIN, "--scheme w8a16 -i " + kModel + " -o " + q8.string()), 0) << last_stderr();
    ASSERT_EQ(run_tool(PANGU_GEN_MODEL_BIN, "-o " + wide.string() +
                                                " --layers 1 --hidden 64 --heads 2 --kv-heads 1 --head-dim 32 --ff 128"
                                                " --vocab 4160 --untied",
                       false),
              0)
        << last_stderr();
    write_swapped_tokenizer(swapped, 1000, 1001);
    const std::string empty = (t.path / "empty.txt").string(), blank = (t.path / "blank.jsonl").string();
    std::ofstream(empty).close();
    std::ofstream(blank) << "\n\n  \n";
    const std::string io = " -o " + out + " --data " + text + " --steps 3 --batch 1 --seq 64";
    const Refusals runtime = {
        {" --teacher " + q8.string() + " --student " + tiny_dir + io, "the teacher " + q8.string() + " is quantized (w8a16)"},
        {" --teacher " + tiny_dir + " --student " + q8.string() + io, "the student " + q8.string() + " is quantized (w8a16)"},
        {" --teacher " + wide.string() + " --student " + tiny_dir + io,
         "the teacher (" + wide.string() + ") has 4160 tokens and the student (" + tiny_dir + ") 4096"},
        {" --teacher " + tiny_dir + " --student " + swapped.string() + io,
         "the teacher's and the student's tokenizers differ at token 1000"},
        {both + " -o " + out + " --data " + empty, "empty.txt: holds no text"},
        {both + " -o " + out + " --data " + blank, "blank.jsonl: holds no text"},
        {both + " -o " + out + " --data " + (t.path / "none.txt").string(), "none.txt is not a file"},
        {both + io + " --eval " + (t.path / "none.jsonl").string(), "none.jsonl is not a file"},
        {both + io + " --report " + (t.path / "no/r.json").string(), "--report: " + (t.path / "no").string() + " is not a directory"},
        {" --teacher " + (t.path / "nothing").string() + " --student " + tiny_dir + io, "config.json"},
        {both + io + " --resume", "--resume: there is no " + out + ".state"},
    };
    expect_refused(distill_cli, runtime, 1, t.path);

    // An existing output is kept unless --force; with it, replaced.
    fs::create_directories(out);
    std::ofstream(out + "/keep") << "x";
    EXPECT_EQ(distill_cli(both + io), 1);
    EXPECT_NE(last_stderr().find(out + " exists; use --force to replace it"), std::string::npos) << last_stderr();
    EXPECT_EQ(bytes_of(out + "/keep"), "x");
    EXPECT_EQ(distill_cli(both + io + " --force"), 0) << last_stderr();
    EXPECT_FALSE(fs::exists(out + "/keep"));
    EXPECT_TRUE(json_of(fs::path(out) / "config.json").isMember("distillation"));
    EXPECT_FALSE(fs::exists(out + ".state"));
    EXPECT_EQ(entries_with(t.path, ".partial"), 0);
}
