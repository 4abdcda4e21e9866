#include "format/sp_proto.h"

#include <cstddef>

namespace pangu {

namespace {

// Minimal protobuf wire-format reader (libsentencepiece 0.1.97's C++ API hides what parse_model_proto reads).
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

}  // namespace

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

}  // namespace pangu
