#include "model/vocab.h"

#include <json/json.h>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/io.h"
#include "common/json_util.h"

namespace pangu {

namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
constexpr char kSpaceMarker[] = "\xE2\x96\x81";  // U+2581, SentencePiece's whitespace symbol

// Piece types as numbered in sentencepiece_model.proto (not installed by Debian, so read from the wire).
enum PieceType : uint8_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

// Number of bytes of the character a lead byte starts, 0 if it can never start one.
inline int utf8_len(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 0;
}

// Whether `b` may follow `lead` as its second byte. The narrowed ranges exclude overlongs (E0, F0),
// surrogates (ED) and code points above U+10FFFF (F4).
inline bool utf8_second_ok(unsigned char lead, unsigned char b) {
    switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
    }
}

// Offset of the first byte that does not begin a valid character, or npos.
size_t utf8_invalid_offset(std::string_view s) {
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
        const int len = utf8_len(p[i]);
        if (len == 0 || i + len > n) return i;
        if (len > 1 && !utf8_second_ok(p[i], p[i + 1])) return i;
        for (int k = 2; k < len; ++k)
            if ((p[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return std::string_view::npos;
}

// Minimal protobuf wire-format reader: the C++ API of libsentencepiece 0.1.97 hides the piece types
// (user-defined has no accessor) and the normalizer flags, and Debian ships no generated proto header.
struct WireReader {
    const unsigned char *p, *end;
    bool ok = true;

    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (p >= end) break;
            const unsigned char b = *p++;
            v |= uint64_t(b & 0x7F) << shift;
            if (!(b & 0x80)) return v;
        }
        ok = false;
        return 0;
    }
    // Reads a tag; false at the end or on malformed input.
    bool next(uint32_t &field, uint32_t &wire_type) {
        if (!ok || p >= end) return false;
        const uint64_t tag = varint();
        field = uint32_t(tag >> 3);
        wire_type = uint32_t(tag & 7);
        return ok;
    }
    WireReader sub() {
        const uint64_t len = varint();
        if (!ok || len > uint64_t(end - p)) {
            ok = false;
            return {end, end};
        }
        WireReader r{p, p + len};
        p += len;
        return r;
    }
    void skip(uint32_t wire_type) {
        switch (wire_type) {
        case 0: varint(); break;
        case 1: advance(8); break;
        case 2: sub(); break;
        case 5: advance(4); break;
        default: ok = false;  // groups are not used by sentencepiece_model.proto
        }
    }
    void advance(size_t n) {
        if (size_t(end - p) < n) ok = false;
        else p += n;
    }
};

struct ProtoFacts {
    std::vector<uint8_t> types;
    std::vector<bool> leading_marker;  // piece starts with U+2581 (what the decoder strips, not a literal ' ')
    bool add_dummy_prefix = true;  // proto defaults
    bool remove_extra_whitespaces = true;
};

bool parse_model_proto(std::string_view data, ProtoFacts &facts) {
    WireReader r{reinterpret_cast<const unsigned char *>(data.data()),
                 reinterpret_cast<const unsigned char *>(data.data()) + data.size()};
    uint32_t field, wt;
    while (r.next(field, wt)) {
        if (field == 1 && wt == 2) {  // ModelProto.pieces
            WireReader piece = r.sub();
            uint8_t type = kNormal;
            while (piece.next(field, wt)) {
                if (field == 3 && wt == 0) type = uint8_t(piece.varint());
                else piece.skip(wt);
            }
            if (!piece.ok) return false;
            facts.types.push_back(type);
        } else if (field == 3 && wt == 2) {  // ModelProto.normalizer_spec
            WireReader norm = r.sub();
            while (norm.next(field, wt)) {
                if (field == 3 && wt == 0) facts.add_dummy_prefix = norm.varint() != 0;
                else if (field == 4 && wt == 0) facts.remove_extra_whitespaces = norm.varint() != 0;
                else norm.skip(wt);
            }
            if (!norm.ok) return false;
        } else {
            r.skip(wt);
        }
    }
    return r.ok;
}

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

    void encode_text(std::string_view text, std::vector<int32_t> &out) const;
};

void parse_tokenizer_config(const std::string &text, const std::string &config_path, bool &add_bos, bool &add_eos) {
    Json::Value root;
    std::string errs;
    if (!parse_json(text, root, errs, false)) fail(PANGU_ERR_CONFIG, "malformed JSON in " + config_path + ": " + errs);
    if (!root.isObject()) fail(PANGU_ERR_CONFIG, config_path + ": top level is not a JSON object");
    auto read_bool = [&](const char *key, bool &value) {
        const Json::Value &v = root[key];
        if (v.isNull()) return;
        if (!v.isBool()) fail(PANGU_ERR_CONFIG, config_path + ": \"" + key + "\" is not a boolean");
        value = v.asBool();
    };
    read_bool("add_bos_token", add_bos);
    read_bool("add_eos_token", add_eos);
}

