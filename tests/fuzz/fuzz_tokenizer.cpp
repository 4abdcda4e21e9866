// Fuzzes the tokenizer and the streaming detokenizer with arbitrary bytes and token ids, on two vocabularies:
// pangu-tiny's (byte fallback, no dummy prefix) and the fuzz data's tiny chat model (dummy prefix,
// user-defined chat pieces). The first input byte chooses the vocabulary and the mode; the rest is the
// payload. Properties checked:
//  - text: valid UTF-8 tokenizes to ids inside the vocabulary, invalid UTF-8 is PANGU_ERR_INVALID_UTF8;
//    without parse_special no control or user-defined piece comes out of plain text;
//  - ids: decoding gives valid UTF-8, and streaming the ids (what generation does: stream_bytes into the
//    Utf8Assembler with the capacity the generation loop guarantees) gives exactly the decoded text;
//  - bytes: the Utf8Assembler's output is valid UTF-8, the same however the input is cut into pushes, and
//    the input itself when that was valid UTF-8;
//  - the public calls (pangu_tokenize, pangu_detokenize, pangu_token_to_bytes) report the size they need
//    with PANGU_ERR_BUFFER_TOO_SMALL and then succeed with exactly that size.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/common.h"
#include "fuzz_util.h"
#include "model/vocab.h"

namespace {

struct Tok {
    pangu::Vocab vocab;
    pangu_model *model = nullptr;
};
Tok *g_tok[2];

void load(Tok *t, const char *dir) {
    t->vocab.load(dir);
    if (pangu_model_load(dir, nullptr, &t->model) != PANGU_OK) {
        std::fprintf(stderr, "cannot load %s: %s\n", dir, pangu_last_error());
        std::abort();
    }
}

std::string stream(const pangu::Vocab &v, const std::vector<int32_t> &ids, std::vector<std::string> *pieces) {
    pangu::Utf8Assembler as;
    bool at_start = true;
    std::string out;
    char buf[4096];
    for (const int32_t id : ids) {
        const std::string_view bytes = id < v.n_vocab() ? v.stream_bytes(id, at_start) : std::string_view();
        // Vocab.h's promise for one token's bytes: bytes.size() + 11 is enough.
        const size_t cap = bytes.size() + 11;
        std::string piece;
        if (cap <= sizeof buf) {
            piece.assign(buf, as.push(bytes, buf, cap));
        } else {
            std::vector<char> big(cap);
            piece.assign(big.data(), as.push(bytes, big.data(), cap));
        }
        FUZZ_CHECK(pangu::utf8_valid(piece), "a streamed piece is not UTF-8");
        if (pieces) pieces->push_back(piece);
        out += piece;
    }
    out.append(buf, as.flush(buf, 9 + 3));
    return out;
}

void fuzz_text(const Tok &t, const std::string &text, bool add_bos, bool parse_special) {
    std::vector<int32_t> ids;
    const bool valid = pangu::utf8_valid(text);
    try {
        t.vocab.tokenize(text, add_bos, parse_special, ids);
        FUZZ_CHECK(valid, "invalid UTF-8 was tokenized");
    } catch (const pangu::Error &e) {
        FUZZ_CHECK(!valid && e.status() == PANGU_ERR_INVALID_UTF8, "tokenize: status %d: %s", (int)e.status(), e.what());
        return;
    }
    for (size_t i = 0; i < ids.size(); ++i) {
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < t.vocab.n_vocab(), "id %d out of range", ids[i]);
        if (!parse_special && !(add_bos && i == 0))
            FUZZ_CHECK(!t.vocab.is_control(ids[i]), "plain text produced control token %d", ids[i]);
    }
    const std::string decoded = t.vocab.decode(ids.data(), ids.size());
    FUZZ_CHECK(pangu::utf8_valid(decoded), "decode gave invalid UTF-8");
    FUZZ_CHECK(stream(t.vocab, ids, nullptr) == decoded, "streaming differs from decode");

    // Public API: the required size first, then exactly that.
    size_t need = 0;
    pangu_status st = pangu_tokenize(t.model, text.data(), text.size(), add_bos, parse_special, nullptr, 0, &need);
    FUZZ_CHECK(st == (ids.empty() ? PANGU_OK : PANGU_ERR_BUFFER_TOO_SMALL), "pangu_tokenize sizing: %d", (int)st);
    FUZZ_CHECK(need == ids.size(), "pangu_tokenize needs %zu, Vocab gave %zu", need, ids.size());
    std::vector<int32_t> api(need + 1);
    size_t got = 0;
    st = pangu_tokenize(t.model, text.data(), text.size(), add_bos, parse_special, api.data(), need, &got);
    FUZZ_CHECK(st == PANGU_OK && got == need, "pangu_tokenize with the size it asked for: %d", (int)st);
    FUZZ_CHECK(std::equal(ids.begin(), ids.end(), api.begin()), "pangu_tokenize differs from Vocab::tokenize");
}

