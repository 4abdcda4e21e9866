#include "json_file.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/common.h"

namespace pangu {

void write_json_file(const std::string &path, const Json::Value &v, const std::string &prefix) {
    const std::string tmp = path + ".partial-" + std::to_string(getpid());
    {
        std::ofstream f(tmp);
        f << v << "\n";
        if (!f) {
            std::error_code ec;
            std::filesystem::remove(tmp, ec);
            fail(PANGU_ERR_IO, prefix + "cannot write " + tmp);
        }
    }
    std::filesystem::rename(tmp, path);
}

}  // namespace pangu
