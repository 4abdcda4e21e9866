// Cut-down held-out text for the unit tests that run calibration or training: documents of
// PANGU_SHARED_DIR/data/dev.jsonl written as a smaller JSONL file.
#pragma once

#include <json/json.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace pangu_test {

// Documents of dev.jsonl chosen by `keep(index)`, each cut to about `max_bytes` on a character boundary, as
// JSONL `dir/name`.
inline std::string cut_jsonl(const std::filesystem::path &dir, const char *name, bool (*keep)(int), size_t max_bytes) {
    std::ifstream f(std::string(PANGU_SHARED_DIR) + "/data/dev.jsonl");
    if (!f) throw std::runtime_error("cannot read " + std::string(PANGU_SHARED_DIR) + "/data/dev.jsonl");
    const std::string path = (dir / name).string();
    std::ofstream out(path);
    std::string line;
    for (int i = 0; std::getline(f, line); ++i) {
        if (!keep(i)) continue;
        Json::Value doc;
        std::istringstream(line) >> doc;
        std::string text = doc["text"].asString();
        if (text.size() > max_bytes) {
            size_t cut = max_bytes;
            while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
            text.resize(cut);
        }
        Json::Value o;
        o["text"] = text;
        Json::StreamWriterBuilder wb;
        wb["indentation"] = "";
        out << Json::writeString(wb, o) << "\n";
    }
    return path;
}

}  // namespace pangu_test
