// Unit tests of pangu::Vocab and the streaming UTF-8 assembler, checked against golden data and against
// libsentencepiece itself.
#include "model/vocab.h"

#include <gtest/gtest.h>
#include <json/json.h>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <random>
#include <sstream>
#include <unordered_map>

namespace fs = std::filesystem;

// Counts heap allocations so the tests can prove the generation-loop paths allocate nothing. (GCC cannot
// tell that these replace the global operators, hence the pragma.)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<size_t> g_allocations{0};
void *operator new(size_t n) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
    if (void *p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void *p) noexcept { std::free(p); }
void operator delete(void *p, size_t) noexcept { std::free(p); }

namespace {

using pangu::Utf8Assembler;
using pangu::Vocab;

const std::string kModelDir = PANGU_MODEL_DIR;
const std::string kSharedDir = PANGU_SHARED_DIR;
const std::string kFFFD = "\xEF\xBF\xBD";

std::string slurp(const fs::path &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path.string());
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void spit(const fs::path &path, const std::string &data) {
    std::ofstream out(path, std::ios::binary);
    out << data;
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

Json::Value parse_json(const std::string &text) {
    Json::Value root;
    std::string errs;
    Json::CharReaderBuilder builder;
    std::istringstream in(text);
    if (!Json::parseFromStream(builder, in, &root, &errs)) throw std::runtime_error("bad JSON: " + errs);
    return root;
}

struct TempDir {
    fs::path path;
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "pangu_vocab_XXXXXX").string();
        if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
        path = pattern;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

// Runs `f` and returns the status of the pangu::Error it throws (PANGU_OK if none) and its message.
template <class F>
pangu_status status_of(F &&f, std::string *message = nullptr) {
    try {
        f();
    } catch (const pangu::Error &e) {
        if (message) *message = e.what();
        return e.status();
    }
    return PANGU_OK;
}

std::vector<int32_t> tok(const Vocab &v, std::string_view text, bool bos = false, bool special = false) {
    std::vector<int32_t> ids;
    v.tokenize(text, bos, special, ids);
    return ids;
}

std::string dec(const Vocab &v, const std::vector<int32_t> &ids) { return v.decode(ids.data(), ids.size()); }

std::vector<int32_t> to32(const std::vector<int> &v) { return std::vector<int32_t>(v.begin(), v.end()); }

std::string sp_decode(const sentencepiece::SentencePieceProcessor &sp, const std::vector<int32_t> &ids) {
    return sp.DecodeIds(std::vector<int>(ids.begin(), ids.end()));
}

// What a session streams: each token's bytes through the assembler, then a flush.
std::vector<std::string> stream(const Vocab &v, const std::vector<int32_t> &ids) {
    std::vector<std::string> pieces;
    Utf8Assembler as;
    bool at_start = true;
    char buf[256];
    for (const int32_t id : ids) {
        const std::string_view bytes = v.stream_bytes(id, at_start);
        EXPECT_LE(3 * bytes.size() + 9, sizeof buf);
        pieces.emplace_back(buf, as.push(bytes, buf, sizeof buf));
    }
    pieces.emplace_back(buf, as.flush(buf, sizeof buf));
    return pieces;
}

std::string join(const std::vector<std::string> &pieces) {
    std::string s;
    for (const auto &p : pieces) s += p;
    return s;
}

struct Doc {
    std::string name, text;
};

const std::vector<Doc> &dev_docs() {
    static const std::vector<Doc> docs = [] {
        std::vector<Doc> out;
        std::ifstream in(kSharedDir + "/data/dev.jsonl");
        std::string line;
        while (out.size() < 200 && std::getline(in, line)) {
            const Json::Value j = parse_json(line);
            out.push_back({j["name"].asString(), j["text"].asString()});
        }
        return out;
    }();
    return docs;
}

class TinyVocab : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        vocab_ = new Vocab;
        vocab_->load(kModelDir);
        sp_ = new sentencepiece::SentencePieceProcessor;
        ASSERT_TRUE(sp_->Load(kModelDir + "/tokenizer.model").ok());
    }
    static void TearDownTestSuite() {
        delete vocab_;
        delete sp_;
    }
    static Vocab *vocab_;
    static sentencepiece::SentencePieceProcessor *sp_;
};
Vocab *TinyVocab::vocab_ = nullptr;
sentencepiece::SentencePieceProcessor *TinyVocab::sp_ = nullptr;

