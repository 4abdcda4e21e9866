#include "model/vocab.h"

#include <json/json.h>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/io.h"
#include "common/json_util.h"
#include "common/utf8.h"
#include "format/sp_proto.h"
#include "format/tokenizer_config.h"

namespace pangu {

namespace {

constexpr char kSpaceMarker[] = "\xE2\x96\x81";  // U+2581, SentencePiece's whitespace symbol

void replace_all(std::string &s, std::string_view from, std::string_view to) {
    for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size())
        s.replace(pos, from.size(), to);
}

// "<0xNN>" -> NN, or -1.
int byte_piece_value(const std::string &piece) {
    if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; ++i) {
        const char c = piece[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

}  // namespace

struct Vocab::Impl {
    std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;
    int32_t n_vocab = 0;
    int32_t bos = -1, eos = -1, unk = -1;
    bool add_bos = true;
    bool add_eos = false;
    bool strips_leading_space = false;
    bool strip_repeats = false;  // remove_extra_whitespaces: keep stripping while the output is still empty

    std::vector<uint8_t> types;
    std::vector<bool> leading_marker;  // piece starts with U+2581 (what the decoder strips, not a literal ' ')
    std::string bytes;              // every token's bytes, back to back
    std::vector<uint32_t> offsets;  // n_vocab + 1 entries into `bytes`
    int32_t byte_ids[256];

    // Pieces that parse_special recognises, longest first; first_bytes says which bytes can start one
    // so that the scan touches only a few positions.
    std::vector<std::pair<std::string, int32_t>> specials;
    bool first_bytes[256] = {};

    int control_stand_in = -1;  // a control piece of tokenizer.model, if any: how decode() renders declared ones
    void encode_text(std::string_view text, std::vector<int32_t> &out) const;
    // What tokenizer_config.json and special_tokens_map.json declare a piece to be, whatever tokenizer.model
    // says: a special (control) token, or an added token (one unsplittable piece that is text).
    enum class Declared : uint8_t { kNone, kSpecial, kAdded };
    // Checks every declared entry against the pieces (PANGU_ERR_TOKENIZER naming the entry) and returns what
    // each id is declared to be; sets bos and eos where the files name them.
    std::vector<Declared> apply_declared(const TokenizerConfig &tc, const std::string &model_path);
    // Records piece `id` of the SentencePiece model: its type, its bytes, and whether parse_special matches it.
    void add_piece(int id, const std::string &model_path, Declared declared);
};

std::vector<Vocab::Impl::Declared> Vocab::Impl::apply_declared(const TokenizerConfig &tc,
                                                               const std::string &model_path) {
    std::vector<Declared> declared(size_t(n_vocab), Declared::kNone);
    for (const auto &a : tc.added) {
        if (a.id >= n_vocab)
            fail(PANGU_ERR_TOKENIZER, a.where + ": id " + std::to_string(a.id) + " is beyond the " +
                                          std::to_string(n_vocab) + " pieces of " + model_path);
        const std::string &piece = sp->IdToPiece(static_cast<int>(a.id));
        if (piece != a.content)
            fail(PANGU_ERR_TOKENIZER, a.where + ": content \"" + a.content + "\" disagrees with piece " +
                                          std::to_string(a.id) + " of " + model_path + ", \"" + piece + "\"");
        Declared &d = declared[size_t(a.id)];
        if (d != Declared::kSpecial) d = a.special ? Declared::kSpecial : Declared::kAdded;
    }
    for (const auto &t : tc.named) {
        const int id = sp->PieceToId(t.content);  // unknown pieces map to unk_id
        if (id < 0 || id >= n_vocab || sp->IdToPiece(id) != t.content)
            fail(PANGU_ERR_TOKENIZER, t.where + ": \"" + t.content + "\" is not a piece of " + model_path);
        if (t.role == "bos_token") bos = id;
        if (t.role == "eos_token") eos = id;
        // The unknown piece keeps its rendering; every other named token is a control token.
        if (t.role != "unk_token" && !sp->IsUnknown(id)) declared[size_t(id)] = Declared::kSpecial;
    }
    return declared;
}

Vocab::Vocab() : impl_(std::make_unique<Impl>()) {}
Vocab::~Vocab() = default;

void Vocab::Impl::add_piece(int id, const std::string &model_path, Declared declared) {
    const std::string &piece = sp->IdToPiece(id);
    if (sp->IsControl(id) || declared == Declared::kSpecial) {
        types[id] = kControl;  // renders as nothing
        if (sp->IsControl(id) && control_stand_in < 0) control_stand_in = id;
    } else if (sp->IsUnknown(id)) {
        // Rendered exactly as the decoder renders it (" \u2047 " unless the trainer set unk_surface).
        types[id] = kUnknown;
        bytes += sp->DecodeIds({id});
    } else if (sp->IsByte(id)) {
        const int v = byte_piece_value(piece);
        if (v < 0) fail(PANGU_ERR_TOKENIZER, "malformed byte piece '" + piece + "' in " + model_path);
        types[id] = kByte;
        bytes += char(v);
        if (byte_ids[v] < 0) byte_ids[v] = id;
    } else {
        // An added token that is not special is one piece that parse_special matches and text never produces.
        if (declared == Declared::kAdded) types[id] = kUserDefined;
        leading_marker[id] = piece.compare(0, 3, kSpaceMarker) == 0;
        std::string text = piece;
        replace_all(text, kSpaceMarker, " ");
        bytes += text;
    }
    // Streaming needs every token's text to fit its fixed buffer (kMaxPieceBytes) and to be UTF-8 (a byte
    // token aside): a 702-byte user-defined piece made generation fail with PANGU_ERR_INTERNAL.
    const size_t piece_bytes = bytes.size() - offsets.back();
    if (piece_bytes > kMaxPieceBytes)
        fail(PANGU_ERR_TOKENIZER, model_path + ": piece " + std::to_string(id) + " is " + std::to_string(piece_bytes) +
                                      " bytes long, longer than the " + std::to_string(kMaxPieceBytes) +
                                      " a token may be");
    if (types[id] != kByte && !utf8_valid(std::string_view(bytes).substr(offsets.back())))
        fail(PANGU_ERR_TOKENIZER, model_path + ": piece " + std::to_string(id) + " is not valid UTF-8");
    if (bytes.size() > UINT32_MAX) fail(PANGU_ERR_TOKENIZER, "vocabulary too large in " + model_path);
    offsets.push_back(uint32_t(bytes.size()));

    if ((types[id] == kControl || types[id] == kUserDefined) && !piece.empty()) {
        specials.emplace_back(piece, id);
        first_bytes[static_cast<unsigned char>(piece[0])] = true;
    }
}

void Vocab::load(const std::string &dir) {
    auto im = std::make_unique<Impl>();
    const std::string model_path = dir + "/tokenizer.model";
    std::string data, why;
    switch (read_file(model_path, kMaxTokenizerBytes, data, why)) {
    case ReadResult::kMissing: fail(PANGU_ERR_FILE_NOT_FOUND, "tokenizer file not found: " + model_path);
    case ReadResult::kError: fail(PANGU_ERR_IO, "cannot read " + model_path + ": " + why);
    case ReadResult::kTooBig: fail(PANGU_ERR_TOKENIZER, model_path + ": " + why);
    case ReadResult::kOk: break;
    }

    im->sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    // libsentencepiece parses the file with protobuf, which is not exception-safe: a std::bad_alloc inside it
    // ends in a protobuf CHECK failure (abort) or a crash in a destructor, as test_faults showed by refusing
    // its allocations one by one. It keeps about 17 times the file's size; make sure far more than that can
    // be had first, so that a device short of memory gets PANGU_ERR_OUT_OF_MEMORY here instead of inside.
    if (void *probe = std::malloc(32 * data.size() + (size_t(1) << 20))) std::free(probe);
    else throw std::bad_alloc();
    const auto status = im->sp->LoadFromSerializedProto(data);
    if (!status.ok())
        fail(PANGU_ERR_TOKENIZER, "cannot load SentencePiece model " + model_path + ": " + status.ToString());
    ProtoFacts facts;
    const int n = im->sp->GetPieceSize();
    if (!parse_model_proto(data, facts) || int(facts.types.size()) != n || n <= 0)
        fail(PANGU_ERR_TOKENIZER, "cannot read the piece table of " + model_path);

    im->n_vocab = n;
    im->bos = im->sp->bos_id();
    im->eos = im->sp->eos_id();
    im->unk = im->sp->unk_id();
    im->types = std::move(facts.types);
    // SentencePiece's decoder drops the leading U+2581 of the first piece under either flag.
    im->strips_leading_space = facts.add_dummy_prefix || facts.remove_extra_whitespaces;
    im->strip_repeats = facts.remove_extra_whitespaces;

    const TokenizerConfig tc = load_tokenizer_config(dir);
    im->add_bos = tc.add_bos;
    im->add_eos = tc.add_eos;
    const std::vector<Impl::Declared> declared = im->apply_declared(tc, model_path);

    std::fill(std::begin(im->byte_ids), std::end(im->byte_ids), -1);
    im->leading_marker.assign(size_t(n), false);
    im->offsets.reserve(size_t(n) + 1);
    im->offsets.push_back(0);
    for (int id = 0; id < n; ++id) im->add_piece(id, model_path, declared[id]);
    std::stable_sort(im->specials.begin(), im->specials.end(),
                     [](const auto &a, const auto &b) { return a.first.size() > b.first.size(); });
    impl_ = std::move(im);
}

int32_t Vocab::n_vocab() const { return impl_->n_vocab; }
int32_t Vocab::bos() const { return impl_->bos; }
int32_t Vocab::eos() const { return impl_->eos; }
bool Vocab::add_bos() const { return impl_->add_bos; }
bool Vocab::add_eos() const { return impl_->add_eos; }
bool Vocab::strips_leading_space() const { return impl_->strips_leading_space; }

void Vocab::Impl::encode_text(std::string_view text, std::vector<int32_t> &out) const {
    if (text.empty()) return;
    std::vector<int> ids;
    const auto status = sp->Encode(text, &ids);
    if (!status.ok()) fail(PANGU_ERR_TOKENIZER, "SentencePiece encoding failed: " + status.ToString());
    for (const int id : ids) {
        if (types[id] != kUserDefined && types[id] != kControl) {
            out.push_back(id);
            continue;
        }
        // SentencePiece always matches user-defined pieces (and may match a piece that tokenizer_config.json
        // declares special), but plain text must never produce a special token such as [unused10] (prompt
        // injection), so spell the piece out character by character.
        const std::string &piece = sp->IdToPiece(id);
        for (size_t i = 0; i < piece.size();) {
            const size_t len = std::max(1, utf8_len(static_cast<unsigned char>(piece[i])));
            const std::string_view ch(piece.data() + i, std::min(len, piece.size() - i));
            const int cid = sp->PieceToId(ch);
            if (types[cid] == kNormal && sp->IdToPiece(cid) == ch) {
                out.push_back(cid);
            } else {
                for (const char c : ch) {
                    const int32_t b = byte_ids[static_cast<unsigned char>(c)];
                    out.push_back(b >= 0 ? b : unk);
                }
            }
            i += ch.size();
        }
    }
}

void Vocab::tokenize(std::string_view text, bool add_bos, bool parse_special, std::vector<int32_t> &out) const {
    const Impl &im = *impl_;
    if (!im.sp) fail(PANGU_ERR_INTERNAL, "tokenizer not loaded");
    const size_t bad = utf8_invalid_offset(text);
    if (bad != std::string_view::npos)
        fail(PANGU_ERR_INVALID_UTF8, "invalid UTF-8 in text at byte offset " + std::to_string(bad));

    if (add_bos && im.bos >= 0) out.push_back(im.bos);
    if (!parse_special || im.specials.empty()) {
        im.encode_text(text, out);
        return;
    }
    // Text between special pieces is encoded on its own, as Hugging Face's slow tokenizer and llama.cpp do.
    size_t start = 0;
    for (size_t i = 0; i < text.size(); ++i) {
        if (!im.first_bytes[static_cast<unsigned char>(text[i])]) continue;
        for (const auto &[piece, id] : im.specials) {
            if (text.compare(i, piece.size(), piece) != 0) continue;
            im.encode_text(text.substr(start, i - start), out);
            out.push_back(id);
            i += piece.size() - 1;
            start = i + 1;
            break;
        }
    }
    im.encode_text(text.substr(start), out);
}

std::string_view Vocab::token_bytes(int32_t id) const {
    const Impl &im = *impl_;
    if (id < 0 || id >= im.n_vocab) fail(PANGU_ERR_INVALID_TOKEN, "token id " + std::to_string(id) + " out of range");
    return std::string_view(im.bytes.data() + im.offsets[id], im.offsets[id + 1] - im.offsets[id]);
}

// Follows SentencePieceProcessor::Decode: control tokens leave the start state alone; a byte or unknown
// token ends it (it always produces text); any other piece loses one leading U+2581 while at the start.
std::string_view Vocab::stream_bytes(int32_t id, bool &at_start) const {
    const Impl &im = *impl_;
    std::string_view bytes = token_bytes(id);
    if (!at_start || !im.strips_leading_space) {
        at_start = false;
        return bytes;
    }
    const uint8_t type = im.types[id];
    if (type == kControl) return bytes;
    if (!im.leading_marker[id]) {  // byte, unknown or text without the marker: produces output
        at_start = false;
        return bytes;
    }
    bytes.remove_prefix(1);
    at_start = im.strip_repeats && bytes.empty();
    return bytes;
}

bool Vocab::is_unsplittable(int32_t id) const {
    return id >= 0 && id < impl_->n_vocab && (impl_->types[id] == kControl || impl_->types[id] == kUserDefined);
}

bool Vocab::is_control(int32_t id) const {
    return id >= 0 && id < impl_->n_vocab && impl_->types[id] == kControl;
}

std::string Vocab::decode(const int32_t *ids, size_t n) const {
    const Impl &im = *impl_;
    if (!im.sp) fail(PANGU_ERR_INTERNAL, "tokenizer not loaded");
    std::vector<int> v;
    v.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        const int id = ids[i];
        if (id < 0 || id >= im.n_vocab)
            fail(PANGU_ERR_INVALID_TOKEN, "token id " + std::to_string(id) + " out of range");
        // A piece declared special but ordinary in tokenizer.model renders as a control piece does: nothing,
        // though it ends a run of bytes, as in streaming.
        if (im.types[id] != kControl || im.sp->IsControl(id)) v.push_back(id);
        else if (im.control_stand_in >= 0) v.push_back(im.control_stand_in);
    }
    std::string text;
    const auto status = im.sp->Decode(v, &text);
    if (!status.ok()) fail(PANGU_ERR_TOKENIZER, "SentencePiece decoding failed: " + status.ToString());
    // SentencePiece already replaces broken byte sequences; this guards the promise that output is UTF-8.
    if (utf8_valid(text)) return text;
    std::string clean(3 * text.size() + 16, '\0');
    Utf8Assembler as;
    size_t len = as.push(text, clean.data(), clean.size());
    len += as.flush(clean.data() + len, clean.size() - len);
    clean.resize(len);
    return clean;
}

int32_t Vocab::first_difference(const Vocab &other) const {
    if (n_vocab() != other.n_vocab() || bos() != other.bos() || eos() != other.eos()) return 0;
    for (int32_t i = 0; i < n_vocab(); ++i)
        if (token_bytes(i) != other.token_bytes(i) || is_control(i) != other.is_control(i)) return i;
    return -1;
}

int32_t Vocab::piece_id(std::string_view piece) const {
    const Impl &im = *impl_;
    if (!im.sp) return -1;
    const int id = im.sp->PieceToId(piece);  // unknown pieces map to unk_id
    return id >= 0 && id < im.n_vocab && im.sp->IdToPiece(id) == piece ? id : -1;
}

}  // namespace pangu
