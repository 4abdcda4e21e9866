// Fuzzes load_state, the reader of the training engine's resume state (tools/train/checkpoint.h). The input is
// a whole state file; it is written to a fresh directory (on tmpfs when there is one) and loaded for the shape
// of fuzz_train_state.h under each trainable set in turn (all, layers, mlp: the file names its own, so that the
// input stays a plain state file that pangu-distill --resume would read).
// Each load either gives a state of exactly that shape (every tensor, and a moment pair for each trainable one,
// sized as the shape says and finite; step >= 0; meta a JSON object or null, as save_state writes the run's
// settings), or throws a pangu::Error with a status checkpoint.h documents and the file named. A file that loads
// under one trainable set is refused under the others and for another shape (PANGU_ERR_INVALID_ARGUMENT), and
// save_state writes it again: loaded back, it is the same state.
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "checkpoint.h"
#include "common/common.h"
#include "fuzz_train_state.h"
#include "fuzz_util.h"

using pangu::train::Params;
using pangu::train::Shape;
using pangu::train::TensorRef;
using pangu::train::Trainable;
using pangu::train::TrainState;

namespace {

std::string g_dir, g_in, g_out;

void remove_dir() {
    if (g_dir.empty()) return;
    for (const std::string &f : {g_in, g_out, g_out + ".partial"}) unlink(f.c_str());
    rmdir(g_dir.c_str());
}

std::string json_text(const Json::Value &v) {  // as save_state writes the meta
    Json::StreamWriterBuilder wb;
    wb["indentation"] = "";
    return Json::writeString(wb, v);
}

// load_state(path, shape, tr) into *out; the status it threw (PANGU_OK when it returned), checked against the
// contract: a documented status (FILE_NOT_FOUND cannot be right: the file is there) and the file named.
pangu_status attempt(const std::string &path, const Shape &shape, Trainable tr, TrainState *out) {
    try {
        *out = pangu::train::load_state(path, shape, tr);
        return PANGU_OK;
    } catch (const pangu::Error &e) {
        if (fuzz::verbose())
            std::fprintf(stderr, "load_state(%s): %s: %s\n", pangu::train::trainable_name(tr),
                         pangu_status_string(e.status()), e.what());
        FUZZ_CHECK(fuzz::one_of(e.status(), {PANGU_ERR_SAFETENSORS_HEADER, PANGU_ERR_TENSOR_BOUNDS, PANGU_ERR_DTYPE,
                                             PANGU_ERR_MISSING_TENSOR, PANGU_ERR_SHAPE, PANGU_ERR_INVALID_ARGUMENT,
                                             PANGU_ERR_NUMERIC}),
                   "status %d (%s): %s", (int)e.status(), pangu_status_string(e.status()), e.what());
        FUZZ_CHECK(std::strstr(e.what(), path.c_str()) != nullptr, "the message does not name the file: %s", e.what());
        return e.status();
    }
    // Any other exception escapes and aborts the run: pangu-distill would report it without a status.
}

bool same_shape(const Shape &a, const Shape &b) {
    return a.n_vocab == b.n_vocab && a.n_embd == b.n_embd && a.n_head == b.n_head && a.n_kv == b.n_kv &&
           a.head_dim == b.head_dim && a.n_ff == b.n_ff && a.bias == b.bias && a.tied == b.tied && a.eps == b.eps &&
           a.rope_theta == b.rope_theta;
}

// What a loaded state promises: exactly the tensors of `want` under `tr`, each finite.
void check_state(TrainState &s, const Shape &want, Trainable tr) {
    FUZZ_CHECK(same_shape(s.params.shape, want), "the state's params.shape is not the one asked for");
    Params<float> ref = Params<float>::zeros(want);
    const std::vector<TensorRef<float>> got = pangu::train::tensors(s.params, tr), exp = pangu::train::tensors(ref, tr);
    FUZZ_CHECK(got.size() == exp.size(), "%zu tensors, the shape has %zu", got.size(), exp.size());
    size_t k = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        const TensorRef<float> &t = got[i];
        FUZZ_CHECK(t.name == exp[i].name && t.shape == exp[i].shape && t.size == exp[i].size &&
                       t.trainable == exp[i].trainable,
                   "tensor %zu: %s, expected %s of its shape", i, t.name.c_str(), exp[i].name.c_str());
        for (int64_t j = 0; j < t.size; ++j) FUZZ_CHECK(std::isfinite(t.data[j]), "%s[%lld] not finite", t.name.c_str(), (long long)j);
        if (!t.trainable) continue;
        FUZZ_CHECK(k < s.m.size() && k < s.v.size(), "no moments for %s", t.name.c_str());
        FUZZ_CHECK(static_cast<int64_t>(s.m[k].size()) == t.size && static_cast<int64_t>(s.v[k].size()) == t.size,
                   "moments of %s sized %zu and %zu, not %lld", t.name.c_str(), s.m[k].size(), s.v[k].size(),
                   (long long)t.size);
        for (size_t j = 0; j < s.m[k].size(); ++j)
            FUZZ_CHECK(std::isfinite(s.m[k][j]) && std::isfinite(s.v[k][j]), "moment of %s not finite", t.name.c_str());
        ++k;
    }
    FUZZ_CHECK(s.m.size() == k && s.v.size() == k, "%zu and %zu moments for %zu trainable tensors", s.m.size(),
               s.v.size(), k);
    FUZZ_CHECK(s.step >= 0, "step %lld", (long long)s.step);
    FUZZ_CHECK(s.meta.isObject() || s.meta.isNull(), "meta is neither an object nor null: %s", json_text(s.meta).c_str());
}

