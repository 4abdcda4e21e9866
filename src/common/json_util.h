// JSON parsing for every file the library reads (config.json, safetensors headers and index,
// tokenizer_config.json, device profiles).
#pragma once

#include <json/json.h>

#include <string>

namespace pangu {

// Parses [begin, end) into `root`; false with `errs` set if the text is not valid JSON (nesting deeper than
// jsoncpp's stack limit included, for which jsoncpp throws). Throws std::bad_alloc when memory runs out.
// jsoncpp reads numbers through an istringstream, and iostreams swallow a std::bad_alloc and report a bad
// number, so a failed parse is not blamed on the text at once: if memory is short it throws std::bad_alloc,
// otherwise it parses once more (the failure may have been one refused allocation).
bool parse_json(const char *begin, const char *end, Json::Value &root, std::string &errs, bool reject_dup_keys = true);

inline bool parse_json(const std::string &text, Json::Value &root, std::string &errs, bool reject_dup_keys = true) {
    return parse_json(text.data(), text.data() + text.size(), root, errs, reject_dup_keys);
}

}  // namespace pangu
