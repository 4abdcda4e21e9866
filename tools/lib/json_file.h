// Writing a JSON report the way every tool writes its outputs: under a temporary name, renamed at the end.
#pragma once

#include <json/json.h>

#include <string>

namespace pangu {

// Writes `v` to path + ".partial-PID" and renames it to `path`. On failure the temporary file is removed and
// PANGU_ERR_IO is thrown: `prefix` + "cannot write " + the temporary name (e.g. prefix "--report: ").
void write_json_file(const std::string &path, const Json::Value &v, const std::string &prefix = "");

}  // namespace pangu