// A loaded state is one a run can go on from and save again: save_state accepts it and load_state reads back the
// same values.
void check_saves_again(TrainState &s, const Shape &want, Trainable tr) {
    try {
        pangu::train::save_state(s, tr, g_out);
    } catch (const pangu::Error &e) {
        FUZZ_CHECK(false, "save_state refused a state load_state accepted: %s", e.what());
    }
    TrainState r;
    const pangu_status st = attempt(g_out, want, tr, &r);
    FUZZ_CHECK(st == PANGU_OK, "the state written again does not load: %s", pangu_status_string(st));
    const auto a = pangu::train::tensors(s.params, tr), b = pangu::train::tensors(r.params, tr);
    for (size_t i = 0; i < a.size(); ++i)
        FUZZ_CHECK(std::memcmp(a[i].data, b[i].data, static_cast<size_t>(a[i].size) * 4) == 0, "%s changed",
                   a[i].name.c_str());
    FUZZ_CHECK(r.m == s.m && r.v == s.v, "the moments changed");
    FUZZ_CHECK(r.step == s.step, "step %lld became %lld", (long long)s.step, (long long)r.step);
    // Compared as the text save_state writes: jsoncpp's writer turns bytes that are not UTF-8 into U+FFFD, so
    // the values may differ while the text written from them does not.
    FUZZ_CHECK(json_text(r.meta) == json_text(s.meta), "meta changed: %s became %s", json_text(s.meta).c_str(),
               json_text(r.meta).c_str());
    unlink(g_out.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
    std::string tmpl = std::string(base) + "/pangu_fuzz_state_XXXXXX";
    if (!mkdtemp(&tmpl[0])) {
        std::perror("mkdtemp");
        std::abort();
    }
    g_dir = tmpl;
    g_in = g_dir + "/state.safetensors";
    g_out = g_dir + "/again.safetensors";
    std::atexit(remove_dir);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = std::fopen(g_in.c_str(), "wb");
    FUZZ_CHECK(f != nullptr, "cannot write %s", g_in.c_str());
    if (size) std::fwrite(data, 1, size, f);
    FUZZ_CHECK(std::fclose(f) == 0, "cannot write %s", g_in.c_str());

    const Shape want = fuzz::train_state_shape();
    const Trainable all[] = {Trainable::ALL, Trainable::LAYERS, Trainable::MLP};
    pangu_status st[3];
    int loaded = -1;
    for (int i = 0; i < 3; ++i) {
        TrainState s;
        st[i] = attempt(g_in, want, all[i], &s);
        if (st[i] != PANGU_OK) continue;
        FUZZ_CHECK(loaded < 0, "the file loads under trainable sets %s and %s",
                   pangu::train::trainable_name(all[loaded]), pangu::train::trainable_name(all[i]));
        loaded = i;
        check_state(s, want, all[i]);
        if (fuzz::verbose())
            std::fprintf(stderr, "load_state(%s): ok, step %lld, meta %s\n", pangu::train::trainable_name(all[i]),
                         (long long)s.step, json_text(s.meta).c_str());
        // Another model's shape: refused, not read as this one.
        Shape other = want;
        other.n_ff[1] += 1;
        TrainState o;
        const pangu_status so = attempt(g_in, other, all[i], &o);
        FUZZ_CHECK(so == PANGU_ERR_INVALID_ARGUMENT, "a state of another shape: %s", pangu_status_string(so));
        check_saves_again(s, want, all[i]);
    }
    if (loaded >= 0)
        for (int i = 0; i < 3; ++i)
            FUZZ_CHECK(i == loaded || st[i] == PANGU_ERR_INVALID_ARGUMENT,
                       "a state training \"%s\" read for \"%s\": %s, not PANGU_ERR_INVALID_ARGUMENT",
                       pangu::train::trainable_name(all[loaded]), pangu::train::trainable_name(all[i]),
                       pangu_status_string(st[i]));
    return 0;
}
