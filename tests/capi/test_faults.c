/* Fault injection: allocation failures while loading a model and creating a session, read errors and short
 * reads, files that are not regular files, a model file truncated while it loads or after, each return a
 * documented status with a message, leak nothing (no heap block, no file descriptor), and leave other
 * sessions working: a "witness" session on another model generates the same tokens after every fault.
 *
 * The allocator is alloc_hook.c. File access is interposed here: this program defines open, pread, mmap
 * and fstat, which the dynamic linker binds libpangu_c's calls to; they forward to the system calls and
 * inject the fault a test asks for, on the one file it names. (Tests run as root in CI, where chmod cannot
 * make a file unreadable, so unreadable files are simulated the same way.) Not run under AddressSanitizer,
 * which brings its own allocator. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "alloc_hook.h"
#include "proc_self.h"
#include "pangu/pangu.h"

#define TINY_DIR PANGU_FUZZ_DATA_DIR "/tiny-chat"

/* ---------------------------------------------------------------------------------------------- */
/* interposed file access                                                                         */
/* ---------------------------------------------------------------------------------------------- */

static struct {
    const char *name;        /* the targeted file: a suffix of its path, e.g. "/config.json"; NULL: none */
    int open_errno;          /* open() of it fails with this */
    int mmap_errno;          /* mmap() of it fails with this */
    int pread_fail_at;       /* the k-th pread() of it (1-based) fails with pread_errno */
    int pread_errno;
    int pread_max;           /* every pread() (of any file) returns at most this many bytes; 0: no cap */
    long truncate_after_mmap;/* >= 0: the file is cut to this size right after it is mapped */
    int truncate_at_pread;   /* > 0: the file is cut to truncate_size before its k-th pread() */
    long truncate_size;
    /* state */
    char path[512];
    int fd;
    int preads;
} g_io = {.fd = -1, .truncate_after_mmap = -1};

static void io_reset(void) {
    memset(&g_io, 0, sizeof g_io);
    g_io.fd = -1;
    g_io.truncate_after_mmap = -1;
}

static int targets(const char *path) {
    if (!g_io.name || !path) return 0;
    const size_t n = strlen(path), m = strlen(g_io.name);
    return n >= m && strcmp(path + n - m, g_io.name) == 0;
}

static void cut(void) { assert_int_equal(syscall(SYS_truncate, g_io.path, g_io.truncate_size), 0); }

int open(const char *path, int flags, ...) {
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    if (targets(path) && g_io.open_errno) {
        errno = g_io.open_errno;
        return -1;
    }
    const int fd = (int)syscall(SYS_openat, AT_FDCWD, path, flags, mode);
    if (fd >= 0 && targets(path)) {
        g_io.fd = fd;
        snprintf(g_io.path, sizeof g_io.path, "%s", path);
    }
    return fd;
}

ssize_t pread(int fd, void *buf, size_t n, off_t off) {
    if (fd >= 0 && fd == g_io.fd) {
        ++g_io.preads;
        if (g_io.preads == g_io.truncate_at_pread) cut();
        if (g_io.preads == g_io.pread_fail_at) {
            errno = g_io.pread_errno;
            return -1;
        }
    }
    if (g_io.pread_max > 0 && n > (size_t)g_io.pread_max) n = (size_t)(1 + (off % g_io.pread_max));
    return (ssize_t)syscall(SYS_pread64, fd, buf, n, off);
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    if (fd >= 0 && fd == g_io.fd && g_io.mmap_errno) {
        errno = g_io.mmap_errno;
        return MAP_FAILED;
    }
    const long r = syscall(SYS_mmap, addr, len, prot, flags, fd, off);
    if (r == -1) return MAP_FAILED;
    if (fd >= 0 && fd == g_io.fd && g_io.truncate_after_mmap >= 0) {
        g_io.truncate_size = g_io.truncate_after_mmap;
        cut();
    }
    return (void *)r;
}