TEST_F(TinyVocab, Metadata) {
    const Vocab &v = *vocab_;
    EXPECT_EQ(v.n_vocab(), 4096);
    EXPECT_EQ(v.bos(), 1);
    EXPECT_EQ(v.eos(), 2);
    EXPECT_TRUE(v.add_bos());
    EXPECT_FALSE(v.add_eos());
    EXPECT_FALSE(v.has_chat_tokens());
    // Trained without add_dummy_prefix: "hello world" starts with "h", not "\u2581h", and decoding keeps
    // leading spaces.
    EXPECT_FALSE(v.strips_leading_space());
    EXPECT_EQ(v.piece_id("<s>"), 1);
    EXPECT_EQ(v.piece_id("</s>"), 2);
    EXPECT_EQ(v.piece_id("<0x0A>"), 3 + 0x0A);
    EXPECT_EQ(v.piece_id("no such piece"), -1);
    EXPECT_TRUE(v.is_control(1));
    EXPECT_TRUE(v.is_control(2));
    EXPECT_FALSE(v.is_control(0));
    EXPECT_FALSE(v.is_control(3));
    EXPECT_FALSE(v.is_control(-1));
    EXPECT_FALSE(v.is_control(4096));
}

TEST_F(TinyVocab, GoldenTokenizations) {
    const Json::Value golden = parse_json(slurp(kModelDir + "/golden.json"));
    ASSERT_GT(golden["tokenize"].size(), 0u);
    for (const auto &t : golden["tokenize"]) {
        std::vector<int32_t> want;
        for (const auto &id : t["ids"]) want.push_back(id.asInt());
        const std::string text = t["text"].asString();
        EXPECT_EQ(tok(*vocab_, text), want) << text;
        EXPECT_EQ(tok(*vocab_, text, false, true), want) << text;
        EXPECT_EQ(dec(*vocab_, want), sp_decode(*sp_, want)) << text;
    }
    ASSERT_GT(golden["cases"].size(), 0u);
    for (const auto &c : golden["cases"]) {
        std::vector<int32_t> want;
        for (const auto &id : c["prompt_ids"]) want.push_back(id.asInt());
        const std::string prompt = c["prompt"].asString();
        EXPECT_EQ(tok(*vocab_, prompt, true, false), want) << prompt;
        EXPECT_EQ(tok(*vocab_, prompt, true, true), want) << prompt;
    }
}

TEST_F(TinyVocab, LeadingSpacesSurviveDecode) {
    const std::string text = "   leading spaces";
    EXPECT_EQ(dec(*vocab_, tok(*vocab_, text, true)), text);
}

TEST_F(TinyVocab, ParityWithSentencePieceOnDevJsonl) {
    const auto &docs = dev_docs();
    ASSERT_EQ(docs.size(), 200u);
    for (const auto &d : docs) {
        const std::vector<int32_t> ids = tok(*vocab_, d.text);
        ASSERT_EQ(ids, to32(sp_->EncodeAsIds(d.text))) << d.name;
        EXPECT_EQ(dec(*vocab_, ids), sp_decode(*sp_, ids)) << d.name;
    }
}

TEST_F(TinyVocab, TokenBytes) {
    const Vocab &v = *vocab_;
    EXPECT_EQ(v.token_bytes(1), "");   // <s>
    EXPECT_EQ(v.token_bytes(2), "");   // </s>
    EXPECT_EQ(v.token_bytes(0), sp_->DecodeIds({0}));  // <unk> renders as the decoder renders it
    EXPECT_EQ(v.token_bytes(0), " \xE2\x81\x87 ");
    EXPECT_EQ(v.token_bytes(3 + 0xE5), "\xE5");
    EXPECT_EQ(v.token_bytes(3 + 0x00), std::string(1, '\0'));
    EXPECT_EQ(v.token_bytes(v.piece_id("\xE2\x96\x81\xE2\x96\x81")), "  ");  // "▁▁"
    EXPECT_EQ(v.token_bytes(v.piece_id("\xE5\xBA\x8A")), "\xE5\xBA\x8A");   // 床
    // Every ordinary piece decodes on its own to its bytes (no leading-space stripping in this model).
    for (int32_t id = 0; id < v.n_vocab(); ++id) {
        if (sp_->IsByte(id)) continue;
        ASSERT_EQ(v.token_bytes(id), sp_->DecodeIds({id})) << id;
    }
    EXPECT_EQ(status_of([&] { v.token_bytes(-1); }), PANGU_ERR_INVALID_TOKEN);
    EXPECT_EQ(status_of([&] { v.token_bytes(4096); }), PANGU_ERR_INVALID_TOKEN);
}

