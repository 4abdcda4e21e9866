// The latency model's device profile: the built-in 310P figures, or a JSON file that overrides them.
#include <json/json.h>

#include <cmath>
#include <string>

#include "common/io.h"
#include "common/json_util.h"
#include "device/npusim/internal.h"

namespace pangu {
namespace npusim {

bool load_profile(const std::string &path, Profile *p, std::string *err) {
    std::string text, why;
    if (read_file(path, kMaxJsonBytes, text, why) != ReadResult::kOk) {
        *err = path + ": cannot read the npu-sim device profile: " + why;
        return false;
    }
    return parse_profile(text, path, p, err);
}

bool parse_profile(const std::string &text, const std::string &path, Profile *p, std::string *err) {
    Json::Value root;
    std::string errs;
    if (!parse_json(text, root, errs) || !root.isObject()) {
        *err = path + ": the npu-sim device profile is not a JSON object" + (errs.empty() ? "" : ": " + errs);
        return false;
    }
    struct Field {
        const char *key;
        double *v;
    } fields[] = {{"ai_cores", &p->ai_cores},     {"fp16_tflops", &p->fp16_tflops},
                  {"int8_tops", &p->int8_tops},   {"memory_gbps", &p->memory_gbps},
                  {"host_link_gbps", &p->host_link_gbps}, {"launch_us", &p->launch_us}};
    for (const std::string &key : root.getMemberNames()) {
        const Json::Value &v = root[key];
        if (key == "name" || key == "note") {  // free text for the reader of the file
            if (!v.isString()) {
                *err = path + ": field \"" + key + "\" must be a string";
                return false;
            }
            continue;
        }
        Field *f = nullptr;
        for (Field &x : fields)
            if (key == x.key) f = &x;
        if (!f) {  // a misspelt field would otherwise silently keep its default
            *err = path + ": unknown field \"" + key +
                   "\" (known: name, note, ai_cores, fp16_tflops, int8_tops, memory_gbps, host_link_gbps, launch_us)";
            return false;
        }
        const bool ok = v.isNumeric() && std::isfinite(v.asDouble()) &&
                        (f->v == &p->launch_us ? v.asDouble() >= 0 : v.asDouble() > 0) &&
                        (f->v != &p->ai_cores || (v.isIntegral() || v.asDouble() == std::floor(v.asDouble())));
        if (!ok) {
            *err = path + ": field \"" + key + "\" must be a positive number" +
                   (f->v == &p->ai_cores ? " (an integer)" : f->v == &p->launch_us ? " (or 0)" : "");
            return false;
        }
        *f->v = v.asDouble();
    }
    return true;
}

}  // namespace npusim
}  // namespace pangu