int fstat(int fd, struct stat *st) { return (int)syscall(SYS_fstat, fd, st); }

/* ---------------------------------------------------------------------------------------------- */
/* helpers                                                                                        */
/* ---------------------------------------------------------------------------------------------- */

static void copy_file(const char *from, const char *to) {
    FILE *in = fopen(from, "rb");
    assert_non_null(in);
    FILE *out = fopen(to, "wb");
    assert_non_null(out);
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static const char *const kFiles[] = {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"};

static char g_tmp[64];

/* A fresh copy of pangu-tiny in g_tmp. */
static void fresh_copy(void) {
    char a[600], b[600];
    for (size_t i = 0; i < 4; ++i) {
        snprintf(a, sizeof a, "%s/%s", PANGU_MODEL_DIR, kFiles[i]);
        snprintf(b, sizeof b, "%s/%s", g_tmp, kFiles[i]);
        unlink(b);
        copy_file(a, b);
    }
}

/* The witness: a session on another model that must keep producing its reference tokens whatever happens to
 * the allocator and the files of the model under test. */
#define WITNESS_N 24
static pangu_model *g_witness_model;
static pangu_session *g_witness;
static int32_t g_witness_ref[WITNESS_N];
static const int32_t kWitnessPrompt[] = {1, 651, 681, 13, 651, 304, 497, 13};

typedef struct {
    int32_t ids[WITNESS_N];
    int n;
} collected;

static int collect(void *user, int32_t token, const char *piece, size_t len) {
    (void)piece;
    (void)len;
    collected *c = (collected *)user;
    if (c->n < WITNESS_N) c->ids[c->n++] = token;
    return 0;
}

static void witness_run(int32_t *out) {
    collected c = {{0}, 0};
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = WITNESS_N;
    assert_int_equal(pangu_session_reset(g_witness), PANGU_OK);
    assert_int_equal(pangu_session_generate_tokens(g_witness, kWitnessPrompt, 8, &sp, collect, &c, NULL), PANGU_OK);
    assert_int_equal(c.n, WITNESS_N);
    memcpy(out, c.ids, sizeof c.ids);
}

/* Runs the witness while allocations are refused: generation from tokens needs none. */
static void witness_check(void) {
    int32_t got[WITNESS_N];
    alloc_hook_fail(1, 1);
    witness_run(got);
    const long failed = alloc_hook_failed();
    alloc_hook_stop();
    assert_int_equal(failed, 0);
    assert_memory_equal(got, g_witness_ref, sizeof got);
}

static int setup(void **state) {
    (void)state;
    /* libsentencepiece's protobuf parser cannot survive a failed allocation (docs/bad-inputs.md): its
     * allocations are left out, every other one of the load is refused in turn. */
    alloc_hook_spare("libsentencepiece");
    strcpy(g_tmp, "/tmp/pangu_faults_XXXXXX");
    if (!mkdtemp(g_tmp)) return -1;
    pangu_session_params p;
    pangu_session_params_init_sized(&p, sizeof p);
    p.n_ctx = 64;
    if (pangu_model_load(PANGU_DRAFT_DIR, NULL, &g_witness_model) != PANGU_OK) return -1;
    if (pangu_session_create(g_witness_model, &p, &g_witness) != PANGU_OK) return -1;
    witness_run(g_witness_ref);
    /* One successful load, session and generation first: what libstdc++, glibc and sentencepiece allocate
     * once per process (locales, thread stacks kept for reuse) is then in place and not counted as a leak. */
    pangu_model *m = NULL;
    pangu_session *s = NULL;
    p.n_threads = 3;
    if (pangu_model_load(PANGU_MODEL_DIR, NULL, &m) != PANGU_OK) return -1;
    if (pangu_session_create(m, &p, &s) != PANGU_OK) return -1;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = 4;
    if (pangu_session_generate(s, "def f():", &sp, NULL, NULL, NULL) != PANGU_OK) return -1;
    pangu_session_free(s);
    pangu_model_free(m);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    pangu_session_free(g_witness);
    pangu_model_free(g_witness_model);
    for (size_t i = 0; i < 4; ++i) {
        char b[600];
        snprintf(b, sizeof b, "%s/%s", g_tmp, kFiles[i]);
        unlink(b);
    }
    rmdir(g_tmp);
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* allocation failures                                                                            */
/* ---------------------------------------------------------------------------------------------- */

/* Loads `dir` with allocation n (and, if persistent, every later one) refused, and checks the contract: the
 * load fails with OUT_OF_MEMORY and a message, returns no model and leaves no block allocated and no file
 * open; or it succeeds anyway (the library retried what failed) and the model, freed at once, leaves
 * nothing either. Returns whether an allocation was refused at all (false: the load needs fewer than n). */
static int load_failing_at(const char *dir, long n, int persistent) {
    pangu_model *m = (pangu_model *)&m;
    const int fds = proc_open_fds();
    alloc_hook_fail(n, persistent);
    const pangu_status st = pangu_model_load(dir, NULL, &m);
    if (st == PANGU_OK) pangu_model_free(m);
    const long live = alloc_hook_live(), refused = alloc_hook_failed();
    alloc_hook_stop();
    if (st != PANGU_OK && st != PANGU_ERR_OUT_OF_MEMORY)
        fail_msg("allocation %ld%s refused: status %s: %s", n, persistent ? "+" : "", pangu_status_string(st),
                 pangu_last_error());
    if (st != PANGU_OK) {
        assert_null(m);
        if (!strstr(pangu_last_error(), "memory")) fail_msg("allocation %ld refused: message: %s", n, pangu_last_error());
    }
    if (live != 0) fail_msg("allocation %ld%s refused: %ld blocks leaked", n, persistent ? "+" : "", live);
    assert_int_equal(proc_open_fds(), fds);
    return refused > 0;
}

/* Every allocation of a (small) model's load, one at a time and from there on. */
static void test_load_survives_every_allocation_failure(void **state) {
    (void)state;
    for (int persistent = 0; persistent <= 1; ++persistent) {
        long n = 1;
        while (load_failing_at(TINY_DIR, n, persistent)) {
            if (n % 64 == 0) witness_check();
            ++n;
        }
        print_message("tiny-chat: %ld allocations in a load outside libsentencepiece; each refused%s in turn\n",
                      n - 1, persistent ? " (and every one after it)" : "");
        assert_true(n > 50);
        witness_check();
    }
}

/* pangu-tiny's load allocates tens of thousands of times (its tokenizer has 4096 pieces): the first 300
 * allocations one by one, then 300 spread over the rest, and the last ones. */
static void test_load_of_pangu_tiny_survives_allocation_failures(void **state) {
    (void)state;
    alloc_hook_fail(0, 0);
    pangu_model *m = NULL;
    assert_int_equal(pangu_model_load(PANGU_MODEL_DIR, NULL, &m), PANGU_OK);
    const long total = alloc_hook_stop();
    pangu_model_free(m);
    assert_true(total > 600);
    for (long n = 1; n <= 300; ++n) assert_true(load_failing_at(PANGU_MODEL_DIR, n, n % 2));
    for (long i = 0; i < 300; ++i) assert_true(load_failing_at(PANGU_MODEL_DIR, 300 + (total - 300) * i / 300, i % 2));
    for (long n = total - 5; n <= total; ++n) assert_true(load_failing_at(PANGU_MODEL_DIR, n, 1));
    assert_false(load_failing_at(PANGU_MODEL_DIR, total + 1, 1));
    print_message("pangu-tiny: %ld allocations in a load\n", total);
    witness_check();
}

static void test_session_create_survives_every_allocation_failure(void **state) {
    (void)state;
    pangu_model *m = NULL, *draft = NULL;
    assert_int_equal(pangu_model_load(PANGU_MODEL_DIR, NULL, &m), PANGU_OK);
    assert_int_equal(pangu_model_load(PANGU_DRAFT_DIR, NULL, &draft), PANGU_OK);
    struct {
        int threads, spec;
    } cases[] = {{1, PANGU_SPEC_OFF}, {1, PANGU_SPEC_PLD}, {3, PANGU_SPEC_PLD}, {2, PANGU_SPEC_DRAFT}, {1, PANGU_SPEC_SELF}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c)
        for (int persistent = 0; persistent <= 1; ++persistent) {
            pangu_session_params p;
            pangu_session_params_init_sized(&p, sizeof p);
            p.n_ctx = 128;
            p.n_threads = cases[c].threads;
            p.spec_mode = cases[c].spec;
            p.draft_model = draft;
            for (long n = 1;; ++n) {
                pangu_session *s = (pangu_session *)&s;
                const int fds = proc_open_fds();
                alloc_hook_fail(n, persistent);
                const pangu_status st = pangu_session_create(m, &p, &s);
                const long live = alloc_hook_live();
                alloc_hook_stop();
                if (st == PANGU_OK) {
                    /* the session that finally came into being works */
                    pangu_sampling_params sp;
                    pangu_sampling_params_init(&sp);
                    sp.max_new_tokens = 8;
                    assert_int_equal(pangu_session_generate_tokens(s, kWitnessPrompt, 8, &sp, NULL, NULL, NULL), PANGU_OK);
                    pangu_session_free(s);
                    print_message("session (%d threads, spec %d): %ld allocations\n", cases[c].threads, cases[c].spec,
                                  n - 1);
                    break;
                }
                if (st != PANGU_ERR_OUT_OF_MEMORY)
                    fail_msg("session allocation %ld refused: %s: %s", n, pangu_status_string(st), pangu_last_error());
                assert_null(s);
                assert_true(pangu_last_error()[0] != '\0');
                if (live != 0) fail_msg("session allocation %ld refused: %ld blocks leaked", n, live);
                assert_int_equal(proc_open_fds(), fds);
                witness_check();
            }
        }
    pangu_model_free(draft);
    pangu_model_free(m);
}

/* With every allocation refused: generation from token ids works (it allocates nothing); generation from
 * text, which tokenizes first, fails with OUT_OF_MEMORY and leaves the session as it was. */
static void test_generation_under_memory_exhaustion(void **state) {
    (void)state;
    pangu_model *m = NULL;
    pangu_session *s = NULL;
    assert_int_equal(pangu_model_load(PANGU_MODEL_DIR, NULL, &m), PANGU_OK);
    assert_int_equal(pangu_session_create(m, NULL, &s), PANGU_OK);
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.max_new_tokens = 16;
    alloc_hook_fail(1, 1);
    const pangu_status from_ids = pangu_session_generate_tokens(s, kWitnessPrompt, 8, &sp, NULL, NULL, NULL);
    const size_t n = pangu_session_n_tokens(s);
    const pangu_status from_text = pangu_session_generate(s, "def main():\n", &sp, NULL, NULL, NULL);
    char msg[64];
    snprintf(msg, sizeof msg, "%s", pangu_last_error());
    const size_t n_after = pangu_session_n_tokens(s);
    const long failed = alloc_hook_failed();
    alloc_hook_stop();
    assert_int_equal(from_ids, PANGU_OK);
    assert_int_equal(from_text, PANGU_ERR_OUT_OF_MEMORY);
    assert_non_null(strstr(msg, "memory"));
    assert_int_equal(n_after, n);
    assert_true(failed > 0);
    assert_int_equal(pangu_session_generate(s, "def main():\n", &sp, NULL, NULL, NULL), PANGU_OK);
    pangu_session_free(s);
    pangu_model_free(m);
}

/* Calls that fail on their arguments report it, with a message, even when no memory can be had: reporting
 * an error allocates nothing. */
static void test_errors_are_reported_without_memory(void **state) {
    (void)state;
    pangu_model *m = NULL;
    pangu_session *s = NULL;
    assert_int_equal(pangu_model_load(PANGU_MODEL_DIR, NULL, &m), PANGU_OK);
    assert_int_equal(pangu_session_create(m, NULL, &s), PANGU_OK);
    pangu_session_params bad;
    pangu_session_params_init_sized(&bad, sizeof bad);
    bad.struct_size = 3;
    pangu_sampling_params sp;
    pangu_sampling_params_init(&sp);
    sp.struct_size = 1000;
    int32_t ids[2] = {0, 0};
    size_t n = 0;
    pangu_model *none = (pangu_model *)&none;
    /* Results are checked after the allocator works again: cmocka needs memory to report a failure. */
    pangu_status st[8];
    char msg[4][64];
    alloc_hook_fail(1, 1);
    st[0] = pangu_model_load(NULL, NULL, &none);
    snprintf(msg[0], sizeof msg[0], "%s", pangu_last_error());
    pangu_session *none_s = (pangu_session *)&none_s;
    st[1] = pangu_session_create(NULL, NULL, &none_s);
    st[2] = pangu_session_create(m, &bad, &none_s);
    snprintf(msg[1], sizeof msg[1], "%s", pangu_last_error());
    st[3] = pangu_session_generate_tokens(s, ids, 1, &sp, NULL, NULL, NULL);
    st[4] = pangu_session_eval(s, NULL, 1, NULL);
    snprintf(msg[2], sizeof msg[2], "%s", pangu_session_last_error(s));
    st[5] = pangu_session_eval(s, kWitnessPrompt, 8, NULL);
    st[6] = pangu_session_get_tokens(s, ids, 2, &n);
    snprintf(msg[3], sizeof msg[3], "%s", pangu_last_error());
    st[7] = pangu_session_get_logits(s, NULL, NULL);
    const long failed = alloc_hook_failed();
    alloc_hook_stop();
    assert_int_equal(failed, 0); /* none of this even tried to allocate */
    assert_int_equal(st[0], PANGU_ERR_INVALID_ARGUMENT);
    assert_null(none);
    assert_non_null(strstr(msg[0], "pangu_model_load"));
    assert_int_equal(st[1], PANGU_ERR_INVALID_ARGUMENT);
    assert_null(none_s);
    assert_int_equal(st[2], PANGU_ERR_STRUCT_SIZE);
    assert_non_null(strstr(msg[1], "struct_size 3"));
    assert_int_equal(st[3], PANGU_ERR_STRUCT_SIZE);
    assert_int_equal(st[4], PANGU_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(msg[2], "ids must not be NULL"));
    assert_int_equal(st[5], PANGU_OK);
    assert_int_equal(st[6], PANGU_ERR_BUFFER_TOO_SMALL);
    assert_int_equal(n, 8);
    assert_non_null(strstr(msg[3], "8 tokens do not fit in 2"));
    assert_int_equal(st[7], PANGU_ERR_INVALID_ARGUMENT);
    pangu_session_free(s);
    pangu_model_free(m);
}

/* ---------------------------------------------------------------------------------------------- */
/* file faults                                                                                    */
/* ---------------------------------------------------------------------------------------------- */

static int g_prefault; /* load with pangu_model_params.prefault */

/* Loads g_tmp with the configured fault; checks status, message, no leak, and the witness. */
static void expect_fault(pangu_status want, const char *needle) {
    pangu_model *m = (pangu_model *)&m;
    pangu_model_params mp;
    pangu_model_params_init(&mp);
    mp.prefault = g_prefault;
    const int fds = proc_open_fds();
    alloc_hook_fail(0, 0);
    const pangu_status st = pangu_model_load(g_tmp, &mp, &m);
    const long live = alloc_hook_live();
    alloc_hook_stop();
    io_reset();
    if (st != want)
        fail_msg("expected %s, got %s: %s", pangu_status_string(want), pangu_status_string(st), pangu_last_error());
    if (st == PANGU_OK) {
        pangu_model_free(m);
        return;
    }
    assert_null(m);
    if (needle && !strstr(pangu_last_error(), needle)) fail_msg("\"%s\" not in: %s", needle, pangu_last_error());
    if (live != 0) fail_msg("%ld blocks leaked", live);
    assert_int_equal(proc_open_fds(), fds);
    witness_check();
}

static void logits_of(pangu_model *m, float *out, int32_t *nv) {
    pangu_session *s = NULL;
    const float *lg = NULL;
    assert_int_equal(pangu_session_create(m, NULL, &s), PANGU_OK);
    assert_int_equal(pangu_session_eval(s, kWitnessPrompt, 8, NULL), PANGU_OK);
    assert_int_equal(pangu_session_get_logits(s, &lg, nv), PANGU_OK);
    memcpy(out, lg, sizeof(float) * (size_t)*nv);
    pangu_session_free(s);
}

/* Reads that return a few bytes at a time are retried: the model loads and computes exactly as usual. */
static void test_short_reads_load_identically(void **state) {
    (void)state;
    static float ref[4096], got[4096];
    int32_t nv = 0;
    pangu_model *m = NULL;
    fresh_copy();
    assert_int_equal(pangu_model_load(g_tmp, NULL, &m), PANGU_OK);
    logits_of(m, ref, &nv);
    pangu_model_free(m);
    g_io.pread_max = 7;
    assert_int_equal(pangu_model_load(g_tmp, NULL, &m), PANGU_OK);
    io_reset();
    logits_of(m, got, &nv);
    assert_memory_equal(got, ref, sizeof(float) * (size_t)nv);
    pangu_model_free(m);
}

static void test_read_errors_are_io_errors(void **state) {
    (void)state;
    fresh_copy();
    static const struct {
        const char *file;
        int at;
    } cases[] = {{"/config.json", 1},       {"/tokenizer.model", 1},   {"/tokenizer_config.json", 1},
                 {"/model.safetensors", 1}, {"/model.safetensors", 2}, {"/model.safetensors", 3},
                 {"/model.safetensors", 20}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        g_io.name = cases[i].file;
        g_io.pread_fail_at = cases[i].at;
        g_io.pread_errno = EIO;
        expect_fault(PANGU_ERR_IO, cases[i].file + 1);
    }
}

static void test_open_errors(void **state) {
    (void)state;
    fresh_copy();
    for (size_t i = 0; i < 4; ++i) {
        char name[64];
        snprintf(name, sizeof name, "/%s", kFiles[i]);
        static const int errs[] = {EACCES, EMFILE, EIO};
        for (size_t e = 0; e < 3; ++e) {
            g_io.name = name;
            g_io.open_errno = errs[e];
            expect_fault(PANGU_ERR_IO, kFiles[i]);
        }
    }
}

static void test_mmap_errors(void **state) {
    (void)state;
    fresh_copy();
    g_io.name = "/model.safetensors";
    g_io.mmap_errno = ENOMEM;
    expect_fault(PANGU_ERR_OUT_OF_MEMORY, "mmap");
    g_io.name = "/model.safetensors";
    g_io.mmap_errno = ENODEV;
    expect_fault(PANGU_ERR_IO, "mmap");
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "test_faults: a load blocked (FIFO?)\n";
    if (write(2, msg, sizeof msg - 1) < 0) _exit(3);
    _exit(2);
}

/* A FIFO (which a plain open() would block on forever), a directory, or /dev/zero (which never ends) in
 * place of a model file: refused at once as not a regular file. */
static void test_files_that_are_not_regular_files(void **state) {
    (void)state;
    signal(SIGALRM, on_alarm);
    for (size_t i = 0; i < 4; ++i) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", g_tmp, kFiles[i]);
        for (int kind = 0; kind < 3; ++kind) {
            fresh_copy();
            unlink(p);
            if (kind == 0) assert_int_equal(mkfifo(p, 0600), 0);
            if (kind == 1) assert_int_equal(mkdir(p, 0700), 0);
            if (kind == 2) assert_int_equal(symlink("/dev/zero", p), 0);
            alarm(20);
            expect_fault(PANGU_ERR_IO, kFiles[i]);
            alarm(0);
            if (kind == 1) rmdir(p);
            else unlink(p);
        }
    }
    fresh_copy();
}

/* model.safetensors cut short while the load runs: right after it is mapped, and between the reads of the
 * header and of the tensors the loader checks (norms, biases). The loader reads through the file, not the
 * mapping, so it sees the end of the file instead of faulting on it (SIGBUS). */
static void test_truncated_while_loading(void **state) {
    (void)state;
    for (g_prefault = 0; g_prefault <= 1; ++g_prefault) {
        fresh_copy();
        g_io.name = "/model.safetensors";
        g_io.truncate_after_mmap = 4 << 20;
        expect_fault(PANGU_ERR_TENSOR_BOUNDS, "model.safetensors");
        /* before the header (the 2nd read, after the length), before the first and the 9th tensor read */
        static const int at[] = {2, 3, 10};
        for (size_t i = 0; i < 3; ++i) {
            fresh_copy();
            g_io.name = "/model.safetensors";
            g_io.truncate_at_pread = at[i];
            g_io.truncate_size = at[i] == 2 ? 100 : 3 << 20;
            expect_fault(PANGU_ERR_TENSOR_BOUNDS, "model.safetensors");
        }
    }
    g_prefault = 0;
    fresh_copy();
}

/* Cut after a completed load: touching the mapping past the new end would raise SIGBUS, so new sessions
 * are refused with a message saying what happened; freeing the model is safe. */
static void test_truncated_after_loading(void **state) {
    (void)state;
    fresh_copy();
    pangu_model *m = NULL;
    pangu_session *s = NULL;
    assert_int_equal(pangu_model_load(g_tmp, NULL, &m), PANGU_OK);
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", g_tmp);
    assert_int_equal(truncate(p, 1 << 20), 0);
    assert_int_equal(pangu_session_create(m, NULL, &s), PANGU_ERR_TENSOR_BOUNDS);
    assert_null(s);
    assert_non_null(strstr(pangu_last_error(), "truncated"));
    assert_non_null(strstr(pangu_model_last_error(m), "model.safetensors"));
    pangu_model_free(m);
    witness_check();
    fresh_copy();
}

/* Whatever a test left behind when an assertion ended it: the allocator works and no file fault is set. */
static int disarm(void **state) {
    (void)state;
    alloc_hook_stop();
    io_reset();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_load_survives_every_allocation_failure, disarm),
        cmocka_unit_test_teardown(test_load_of_pangu_tiny_survives_allocation_failures, disarm),
        cmocka_unit_test_teardown(test_session_create_survives_every_allocation_failure, disarm),
        cmocka_unit_test_teardown(test_generation_under_memory_exhaustion, disarm),
        cmocka_unit_test_teardown(test_errors_are_reported_without_memory, disarm),
        cmocka_unit_test_teardown(test_short_reads_load_identically, disarm),
        cmocka_unit_test_teardown(test_read_errors_are_io_errors, disarm),
        cmocka_unit_test_teardown(test_open_errors, disarm),
        cmocka_unit_test_teardown(test_mmap_errors, disarm),
        cmocka_unit_test_teardown(test_files_that_are_not_regular_files, disarm),
        cmocka_unit_test_teardown(test_truncated_while_loading, disarm),
        cmocka_unit_test_teardown(test_truncated_after_loading, disarm),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
