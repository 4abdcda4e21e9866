#include "cli.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "calib.h"
#include "common/common.h"
#include "model/model.h"

namespace fs = std::filesystem;

namespace pangu::train::cli {

std::optional<int64_t> parse_int(const std::string &v, int64_t lo, int64_t hi) {
    if (v.empty() || v.size() > 18 || v.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    const int64_t n = std::stoll(v);
    if (n < lo || n > hi) return std::nullopt;
    return n;
}

std::optional<double> parse_real(const std::string &v, double lo, double hi, bool open_lo) {
    char *end = nullptr;
    const double d = std::strtod(v.c_str(), &end);
    if (v.empty() || end == v.c_str() || *end != '\0' || !std::isfinite(d)) return std::nullopt;
    if (d > hi || d < lo || (open_lo && d == lo)) return std::nullopt;
    return d;
}

std::optional<Trainable> parse_trainable(const std::string &v) {
    if (v == "all") return Trainable::ALL;
    if (v == "layers") return Trainable::LAYERS;
    if (v == "mlp") return Trainable::MLP;
    return std::nullopt;
}

int usage_error(const char *tool, const std::string &message) {
    std::fprintf(stderr, "%s: %s (see --help)\n", tool, message.c_str());
    return 2;
}

int parse_common(const std::string &a, const std::string &v, CommonOptions &c, DistillOptions &d, std::string *takes) {
    const int64_t big = int64_t(1) << 40;
    auto check = [&](bool ok, const char *what) {
        if (!ok) *takes = what;
        return ok ? 1 : -1;
    };
    if (a == "-t") return check(assign(parse_int(v, 1, 1024), c.threads), "a number of threads from 1 to 1024");
    if (a == "--eval-tokens") return check(assign(parse_int(v, 2, big), c.eval_tokens), "a number of tokens >= 2");
    if (a == "--data-tokens") return check(assign(parse_int(v, 2, big), c.data_tokens), "a number of tokens >= 2");
    if (a == "--lr") return check(assign(parse_real(v, 0.0, 1.0, true), d.lr), "a learning rate in (0, 1]");
    if (a == "--temp") return check(assign(parse_real(v, 0.0, 100.0, true), d.tau), "a temperature in (0, 100]");
    if (a == "--ce-weight") return check(assign(parse_real(v, 0.0, 1e3), d.ce_weight), "a weight >= 0");
    if (a == "--batch") return check(assign(parse_int(v, 1, 1 << 16), d.batch), "a positive number of windows");
    if (a == "--train") return check(assign(parse_trainable(v), d.train), "all, layers or mlp");
    return 0;
}

Windows read_windows(const Model &m, const std::string &path, bool jsonl, int ctx, size_t max_tokens,
                     size_t *n_tokens) {
    const bool is_jsonl = jsonl || (path.size() > 6 && path.compare(path.size() - 6, 6, ".jsonl") == 0);
    TokenWindows w = make_windows(m, read_documents(path, is_jsonl), ctx, max_tokens);
    if (w.windows.empty()) fail(PANGU_ERR_INVALID_ARGUMENT, path + ": no window of at least 2 tokens");
    if (n_tokens) *n_tokens = w.n_tokens;
    return std::move(w.windows);
}

std::string human_secs(double s) {
    char out[32];
    if (!std::isfinite(s) || s < 0) return "?";
    if (s < 60)
        std::snprintf(out, sizeof out, "%.1fs", s);
    else if (s < 3600)
        std::snprintf(out, sizeof out, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
    else
        std::snprintf(out, sizeof out, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
    return out;
}

void check_report_path(const std::string &path) {
    if (path.empty()) return;
    const fs::path dir = fs::path(path).parent_path().empty() ? fs::path(".") : fs::path(path).parent_path();
    if (!fs::is_directory(dir)) fail(PANGU_ERR_FILE_NOT_FOUND, "--report: " + dir.string() + " is not a directory");
}

Progress::Progress(bool quiet) : quiet_(quiet), tty_(isatty(fileno(stderr)) != 0) {}

void Progress::update(const std::string &line, bool force_line) {
    if (quiet_) return;
    const double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    if (tty_) {
        std::fprintf(stderr, "\r\033[K%s", line.c_str());
        open_ = true;
        if (force_line) std::fprintf(stderr, "\n"), open_ = false;
    } else if (force_line || now - last_ >= 10.0) {  // a log gets a line every 10 s
        std::fprintf(stderr, "%s\n", line.c_str());
        last_ = now;
    }
    std::fflush(stderr);
}

void Progress::done() {
    if (open_) std::fprintf(stderr, "\n");
    open_ = false;
}

}  // namespace pangu::train::cli
