// A reader of the SentencePiece model file's protobuf wire format, for the facts libsentencepiece's C++ API
// hides: the piece types (user-defined has no accessor) and the normalizer flags. Debian ships no generated
// proto header, so the few fields needed are read from the wire.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace pangu {

// Piece types as numbered in sentencepiece_model.proto.
enum PieceType : uint8_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct ProtoFacts {
    std::vector<uint8_t> types;   // one PieceType per piece, in id order
    bool add_dummy_prefix = true;  // proto defaults
    bool remove_extra_whitespaces = true;
};

// Reads the piece types and normalizer flags of a serialized ModelProto; false if it is malformed.
bool parse_model_proto(std::string_view data, ProtoFacts &facts);

}  // namespace pangu
