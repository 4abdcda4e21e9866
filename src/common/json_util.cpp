#include "common/json_util.h"

#include <cstdlib>
#include <memory>
#include <new>

namespace pangu {

bool parse_json(const char *begin, const char *end, Json::Value &root, std::string &errs, bool reject_dup_keys) {
    Json::CharReaderBuilder builder;
    builder["collectComments"] = false;
    builder["rejectDupKeys"] = reject_dup_keys;
    const std::unique_ptr<Json::CharReader> reader(builder.newCharReader());
    // Nesting deeper than jsoncpp's stack limit (1000) throws Json::RuntimeError instead of failing the parse.
    auto parse = [&] {
        try {
            return reader->parse(begin, end, &root, &errs);
        } catch (const Json::Exception &e) {
            errs = e.what();
            return false;
        }
    };
    if (parse()) return true;
    // Found by test_faults: with one allocation refused inside the number parser, "1e-05" in a valid
    // config.json came out as "'1e-05' is not a number" (PANGU_ERR_CONFIG).
    void *probe = std::malloc(size_t(64) << 10);
    if (!probe) throw std::bad_alloc();
    std::free(probe);
    root = Json::Value();
    errs.clear();
    return parse();
}

}  // namespace pangu
