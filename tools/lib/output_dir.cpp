#include "output_dir.h"

#include <filesystem>

#include "common/common.h"

namespace fs = std::filesystem;

namespace pangu {

void replace_dir(const std::string &tmp, const std::string &out, bool force, const std::string &tag) {
    if (!fs::exists(fs::symlink_status(out))) return fs::rename(tmp, out);
    if (!force) fail(PANGU_ERR_INVALID_ARGUMENT, out + " exists; use --force to replace it");
    const std::string old = out + ".old-" + tag;
    fs::rename(out, old);
    try {
        fs::rename(tmp, out);
    } catch (...) {
        fs::rename(old, out);
        throw;
    }
    fs::remove_all(old);
}

}  // namespace pangu