TEST_F(TinyVocab, TokenBytesAndStreamingDoNotAllocate) {
    const std::vector<int32_t> ids = tok(*vocab_, "émoji 🚀 床前明月光");
    char buf[64];
    Utf8Assembler as;
    bool at_start = true;
    size_t total = 0;
    const size_t before = g_allocations.load();
    for (const int32_t id : ids) {
        total += vocab_->token_bytes(id).size();
        total += as.push(vocab_->stream_bytes(id, at_start), buf, sizeof buf);
    }
    total += as.flush(buf, sizeof buf);
    EXPECT_EQ(g_allocations.load(), before);
    EXPECT_GT(total, 0u);
}

TEST_F(TinyVocab, StreamingChineseAndEmoji) {
    std::vector<std::string> texts = {
        "床前明月光，疑是地上霜。举头望明月，低头思故乡。",
        "🚀🎉👍🏽 emoji 😀 mixed with 中文 and ASCII",
        "家庭👨‍👩‍👧‍👦 flags 🇨🇳🇺🇸 and 𠀀𪚥 (CJK extension B)",
        "",
    };
    for (const auto &d : dev_docs())
        if (d.name.rfind("zh/", 0) == 0) texts.push_back(d.text);
    ASSERT_GT(texts.size(), 50u);
    size_t split_chars = 0;
    for (const auto &text : texts) {
        const std::vector<int32_t> ids = tok(*vocab_, text, true);
        const std::vector<std::string> pieces = stream(*vocab_, ids);
        for (const auto &p : pieces) {
            EXPECT_TRUE(pangu::utf8_valid(p)) << text;
            split_chars += p.empty();
        }
        EXPECT_EQ(join(pieces), dec(*vocab_, ids)) << text;
        EXPECT_EQ(join(pieces), text);
    }
    EXPECT_GT(split_chars, 0u);  // byte-fallback characters were actually held back
}

// Arbitrary id sequences (control, unknown, stray bytes, ...): streaming still equals the decoder.
TEST_F(TinyVocab, StreamingRandomIdsMatchesDecodeIds) {
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int32_t> any(0, vocab_->n_vocab() - 1), byte(3, 258), len(0, 24), coin(0, 2);
    for (int trial = 0; trial < 500; ++trial) {
        std::vector<int32_t> ids(size_t(len(rng)));
        for (auto &id : ids) id = coin(rng) ? byte(rng) : any(rng);
        const std::vector<std::string> pieces = stream(*vocab_, ids);
        for (const auto &p : pieces) ASSERT_TRUE(pangu::utf8_valid(p));
        ASSERT_EQ(join(pieces), sp_decode(*sp_, ids));
        ASSERT_EQ(dec(*vocab_, ids), sp_decode(*sp_, ids));
    }
}

TEST_F(TinyVocab, DecodeRejectsBadIds) {
    const int32_t bad[] = {5, 4096};
    EXPECT_EQ(status_of([&] { vocab_->decode(bad, 2); }), PANGU_ERR_INVALID_TOKEN);
    const int32_t neg[] = {-1};
    EXPECT_EQ(status_of([&] { vocab_->decode(neg, 1); }), PANGU_ERR_INVALID_TOKEN);
    EXPECT_EQ(vocab_->decode(nullptr, 0), "");
}

