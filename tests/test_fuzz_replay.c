/* test_fuzz_replay.c — replays every saved fuzz input under tests/fuzz-corpus/<harness>/ through the
 * same library call the libFuzzer harness makes (tests/fuzz/fuzz_targets.h, fz_<harness>), without
 * libFuzzer: plain `make test` runs them with gcc, `make test SAN=1` under ASan+UBSan+LSan, so an
 * input that once crashed (or leaked, or read out of bounds) stays fixed.
 *
 * Expectations come from the file name, chosen by whoever saved the input (not from running the
 * code under test): "valid-*" must be accepted (fz_* returns 1), "reject-*" must be rejected with
 * an error message (0); any other name (crash-*, leak-*, oom-*, timeout-* as libFuzzer names them, or
 * a seed) only has to return cleanly (0 or 1). Every folder must name a harness of fz_targets(), and
 * every harness must have at least one saved input, so that a renamed harness or folder fails here.
 * The tokenize harness needs the data root (LLaMA-2 tokenizer) and skips visibly without it. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_targets.h"
#include "testutil.h"

/* tests/fuzz-corpus relative to the working directory (make test runs from the repository root),
 * else next to $APEX4_BIN (<repo>/<build>/apex4). */
static void corpus_dir(char *buf, size_t len) {
    struct stat st;
    snprintf(buf, len, "tests/fuzz-corpus");
    if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode)) return;
    const char *bin = getenv("APEX4_BIN");
    if (bin) {
        char tmp[AX_PATH_LEN];
        snprintf(tmp, sizeof tmp, "%s", bin);
        char *d = dirname(tmp);   /* <repo>/<build> */
        snprintf(buf, len, "%s/../tests/fuzz-corpus", d);
        if (stat(buf, &st) == 0 && S_ISDIR(st.st_mode)) return;
    }
    cr_assert_fail("tests/fuzz-corpus not found (run from the repository root or set APEX4_BIN)");
}

static const fz_target *find_target(const char *name) {
    for (const fz_target *t = fz_targets(); t->name; t++)
        if (!strcmp(t->name, name)) return t;
    return NULL;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replay every file of tests/fuzz-corpus/<name>/ through fz_<name>; returns how many were replayed. */
static int replay(const char *name) {
    const fz_target *t = find_target(name);
    cr_assert_not_null(t, "no harness '%s'", name);
    char dir[AX_PATH_LEN], path[AX_PATH_LEN + 300];
    corpus_dir(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    DIR *dp = opendir(path);
    cr_assert_not_null(dp, "%s: no saved inputs folder", path);
    char *names[4096];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dp)) && n < 4096)
        if (de->d_name[0] != '.') names[n++] = strdup(de->d_name);
    closedir(dp);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    int replayed = 0;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s/%s", dir, name, names[i]);
        char *data = NULL, err[AX_ERR_LEN] = "";
        size_t len = 0;
        cr_assert_eq(ax_read_file(path, &data, &len, err), 0, "%s", err);
        int rc = t->fn((const uint8_t *)data, len);
        free(data);
        if (rc < 0 && !strcmp(name, "tokenize")) {
            for (int j = i; j < n; j++) free(names[j]);
            cr_skip_test("skipped: no data root (tokenize needs the LLaMA-2 tokenizer)");
        }
        cr_assert_geq(rc, 0, "%s: the harness could not set up", path);
        if (!strncmp(names[i], "valid-", 6)) cr_expect_eq(rc, 1, "%s: expected the input to be accepted", path);
        if (!strncmp(names[i], "reject-", 7)) cr_expect_eq(rc, 0, "%s: expected the input to be rejected", path);
        replayed++;
        free(names[i]);
    }
    return replayed;
}

#define REPLAY(h)                                                                                  \
    Test(fuzz_replay, h) {                                                                         \
        int n = replay(#h);                                                                        \
        cr_expect_gt(n, 0, "tests/fuzz-corpus/" #h "/ holds no saved input");                      \
    }

REPLAY(config)
REPLAY(safetensors)
REPLAY(model_index)
REPLAY(tokenizer)
REPLAY(tokenize)
REPLAY(h5case)
REPLAY(wikitext)
REPLAY(piqa)
REPLAY(arc)
REPLAY(boolq)
REPLAY(hellaswag_txt)
REPLAY(hellaswag_jsonl)
REPLAY(winogrande)
REPLAY(lambada)
REPLAY(mode)

/* Every folder under tests/fuzz-corpus/ is a harness, and every harness has a REPLAY test above
 * (the list of fz_targets() is counted against the 15 written out here). */
Test(fuzz_replay, folders_name_harnesses) {
    char dir[AX_PATH_LEN];
    corpus_dir(dir, sizeof dir);
    DIR *dp = opendir(dir);
    cr_assert_not_null(dp);
    struct dirent *de;
    while ((de = readdir(dp)))
        if (de->d_name[0] != '.')
            cr_expect_not_null(find_target(de->d_name), "tests/fuzz-corpus/%s: no harness of that name", de->d_name);
    closedir(dp);
    int n = 0;
    for (const fz_target *t = fz_targets(); t->name; t++) n++;
    cr_expect_eq(n, 15, "fz_targets() lists %d harnesses; add a REPLAY() line for a new one", n);
}
