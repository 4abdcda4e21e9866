// Output directories the way every tool writes them: complete under a temporary name, then moved into place.
#pragma once

#include <string>

namespace pangu {

// Moves the finished directory `tmp` to `out`. An existing `out` is refused (PANGU_ERR_INVALID_ARGUMENT, "use
// --force") unless `force`; with it, `out` is moved aside to out + ".old-" + `tag` rather than deleted, and put
// back if the second rename fails, so that a failure never loses the previous output. Throws
// std::filesystem::filesystem_error on a failed rename.
void replace_dir(const std::string &tmp, const std::string &out, bool force, const std::string &tag);

}  // namespace pangu
