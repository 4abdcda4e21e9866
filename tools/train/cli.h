// What pangu-prune and pangu-distill share: argument parsing, the text they train or score on, a progress line,
// and reports written under a temporary name.
#pragma once

#include <json/json.h>

#include <cstdint>
#include <optional>
#include <string>

#include "distill.h"
#include "net.h"
#include "params.h"

namespace pangu {
class Model;
}

namespace pangu::train::cli {

// A whole number in [lo, hi], or nullopt.
std::optional<int64_t> parse_int(const std::string &v, int64_t lo, int64_t hi);
// A finite number in [lo, hi] (or (lo, hi] with `open_lo`), or nullopt.
std::optional<double> parse_real(const std::string &v, double lo, double hi, bool open_lo = false);
// all, layers or mlp.
std::optional<Trainable> parse_trainable(const std::string &v);

// Stores a parsed value; false when parsing failed.
template <typename T, typename U>
bool assign(std::optional<U> v, T &out) {
    if (!v) return false;
    out = static_cast<T>(*v);
    return true;
}

// Prints "TOOL: MESSAGE (see --help)" and returns the usage-error exit status, 2.
int usage_error(const char *tool, const std::string &message);

// The options both tools take: -t, --eval-tokens, --data-tokens and the distillation's --lr, --temp,
// --ce-weight, --batch, --train.
struct CommonOptions {
    int threads = 0;
    int64_t eval_tokens = 16384, data_tokens = -1;
};
// 1 when `flag` is one of them and `value` is good, 0 when it is not one of them, -1 when the value is bad
// (`takes` then says what the flag takes).
int parse_common(const std::string &flag, const std::string &value, CommonOptions &c, DistillOptions &d,
                 std::string *takes);

// The windows of a text file: JSONL ("text" of every line) when the name ends in .jsonl or `jsonl`, else the
// whole file as one document; `ctx` tokens a window, at most `max_tokens` (SIZE_MAX: all), tokenized by m.
// Throws with the file named for a file that cannot be read or holds no text.
Windows read_windows(const Model &m, const std::string &path, bool jsonl, int ctx, size_t max_tokens,
                     size_t *n_tokens = nullptr);

// "3m05s".
std::string human_secs(double s);

// Checks before the work that a report can be written: its directory exists.
void check_report_path(const std::string &path);

// A line that rewrites itself on a terminal and is printed every `every` calls otherwise.
class Progress {
public:
    explicit Progress(bool quiet);
    void update(const std::string &line, bool force_line = false);
    void done();

private:
    bool quiet_, tty_;
    bool open_ = false;
    double last_ = -1e9;
};

}  // namespace pangu::train::cli