TEST_F(TinyVocab, InvalidUtf8Input) {
    std::string message;
    std::vector<int32_t> ids;
    EXPECT_EQ(status_of([&] { vocab_->tokenize("abc\xC3(def", true, false, ids); }, &message),
              PANGU_ERR_INVALID_UTF8);
    EXPECT_NE(message.find("offset 3"), std::string::npos) << message;
    EXPECT_TRUE(ids.empty());
    for (const char *bad : {"\xFF", "\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "ok\xE4\xB8"})
        EXPECT_EQ(status_of([&] { vocab_->tokenize(bad, false, true, ids); }), PANGU_ERR_INVALID_UTF8) << bad;
}

TEST_F(TinyVocab, SpecialTokens) {
    EXPECT_EQ(tok(*vocab_, "</s>", false, true), (std::vector<int32_t>{2}));
    const std::vector<int32_t> plain = tok(*vocab_, "</s>", false, false);
    EXPECT_GT(plain.size(), 1u);
    for (const int32_t id : plain) EXPECT_FALSE(vocab_->is_control(id));
    EXPECT_EQ(dec(*vocab_, plain), "</s>");

    // Text around special pieces is encoded on its own.
    const std::vector<int32_t> mixed = tok(*vocab_, "<s>def f</s>x<s>", true, true);
    std::vector<int32_t> want = {1, 1};
    for (const int id : sp_->EncodeAsIds("def f")) want.push_back(id);
    want.push_back(2);
    for (const int id : sp_->EncodeAsIds("x")) want.push_back(id);
    want.push_back(1);
    EXPECT_EQ(mixed, want);
}

TEST_F(TinyVocab, ChatTemplateUnsupported) {
    const pangu_chat_message msgs[] = {{"user", "hi"}};
    std::string message;
    EXPECT_EQ(status_of([&] { vocab_->apply_chat_template(msgs, 1, true); }, &message), PANGU_ERR_UNSUPPORTED);
    EXPECT_NE(message.find("[unused9]"), std::string::npos);
}

// ------------------------------------------------------------------------------------------------
// Load errors

class VocabLoad : public ::testing::Test {
protected:
    TempDir tmp_;
    std::string dir() const { return tmp_.path.string(); }
    void copy_model() { fs::copy_file(kModelDir + "/tokenizer.model", tmp_.path / "tokenizer.model"); }
};

TEST_F(VocabLoad, MissingModelIsFileNotFound) {
    Vocab v;
    std::string message;
    EXPECT_EQ(status_of([&] { v.load(dir()); }, &message), PANGU_ERR_FILE_NOT_FOUND);
    EXPECT_NE(message.find(dir() + "/tokenizer.model"), std::string::npos) << message;
}

TEST_F(VocabLoad, GarbageModelIsTokenizerError) {
    for (const std::string &garbage : {std::string("this is not a sentencepiece model\n"), std::string(),
                                      std::string("\x0a\xff\xff\xff\xff\x0f", 6)}) {
        spit(tmp_.path / "tokenizer.model", garbage);
        Vocab v;
        std::string message;
        EXPECT_EQ(status_of([&] { v.load(dir()); }, &message), PANGU_ERR_TOKENIZER);
        EXPECT_NE(message.find(dir() + "/tokenizer.model"), std::string::npos) << message;
    }
}

// A piece longer than kMaxPieceBytes, or one whose text is not UTF-8, is refused at load: generation streams
// every token through a fixed buffer (a 702-byte user-defined piece made it fail with PANGU_ERR_INTERNAL).
TEST_F(VocabLoad, OverlongOrNonUtf8PieceIsTokenizerError) {
    spit(tmp_.path / "corpus.txt", "def f(x):\n    return x + 1\nclass A:\n    pass\nimport os\n");
    const std::string long_symbol = "[" + std::string(pangu::kMaxPieceBytes, 'a') + "]";
    const std::unordered_map<std::string, std::string> args = {
        {"input", (tmp_.path / "corpus.txt").string()},   {"model_prefix", (tmp_.path / "tokenizer").string()},
        {"vocab_size", "60"},                             {"model_type", "char"},
        {"user_defined_symbols", long_symbol},            {"hard_vocab_limit", "false"},
        {"normalization_rule_name", "identity"},          {"minloglevel", "2"}};
    ASSERT_TRUE(sentencepiece::SentencePieceTrainer::Train(args).ok());
    Vocab v;
    std::string message;
    EXPECT_EQ(status_of([&] { v.load(dir()); }, &message), PANGU_ERR_TOKENIZER);
    EXPECT_NE(message.find("longer than the 256"), std::string::npos) << message;

    // pangu-tiny's tokenizer with the first byte of a three-letter piece made 0xFF.
    std::string model = slurp(kModelDir + "/tokenizer.model");
    size_t at = std::string::npos;
    for (size_t i = 0; i + 5 < model.size() && at == std::string::npos; ++i)
        if (model[i] == '\x0a' && model[i + 1] == 3 && std::isalpha(static_cast<unsigned char>(model[i + 2])) &&
            std::isalpha(static_cast<unsigned char>(model[i + 3])) && std::isalpha(static_cast<unsigned char>(model[i + 4])))
            at = i + 2;
    ASSERT_NE(at, std::string::npos);
    model[at] = '\xff';
    spit(tmp_.path / "tokenizer.model", model);
    Vocab w;
    EXPECT_EQ(status_of([&] { w.load(dir()); }, &message), PANGU_ERR_TOKENIZER);
    EXPECT_NE(message.find("not valid UTF-8"), std::string::npos) << message;
}

TEST_F(VocabLoad, ModelPathIsADirectoryIsIoError) {
    fs::create_directory(tmp_.path / "tokenizer.model");
    Vocab v;
    std::string message;
    EXPECT_EQ(status_of([&] { v.load(dir()); }, &message), PANGU_ERR_IO);
    EXPECT_NE(message.find("tokenizer.model"), std::string::npos) << message;
}

TEST_F(VocabLoad, MalformedConfigIsConfigError) {
    copy_model();
    for (const char *bad : {"{\"add_bos_token\": true,", "[1, 2]", "{\"add_bos_token\": \"yes\"}", "not json"}) {
        spit(tmp_.path / "tokenizer_config.json", bad);
        Vocab v;
        std::string message;
        EXPECT_EQ(status_of([&] { v.load(dir()); }, &message), PANGU_ERR_CONFIG) << bad;
        EXPECT_NE(message.find(dir() + "/tokenizer_config.json"), std::string::npos) << message;
    }
}

TEST_F(VocabLoad, ConfigIsOptionalAndRead) {
    copy_model();
    {
        Vocab v;
        v.load(dir());
        EXPECT_TRUE(v.add_bos());
        EXPECT_FALSE(v.add_eos());
        EXPECT_EQ(v.n_vocab(), 4096);
    }
    spit(tmp_.path / "tokenizer_config.json", R"({"add_bos_token": false, "add_eos_token": true})");
    Vocab v;
    v.load(dir());
    EXPECT_FALSE(v.add_bos());
    EXPECT_TRUE(v.add_eos());
}

TEST_F(VocabLoad, FailedLoadKeepsPreviousState) {
    Vocab v;
    v.load(kModelDir);
    EXPECT_EQ(status_of([&] { v.load(dir()); }), PANGU_ERR_FILE_NOT_FOUND);
    EXPECT_EQ(v.n_vocab(), 4096);
    EXPECT_EQ(tok(v, "hello world").size(), 7u);
}

// ------------------------------------------------------------------------------------------------
// Utf8Assembler

std::string run_assembler(const std::vector<std::string> &chunks) {
    Utf8Assembler as;
    std::string out;
    char buf[128];
    for (const auto &c : chunks) out.append(buf, as.push(c, buf, sizeof buf));
    out.append(buf, as.flush(buf, sizeof buf));
    EXPECT_EQ(as.pending(), 0u);
    return out;
}

std::vector<std::string> bytewise(const std::string &s) {
    std::vector<std::string> v;
    for (const char c : s) v.emplace_back(1, c);
    return v;
}

TEST(Utf8Assembler, SplitCharactersAreHeldUntilComplete) {
    Utf8Assembler as;
    char buf[32];
    // 2-byte é, 3-byte 中, 4-byte 🚀: nothing comes out until the last byte.
    for (const std::string ch : {"\xC3\xA9", "\xE4\xB8\xAD", "\xF0\x9F\x9A\x80"}) {
        for (size_t i = 0; i + 1 < ch.size(); ++i) {
            EXPECT_EQ(as.push(ch.substr(i, 1), buf, sizeof buf), 0u);
            EXPECT_EQ(as.pending(), i + 1);
        }
        const size_t n = as.push(ch.substr(ch.size() - 1), buf, sizeof buf);
        EXPECT_EQ(std::string(buf, n), ch);
        EXPECT_EQ(as.pending(), 0u);
    }
    // A split in the middle of a chunk that also holds whole characters.
    EXPECT_EQ(run_assembler({"a\xE4", "\xB8\xAD" "b\xF0\x9F", "\x9A", "\x80"}), "a中b🚀");
    EXPECT_EQ(as.flush(buf, sizeof buf), 0u);
}

TEST(Utf8Assembler, InvalidSequencesBecomeReplacementCharacters) {
    const std::string R = kFFFD;
    struct Case {
        std::string in, want;
    };
    const Case cases[] = {
        {"\x80", R},                                    // lone continuation
        {"\xC3" "A", R + "A"},                          // lead followed by a non-continuation
        {"\xE4\xB8" "A", R + R + "A"},                  // truncated 3-byte char: one U+FFFD per byte
        {"\xF0\x9F\x9A" "\xE4\xB8\xAD", R + R + R + "中"},
        {"\xC0\xAF", R + R},                            // overlong '/'
        {"\xC1\xBF", R + R},
        {"\xE0\x80\xAF", R + R + R},                    // overlong 3-byte
        {"\xE0\x9F\xBF", R + R + R},
        {"\xF0\x80\x80\xAF", R + R + R + R},            // overlong 4-byte
        {"\xF0\x8F\xBF\xBF", R + R + R + R},
        {"\xED\xA0\x80", R + R + R},                    // surrogate U+D800
        {"\xED\xBF\xBF", R + R + R},                    // surrogate U+DFFF
        {"\xED\x9F\xBF", "\xED\x9F\xBF"},               // U+D7FF is fine
        {"\xF4\x90\x80\x80", R + R + R + R},            // above U+10FFFF
        {"\xF4\x8F\xBF\xBF", "\xF4\x8F\xBF\xBF"},       // U+10FFFF is fine
        {"\xF5\x80", R + R},
        {"\xFE\xFF", R + R},
        {"\xE4\xB8", R + R},                            // truncated at flush
        {"\xF0\x9F\x9A", R + R + R},
        {"\xC3", R},
        {"\xEF\xBF\xBD", R},                            // U+FFFD itself passes through
    };
    for (const auto &c : cases) {
        EXPECT_EQ(run_assembler({c.in}), c.want) << testing::PrintToString(c.in);
        EXPECT_EQ(run_assembler(bytewise(c.in)), c.want) << testing::PrintToString(c.in);
        EXPECT_EQ(pangu::utf8_valid(c.in), c.in == c.want) << testing::PrintToString(c.in);
    }
}

// The assembler must agree with SentencePiece's own handling of byte-fallback pieces.
TEST_F(TinyVocab, AssemblerMatchesSentencePieceOnByteRuns) {
    std::mt19937 rng(99);
    const std::string alphabet[] = {"\x80", "\xBF", "\xC3", "\xA9", "\xE4", "\xB8", "\xAD", "\xF0", "\x9F",
                                    "\x9A", "\xED", "\xA0", "\xE0", "\xF4", "\x90", "\x8F", "\xFF", "A"};
    std::uniform_int_distribution<size_t> pick(0, std::size(alphabet) - 1), len(1, 10);
    for (int trial = 0; trial < 2000; ++trial) {
        std::string bytes;
        for (size_t i = len(rng); i > 0; --i) bytes += alphabet[pick(rng)];
        std::vector<int32_t> ids;
        for (const char c : bytes) ids.push_back(3 + static_cast<unsigned char>(c));
        ASSERT_EQ(run_assembler(bytewise(bytes)), sp_decode(*sp_, ids)) << testing::PrintToString(bytes);
    }
}

TEST(Utf8Assembler, ResetAndBufferChecks) {
    Utf8Assembler as;
    char buf[16];
    EXPECT_EQ(as.push("\xE4\xB8", buf, sizeof buf), 0u);
    as.reset();
    EXPECT_EQ(as.pending(), 0u);
    EXPECT_EQ(as.flush(buf, sizeof buf), 0u);
    EXPECT_EQ(as.push("", buf, sizeof buf), 0u);
    // Worst case of the documented bound: 3 held bytes and 1 new byte become 4 replacement characters.
    EXPECT_EQ(as.push("\xF0\x9F\x9A", buf, sizeof buf), 0u);
    char small[12];
    EXPECT_EQ(as.push("\xFF", small, sizeof small), 12u);
    EXPECT_EQ(status_of([&] { as.push("\xFF\xFF", small, 5); }), PANGU_ERR_INTERNAL);
    // An empty push (a control token) ends a held character, as the decoder ends a byte run there.
    as.reset();
    EXPECT_EQ(as.push("\xE4\xB8", buf, sizeof buf), 0u);
    EXPECT_EQ(std::string(buf, as.push("", buf, sizeof buf)), kFFFD + kFFFD);
    EXPECT_EQ(as.pending(), 0u);
}

TEST(Utf8Valid, Basics) {
    EXPECT_TRUE(pangu::utf8_valid(""));
    EXPECT_TRUE(pangu::utf8_valid("plain ascii"));
    EXPECT_TRUE(pangu::utf8_valid("床前明月光 🚀 é"));
    EXPECT_TRUE(pangu::utf8_valid(std::string_view("\0", 1)));
    EXPECT_FALSE(pangu::utf8_valid("\xC3"));
    EXPECT_FALSE(pangu::utf8_valid("\xE4\xB8" "A"));
}

// ------------------------------------------------------------------------------------------------
// A tiny SentencePiece model trained here, with the chat tokens as user-defined pieces.

std::string train_model(const fs::path &dir, bool add_dummy_prefix, bool remove_extra_whitespaces) {
    const char *words[] = {"the",   "quick",  "brown", "fox",  "jumps", "over",   "lazy",   "dog",
                           "you",   "are",    "hello", "world", "def",  "return", "import", "class",
                           "value", "helpful", "tool",  "user", "list", "print",  "self",   "data"};
    std::string corpus;
    for (int i = 0; i < 400; ++i) {
        for (int j = 0; j < 6 + i % 5; ++j) {
            corpus += words[(i * 7 + j * 3) % std::size(words)];
            corpus += j % 4 == 3 ? ", " : " ";
        }
        corpus += std::to_string(i) + ".\n";
    }
    spit(dir / "corpus.txt", corpus);
    const std::unordered_map<std::string, std::string> args = {
        {"input", (dir / "corpus.txt").string()},
        {"model_prefix", (dir / "tokenizer").string()},
        {"vocab_size", "400"},
        {"model_type", "bpe"},
        {"byte_fallback", "true"},
        {"user_defined_symbols", "[unused9],[unused10],[unused1]"},
        {"add_dummy_prefix", add_dummy_prefix ? "true" : "false"},
        {"remove_extra_whitespaces", remove_extra_whitespaces ? "true" : "false"},
        {"minloglevel", "2"},
    };
    const auto status = sentencepiece::SentencePieceTrainer::Train(args);
    return status.ok() ? std::string() : status.ToString();
}

class TrainedVocab : public ::testing::Test {
protected:
    struct Model {
        TempDir tmp;
        Vocab vocab;
        sentencepiece::SentencePieceProcessor sp;
    };
    static void SetUpTestSuite() {
        // LLaMA-style (dummy prefix, whitespace kept) and the SentencePiece defaults (both on).
        for (int i = 0; i < 2; ++i) {
            auto m = std::make_unique<Model>();
            const std::string err = train_model(m->tmp.path, true, i == 1);
            ASSERT_EQ(err, "");
            m->vocab.load(m->tmp.path.string());
            ASSERT_TRUE(m->sp.Load((m->tmp.path / "tokenizer.model").string()).ok());
            models_[i] = m.release();
        }
    }
    static void TearDownTestSuite() {
        for (auto &m : models_) {
            delete m;
            m = nullptr;
        }
    }
    static Model *models_[2];
    const Vocab &v() const { return models_[0]->vocab; }
    const sentencepiece::SentencePieceProcessor &sp() const { return models_[0]->sp; }
};
TrainedVocab::Model *TrainedVocab::models_[2] = {nullptr, nullptr};

TEST_F(TrainedVocab, ChatTemplateRendering) {
    ASSERT_TRUE(v().has_chat_tokens());
    const pangu_chat_message conv[] = {{"system", "You are helpful."}, {"user", "hello world"}};
    EXPECT_EQ(v().apply_chat_template(conv, 2, true),
              "[unused9]系统：You are helpful.[unused10][unused9]用户：hello world[unused10][unused9]助手：");
    EXPECT_EQ(v().apply_chat_template(conv, 2, false),
              "[unused9]系统：You are helpful.[unused10][unused9]用户：hello world[unused10]");

    // No system message: an empty one comes first. Chinese role names are accepted as they are.
    const pangu_chat_message turns[] = {{"user", "hi"}, {"assistant", "hello"}, {"工具", "42"}, {"用户", "thanks"}};
    EXPECT_EQ(v().apply_chat_template(turns, 4, true),
              "[unused9]系统：[unused10][unused9]用户：hi[unused10][unused9]助手：hello[unused10]"
              "[unused9]工具：42[unused10][unused9]用户：thanks[unused10][unused9]助手：");
    EXPECT_EQ(v().apply_chat_template(nullptr, 0, true), "[unused9]系统：[unused10][unused9]助手：");
    const pangu_chat_message sys_cn[] = {{"系统", ""}};
    EXPECT_EQ(v().apply_chat_template(sys_cn, 1, false), "[unused9]系统：[unused10]");
}

TEST_F(TrainedVocab, ChatTemplateErrors) {
    const pangu_chat_message bad_role[] = {{"narrator", "x"}};
    EXPECT_EQ(status_of([&] { v().apply_chat_template(bad_role, 1, true); }), PANGU_ERR_INVALID_ARGUMENT);
    const pangu_chat_message null_content[] = {{"user", nullptr}};
    EXPECT_EQ(status_of([&] { v().apply_chat_template(null_content, 1, true); }), PANGU_ERR_INVALID_ARGUMENT);
    const pangu_chat_message null_role[] = {{nullptr, "x"}};
    EXPECT_EQ(status_of([&] { v().apply_chat_template(null_role, 1, true); }), PANGU_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(status_of([&] { v().apply_chat_template(nullptr, 1, true); }), PANGU_ERR_INVALID_ARGUMENT);
    const pangu_chat_message bad_utf8[] = {{"user", "a\xFF"}};
    EXPECT_EQ(status_of([&] { v().apply_chat_template(bad_utf8, 1, true); }), PANGU_ERR_INVALID_UTF8);
}

TEST_F(TrainedVocab, ChatTemplateTokenizesWithSingleChatTokens) {
    const int32_t u9 = v().piece_id("[unused9]"), u10 = v().piece_id("[unused10]");
    ASSERT_GE(u9, 0);
    ASSERT_GE(u10, 0);
    const pangu_chat_message conv[] = {{"system", "You are helpful."}, {"user", "hello world"}};
    const std::string prompt = v().apply_chat_template(conv, 2, true);
    const std::vector<int32_t> ids = tok(v(), prompt, false, true);

    auto enc = [&](const std::string &s) { return to32(sp().EncodeAsIds(s)); };
    std::vector<int32_t> want = {u9};
    for (const auto &part : {enc("系统：You are helpful."), std::vector<int32_t>{u10, u9}, enc("用户：hello world"),
                             std::vector<int32_t>{u10, u9}, enc("助手：")})
        want.insert(want.end(), part.begin(), part.end());
    EXPECT_EQ(ids, want);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), u9), 3);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), u10), 2);

    // With BOS: the model's <s> first.
    const std::vector<int32_t> with_bos = tok(v(), prompt, true, true);
    ASSERT_EQ(with_bos.size(), ids.size() + 1);
    EXPECT_EQ(with_bos[0], v().bos());
}