Vocab::Vocab() : impl_(std::make_unique<Impl>()) {}
Vocab::~Vocab() = default;

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

    std::fill(std::begin(im->byte_ids), std::end(im->byte_ids), -1);
    im->leading_marker.assign(size_t(n), false);
    im->offsets.reserve(size_t(n) + 1);
    im->offsets.push_back(0);
    for (int id = 0; id < n; ++id) {
        const std::string &piece = im->sp->IdToPiece(id);
        if (im->sp->IsControl(id)) {
            im->types[id] = kControl;
        } else if (im->sp->IsUnknown(id)) {
            // Rendered exactly as the decoder renders it (" \u2047 " unless the trainer set unk_surface).
            im->types[id] = kUnknown;
            im->bytes += im->sp->DecodeIds({id});
        } else if (im->sp->IsByte(id)) {
            const int v = byte_piece_value(piece);
            if (v < 0) fail(PANGU_ERR_TOKENIZER, "malformed byte piece '" + piece + "' in " + model_path);
            im->types[id] = kByte;
            im->bytes += char(v);
            if (im->byte_ids[v] < 0) im->byte_ids[v] = id;
        } else {
            im->leading_marker[id] = piece.compare(0, 3, kSpaceMarker) == 0;
            std::string text = piece;
            replace_all(text, kSpaceMarker, " ");
            im->bytes += text;
        }
        // Streaming needs every token's text to fit its fixed buffer (kMaxPieceBytes) and to be UTF-8 (a byte
        // token aside): a 702-byte user-defined piece made generation fail with PANGU_ERR_INTERNAL.
        const size_t piece_bytes = im->bytes.size() - im->offsets.back();
        if (piece_bytes > kMaxPieceBytes)
            fail(PANGU_ERR_TOKENIZER, model_path + ": piece " + std::to_string(id) + " is " + std::to_string(piece_bytes) +
                                          " bytes long, longer than the " + std::to_string(kMaxPieceBytes) +
                                          " a token may be");
        if (im->types[id] != kByte && !utf8_valid(std::string_view(im->bytes).substr(im->offsets.back())))
            fail(PANGU_ERR_TOKENIZER, model_path + ": piece " + std::to_string(id) + " is not valid UTF-8");
        if (im->bytes.size() > UINT32_MAX) fail(PANGU_ERR_TOKENIZER, "vocabulary too large in " + model_path);
        im->offsets.push_back(uint32_t(im->bytes.size()));

        if ((im->types[id] == kControl || im->types[id] == kUserDefined) && !piece.empty()) {
            im->specials.emplace_back(piece, id);
            im->first_bytes[static_cast<unsigned char>(piece[0])] = true;
        }
    }
    std::stable_sort(im->specials.begin(), im->specials.end(),
                     [](const auto &a, const auto &b) { return a.first.size() > b.first.size(); });

    const std::string config_path = dir + "/tokenizer_config.json";
    std::string config;
    switch (read_file(config_path, kMaxJsonBytes, config, why)) {
    case ReadResult::kMissing: break;  // optional: defaults apply
    case ReadResult::kError: fail(PANGU_ERR_IO, "cannot read " + config_path + ": " + why);
    case ReadResult::kTooBig: fail(PANGU_ERR_CONFIG, config_path + ": " + why);
    case ReadResult::kOk: parse_tokenizer_config(config, config_path, im->add_bos, im->add_eos); break;
    }
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
        if (types[id] != kUserDefined) {
            out.push_back(id);
            continue;
        }
        // SentencePiece always matches user-defined pieces, but plain text must never produce a special
        // token such as [unused10] (prompt injection), so spell the piece out character by character.
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

bool Vocab::is_control(int32_t id) const {
    return id >= 0 && id < impl_->n_vocab && impl_->types[id] == kControl;
}

