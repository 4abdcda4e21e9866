// Fuzzes pangu_model_load through the public API with whole model directories. The input holds the files,
// each introduced by a line "==> NAME <==" (as `head` prints several files), NAME one of the files a model
// directory may have; they are written to a fresh directory (on tmpfs when there is one) and loaded.
// A load either fails with a loader status and a message, or gives a model that is safe to run: a session
// is created on it and evaluates and generates a few tokens, which AddressSanitizer watches.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_util.h"
#include "model/vocab.h"

namespace {

const char *const kNames[] = {"config.json",
                              "model.safetensors",
                              "tokenizer.model",
                              "tokenizer_config.json",
                              "special_tokens_map.json",
                              "generation_config.json",
                              "model.safetensors.index.json",
                              "model-00001-of-00002.safetensors",
                              "model-00002-of-00002.safetensors"};

std::string g_dir;

void clear_dir() {
    for (const char *n : kNames) unlink((g_dir + "/" + n).c_str());
}

void remove_dir() {
    if (g_dir.empty()) return;
    clear_dir();
    rmdir(g_dir.c_str());
}

// Splits "==> a <==\n...\n==> b <==\n..." into (name, content) pairs; content does not include the newline
// that precedes the next marker.
std::vector<std::pair<std::string, std::string>> split_files(const std::string &in) {
    std::vector<std::pair<std::string, std::string>> files;
    if (in.compare(0, 4, "==> ") != 0) return files;
    size_t pos = 0;
    while (pos != std::string::npos) {
        const size_t name_end = in.find(" <==\n", pos + 4);
        if (name_end == std::string::npos) break;
        const std::string name = in.substr(pos + 4, name_end - pos - 4);
        const size_t content = name_end + 5;
        const size_t next = in.find("\n==> ", content - 1);
        const size_t end = next == std::string::npos ? in.size() : std::max(next, content);
        files.emplace_back(name, in.substr(content, end - content));
        pos = next == std::string::npos ? next : next + 1;
    }
    return files;
}

int on_token(void *user, int32_t token, const char *piece, size_t len) {
    (void)token;
    FUZZ_CHECK(pangu::utf8_valid(std::string_view(piece, len)), "streamed piece is not UTF-8");
    return ++*static_cast<int *>(user) >= 64;
}

void exercise(pangu_model *m) {
    pangu_model_info info;
    std::memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    FUZZ_CHECK(pangu_model_get_info(m, &info) == PANGU_OK, "get_info: %s", pangu_last_error());
    pangu_session_params sp;
    pangu_session_params_init_sized(&sp, sizeof sp);
    sp.n_ctx = info.n_ctx_train < 32 ? info.n_ctx_train : 32;
    sp.n_batch = 8;
    pangu_session *s = nullptr;
    pangu_status st = pangu_session_create(m, &sp, &s);
    FUZZ_CHECK(st == PANGU_OK, "a loaded model refused a session: %d %s", (int)st, pangu_last_error());
    const int32_t ids[3] = {info.bos_token >= 0 ? info.bos_token : 0, 1 % info.n_vocab, 2 % info.n_vocab};
    const size_t n = sp.n_ctx < 3 ? static_cast<size_t>(sp.n_ctx) : 3;
    st = pangu_session_eval(s, ids, n, nullptr);
    FUZZ_CHECK(st == PANGU_OK, "eval: %d %s", (int)st, pangu_last_error());
    pangu_sampling_params gp;
    pangu_sampling_params_init(&gp);
    gp.max_new_tokens = 6;
    for (int pass = 0; pass < 2; ++pass) {
        int count = 0;
        st = pangu_session_generate_tokens(s, nullptr, 0, &gp, on_token, &count, nullptr);
        FUZZ_CHECK(fuzz::one_of(st, {PANGU_OK, PANGU_ERR_CONTEXT_FULL, PANGU_ERR_NUMERIC}), "generate: %d %s",
                   (int)st, pangu_last_error());
        gp.temperature = 1.0f;
        gp.seed = 7;
    }
    int count = 0;
    st = pangu_session_generate(s, "def f():\n  \xe4\xbd\xa0\xe5\xa5\xbd", &gp, on_token, &count, nullptr);
    FUZZ_CHECK(fuzz::one_of(st, {PANGU_OK, PANGU_ERR_CONTEXT_FULL, PANGU_ERR_NUMERIC, PANGU_ERR_CANCELLED}),
               "generate from text: %d %s", (int)st, pangu_last_error());
    pangu_session_free(s);

    char text[512];
    size_t len = 0;
    st = pangu_detokenize(m, ids, 3, text, sizeof text, &len);
    FUZZ_CHECK(fuzz::one_of(st, {PANGU_OK, PANGU_ERR_BUFFER_TOO_SMALL}), "detokenize: %d %s", (int)st,
               pangu_last_error());
    if (st == PANGU_OK) FUZZ_CHECK(pangu::utf8_valid(std::string_view(text, len)), "detokenized text is not UTF-8");
    const pangu_chat_message msg[] = {{"user", "hi"}};
    st = pangu_apply_chat_template(m, msg, 1, 1, text, sizeof text, &len);
    FUZZ_CHECK(fuzz::one_of(st, {PANGU_OK, PANGU_ERR_UNSUPPORTED}), "chat template: %d %s", (int)st,
               pangu_last_error());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
    std::string tmpl = std::string(base) + "/pangu_fuzz_model_XXXXXX";
    if (!mkdtemp(&tmpl[0])) {
        std::perror("mkdtemp");
        std::abort();
    }
    g_dir = tmpl;
    std::atexit(remove_dir);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    clear_dir();
    const auto files = split_files(std::string(reinterpret_cast<const char *>(data), size));
    for (const auto &f : files) {
        bool known = false;
        for (const char *n : kNames) known = known || f.first == n;
        if (!known) continue;
        FILE *out = std::fopen((g_dir + "/" + f.first).c_str(), "wb");
        FUZZ_CHECK(out != nullptr, "cannot write %s", f.first.c_str());
        if (!f.second.empty()) std::fwrite(f.second.data(), 1, f.second.size(), out);
        std::fclose(out);
    }
    pangu_model *m = nullptr;
    const pangu_status st = pangu_model_load(g_dir.c_str(), nullptr, &m);
    if (fuzz::verbose()) std::fprintf(stderr, "load: %s %s\n", pangu_status_string(st), pangu_last_error());
    fuzz::check_failure_contract(st, "pangu_model_load");
    if (st != PANGU_OK) {
        FUZZ_CHECK(m == nullptr, "failed load returned a model");
        FUZZ_CHECK(st != PANGU_ERR_INVALID_ARGUMENT && st != PANGU_ERR_STRUCT_SIZE, "load: status %d: %s", (int)st,
                   pangu_last_error());
        return 0;
    }
    exercise(m);
    pangu_model_free(m);
    return 0;
}