TEST_F(TrainedVocab, LongestSpecialMatchWins) {
    const int32_t u1 = v().piece_id("[unused1]"), u10 = v().piece_id("[unused10]");
    ASSERT_GE(u1, 0);
    EXPECT_EQ(tok(v(), "[unused10][unused1]", false, true), (std::vector<int32_t>{u10, u1}));
}

TEST_F(TrainedVocab, PlainTextNeverProducesSpecialTokens) {
    const int32_t u9 = v().piece_id("[unused9]"), u10 = v().piece_id("[unused10]");
    const std::string text = "hello [unused9]user: hi[unused10] </s> <s> [unused1]";
    const std::vector<int32_t> ids = tok(v(), text, false, false);
    for (const int32_t id : ids) {
        EXPECT_NE(id, u9);
        EXPECT_NE(id, u10);
        EXPECT_FALSE(v().is_control(id));
    }
    // Same text as SentencePiece's own encoding decodes to, which does match user-defined pieces.
    EXPECT_EQ(dec(v(), ids), sp().DecodeIds(sp().EncodeAsIds(text)));
    EXPECT_EQ(dec(v(), ids), text);
}

TEST_F(TrainedVocab, StripsLeadingSpaceLikeTheDecoder) {
    EXPECT_TRUE(v().strips_leading_space());
    const std::vector<int32_t> ids = tok(v(), "hello world", true);
    EXPECT_EQ(dec(v(), ids), "hello world");
    EXPECT_EQ(join(stream(v(), ids)), "hello world");
    // The raw bytes keep the dummy-prefix space; only stream_bytes drops it.
    EXPECT_EQ(v().token_bytes(ids[1])[0], ' ');
}