std::string Vocab::decode(const int32_t *ids, size_t n) const {
    const Impl &im = *impl_;
    if (!im.sp) fail(PANGU_ERR_INTERNAL, "tokenizer not loaded");
    std::vector<int> v(ids, ids + n);
    for (const int id : v)
        if (id < 0 || id >= im.n_vocab)
            fail(PANGU_ERR_INVALID_TOKEN, "token id " + std::to_string(id) + " out of range");
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

int32_t Vocab::piece_id(std::string_view piece) const {
    const Impl &im = *impl_;
    if (!im.sp) return -1;
    const int id = im.sp->PieceToId(piece);  // unknown pieces map to unk_id
    return id >= 0 && id < im.n_vocab && im.sp->IdToPiece(id) == piece ? id : -1;
}

bool Vocab::has_chat_tokens() const { return piece_id("[unused9]") >= 0 && piece_id("[unused10]") >= 0; }

std::string Vocab::apply_chat_template(const pangu_chat_message *messages, size_t n,
                                       bool add_generation_prompt) const {
    if (!has_chat_tokens())
        fail(PANGU_ERR_UNSUPPORTED, "the vocabulary has no [unused9]/[unused10] chat tokens");
    if (n > 0 && !messages) fail(PANGU_ERR_INVALID_ARGUMENT, "messages is NULL");

    static const char *const kRoles[][2] = {
        {"system", "系统"}, {"user", "用户"}, {"assistant", "助手"}, {"tool", "工具"}};
    std::vector<const char *> roles(n);
    bool has_system = false;
    for (size_t i = 0; i < n; ++i) {
        const char *role = messages[i].role;
        if (!role) fail(PANGU_ERR_INVALID_ARGUMENT, "message " + std::to_string(i) + " has a NULL role");
        if (!messages[i].content)
            fail(PANGU_ERR_INVALID_ARGUMENT, "message " + std::to_string(i) + " has NULL content");
        for (const auto &r : kRoles)
            if (std::strcmp(role, r[0]) == 0 || std::strcmp(role, r[1]) == 0) roles[i] = r[1];
        if (!roles[i])
            fail(PANGU_ERR_INVALID_ARGUMENT, "message " + std::to_string(i) + " has unknown role '" + role + "'");
        const size_t bad = utf8_invalid_offset(messages[i].content);
        if (bad != std::string_view::npos)
            fail(PANGU_ERR_INVALID_UTF8,
                 "invalid UTF-8 in message " + std::to_string(i) + " at byte offset " + std::to_string(bad));
        has_system = has_system || roles[i] == kRoles[0][1];
    }

    std::string out;
    if (!has_system) out += "[unused9]系统：[unused10]";
    for (size_t i = 0; i < n; ++i) {
        out += "[unused9]";
        out += roles[i];
        out += "：";
        out += messages[i].content;
        out += "[unused10]";
    }
    if (add_generation_prompt) out += "[unused9]助手：";
    return out;
}

// Mirrors SentencePiece's decoder, which consumes one byte per U+FFFD when a byte run does not form a
// character, so that streamed text equals decode() even for broken sequences.
size_t Utf8Assembler::push(std::string_view bytes, char *out, size_t out_capacity) {
    size_t w = 0;
    auto put = [&](const char *s, size_t len) {
        if (w + len > out_capacity) fail(PANGU_ERR_INTERNAL, "Utf8Assembler output buffer too small");
        std::memcpy(out + w, s, len);
        w += len;
    };
    // A control token has no bytes but still separates byte runs in the decoder, which then renders a
    // held partial character as one U+FFFD per byte.
    if (bytes.empty()) return flush(out, out_capacity);
    for (const char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        if (n_pending_ > 0) {
            const bool cont = n_pending_ == 1 ? utf8_second_ok(pending_[0], b) : (b & 0xC0) == 0x80;
            if (cont) {
                pending_[n_pending_++] = b;
                if (int(n_pending_) == utf8_len(pending_[0])) {
                    put(reinterpret_cast<const char *>(pending_), n_pending_);
                    n_pending_ = 0;
                }
                continue;
            }
            // The lead and every held continuation byte each become one U+FFFD; `b` starts afresh.
            for (size_t k = 0; k < n_pending_; ++k) put(kReplacement, 3);
            n_pending_ = 0;
        }
        const int len = utf8_len(b);
        if (len == 1) put(&c, 1);
        else if (len == 0) put(kReplacement, 3);
        else pending_[n_pending_++] = b;
    }
    return w;
}

size_t Utf8Assembler::flush(char *out, size_t out_capacity) {
    if (out_capacity < 3 * n_pending_) fail(PANGU_ERR_INTERNAL, "Utf8Assembler output buffer too small");
    size_t w = 0;
    for (size_t k = 0; k < n_pending_; ++k, w += 3) std::memcpy(out + w, kReplacement, 3);
    n_pending_ = 0;
    return w;
}

bool utf8_valid(std::string_view s) { return utf8_invalid_offset(s) == std::string_view::npos; }

}  // namespace pangu