void fuzz_ids(const Tok &t, fuzz::Input &in) {
    std::vector<int32_t> ids;
    const int32_t V = t.vocab.n_vocab();
    while (!in.empty() && ids.size() < 512) {
        const uint8_t k = in.u8();
        // Mostly ids inside the vocabulary, biased to the ones the streaming rules care about (control, byte,
        // space and unknown pieces sit at the low ids), sometimes any value at all.
        if (k < 200) ids.push_back(static_cast<int32_t>(in.u8()) % V);
        else if (k < 250) ids.push_back(static_cast<int32_t>(in.u32() % static_cast<uint32_t>(V)));
        else ids.push_back(in.i32());
    }
    bool all_valid = true;
    for (int32_t id : ids) all_valid = all_valid && id >= 0 && id < V;
    std::string decoded;
    try {
        decoded = t.vocab.decode(ids.data(), ids.size());
        FUZZ_CHECK(all_valid, "decode accepted an invalid id");
    } catch (const pangu::Error &e) {
        FUZZ_CHECK(!all_valid && e.status() == PANGU_ERR_INVALID_TOKEN, "decode: status %d: %s", (int)e.status(),
                   e.what());
    }
    size_t need = 0;
    pangu_status st = pangu_detokenize(t.model, ids.data(), ids.size(), nullptr, 0, &need);
    if (!all_valid) {
        FUZZ_CHECK(st == PANGU_ERR_INVALID_TOKEN, "pangu_detokenize of an invalid id: %d", (int)st);
        return;
    }
    FUZZ_CHECK(pangu::utf8_valid(decoded), "decode gave invalid UTF-8");
    FUZZ_CHECK(stream(t.vocab, ids, nullptr) == decoded, "streaming differs from decode");
    FUZZ_CHECK(st == PANGU_ERR_BUFFER_TOO_SMALL && need == decoded.size(), "pangu_detokenize sizing: %d", (int)st);
    std::string buf(need + 1, '\0');
    size_t len = 0;
    st = pangu_detokenize(t.model, ids.data(), ids.size(), &buf[0], need + 1, &len);
    FUZZ_CHECK(st == PANGU_OK && len == need && buf.compare(0, len, decoded) == 0 && buf[len] == '\0',
               "pangu_detokenize with the size it asked for: %d", (int)st);
    for (int32_t id : ids) {
        char b[1024];
        st = pangu_token_to_bytes(t.model, id, b, sizeof b, &len);
        FUZZ_CHECK(st == PANGU_OK && len == t.vocab.token_bytes(id).size(), "pangu_token_to_bytes: %d", (int)st);
    }
}

void fuzz_assembler(fuzz::Input &in) {
    const uint8_t cut = in.u8();
    const std::string bytes = in.rest();
    std::string whole(3 * bytes.size() + 9, '\0');
    pangu::Utf8Assembler a;
    size_t n = a.push(bytes, &whole[0], whole.size());
    n += a.flush(&whole[n], whole.size() - n);
    whole.resize(n);
    FUZZ_CHECK(pangu::utf8_valid(whole), "assembler output is not UTF-8");
    if (pangu::utf8_valid(bytes)) FUZZ_CHECK(whole == bytes, "valid UTF-8 was changed");
    // The same bytes in pieces of 1 + (cut % 7) bytes (never empty: an empty push ends a byte run on purpose).
    pangu::Utf8Assembler b;
    std::string pieces;
    const size_t step = 1 + cut % 7;
    char buf[64];
    for (size_t i = 0; i < bytes.size(); i += step) {
        const std::string_view chunk(bytes.data() + i, std::min(step, bytes.size() - i));
        pieces.append(buf, b.push(chunk, buf, 3 * chunk.size() + 9));
    }
    pieces.append(buf, b.flush(buf, sizeof buf));
    FUZZ_CHECK(pieces == whole, "output depends on how the bytes are cut");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    g_tok[0] = new Tok;
    g_tok[1] = new Tok;
    load(g_tok[0], PANGU_MODEL_DIR);
    load(g_tok[1], PANGU_FUZZ_DATA_DIR "/tiny-chat");
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz::Input in(data, size);
    const uint8_t mode = in.u8();
    const Tok &t = *g_tok[mode & 1];
    switch ((mode >> 1) & 3) {
        case 0: fuzz_text(t, in.rest(), mode & 8, mode & 16); break;
        case 1: fuzz_ids(t, in); break;
        case 2: fuzz_assembler(in); break;
        case 3: {  // text, then continue with ids decoded from its tokens: mixes both kinds of input
            const std::string text = in.bytes(256);
            fuzz_text(t, text, mode & 8, mode & 16);
            fuzz_ids(t, in);
            break;
        }
    }
    return 0;
}