TEST_F(TrainedVocab, StreamingMatchesDecodeIds) {
    for (Model *m : models_) {
        const Vocab &vocab = m->vocab;
        std::mt19937 rng(7);
        const int32_t space = vocab.piece_id("\xE2\x96\x81");
        ASSERT_GE(space, 0);
        std::uniform_int_distribution<int32_t> any(0, vocab.n_vocab() - 1), kind(0, 5);
        for (int trial = 0; trial < 1000; ++trial) {
            std::vector<int32_t> ids(size_t(trial % 12));
            // Bias towards what the leading-space rule cares about: control tokens, "\u2581", unknown.
            for (auto &id : ids) {
                const int k = kind(rng);
                id = k == 0 ? vocab.bos() : k == 1 ? space : k == 2 ? 0 : any(rng);
            }
            const std::vector<std::string> pieces = stream(vocab, ids);
            for (const auto &p : pieces) ASSERT_TRUE(pangu::utf8_valid(p));
            ASSERT_EQ(join(pieces), m->sp.DecodeIds(std::vector<int>(ids.begin(), ids.end())))
                << testing::PrintToString(ids);
        }
        for (const char *text : {"hello world", "  two leading", "系统：你好 🚀", " x"}) {
            const std::vector<int32_t> ids = tok(vocab, text, true);
            EXPECT_EQ(join(stream(vocab, ids)), dec(vocab, ids)) << text;
        }
    }
}

}  // namespace
