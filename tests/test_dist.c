/* test_dist.c — evaluations across ranks (eval/dist.h): `mpirun -np 2 apex4 eval ppl|zeroshot` gives
 * the same numbers, bit for bit, as the 1-rank run (the CI case), only rank 0 writes and
 * prints, an error on the ranks ends the job with its message (no hang), and the block split
 * (ae_dist_block) covers the items exactly once.
 * The expectations are properties (equality with the 1-rank run of the same binary, counts of
 * printed tables), not numbers produced by the code under test. Needs the data root (stories260K,
 * WikiText-2, PIQA), $APEX4_BIN (make test) and, for the rank runs, an MPI build and mpirun; each
 * missing piece skips visibly. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dist.h"
#include "testutil.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static cJSON *read_json(const char *path) {
    char *text = NULL, err[AX_ERR_LEN] = "";
    size_t len = 0;
    cr_assert_eq(ax_read_file(path, &text, &len, err), 0, "%s", err);
    cJSON *doc = ax_json_parse_strict(text, len, path, err);
    free(text);
    cr_assert_not_null(doc, "%s", err);
    return doc;
}

static const cJSON *key(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

/* The mode entry named `mode` of a results document. */
static const cJSON *mode_entry(const cJSON *doc, const char *mode) {
    const cJSON *e;
    cJSON_ArrayForEach(e, key(doc, "modes")) {
        const cJSON *n = key(e, "mode");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, mode)) return e;
    }
    cr_assert_fail("mode %s missing from the results", mode);
    return NULL;
}

/* The number o[k] of both documents, bit for bit (memcmp of the doubles cJSON parsed: the files print
 * 17 significant digits, which round-trip). */
static void same_number(const cJSON *a, const cJSON *b, const char *k, const char *what) {
    const cJSON *x = key(a, k), *y = key(b, k);
    cr_assert(cJSON_IsNumber(x) && cJSON_IsNumber(y), "%s: %s is not a number in both", what, k);
    cr_expect_eq(memcmp(&x->valuedouble, &y->valuedouble, sizeof(double)), 0, "%s: %s %.17g (1 rank) vs %.17g (2 ranks)",
                 what, k, x->valuedouble, y->valuedouble);
}

/* Run a shell command, stdout and stderr into files; its exit status (-1: not run normally). */
static int run_cmd(const char *cmd, const char *out, const char *errf) {
    char full[16384];
    snprintf(full, sizeof full, "%s >'%s' 2>'%s'", cmd, out, errf);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char *slurp(const char *path) {
    char *t = NULL, err[AX_ERR_LEN];
    size_t n = 0;
    if (ax_read_file(path, &t, &n, err)) return strdup("");
    return t;
}

static int count_substr(const char *s, const char *sub) {
    int n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
    return n;
}

typedef struct {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], tmp[64], mpirun[256];
    const char *bin;
} env_t;

/* Data root, apex4 binary, an MPI build and mpirun: skip visibly without any of them. */
static void setup_env(env_t *e, int need_mpi) {
    memset(e, 0, sizeof *e);
    if (tu_data_root(e->root, sizeof e->root)) cr_skip_test("skipped: no data root");
    e->bin = getenv("APEX4_BIN");
    if (!e->bin) cr_skip_test("skipped: APEX4_BIN not set (run through make test)");
    snprintf(e->model, sizeof e->model, "%s/models/stories260K", e->root);
    if (access(e->model, R_OK)) cr_skip_test("skipped: %s missing", e->model);
    if (need_mpi) {
#if !(defined(APEX4_MPI) && APEX4_MPI)
        cr_skip_test("skipped: apex4 built without MPI (no mpicc, or MPI=0)");
#endif
        if (system("command -v mpirun >/dev/null 2>&1") != 0) cr_skip_test("skipped: no mpirun on PATH");
        /* root needs --allow-run-as-root; leak checks of an ASan build off for the MPI children only:
         * Open MPI does not free what MPI_Init allocates (the 1-rank runs keep them) */
        snprintf(e->mpirun, sizeof e->mpirun, "ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=0 mpirun%s "
                 "--oversubscribe -np 2", geteuid() == 0 ? " --allow-run-as-root" : "");
    }
    cr_assert_eq(tu_mkdtemp(e->tmp, sizeof e->tmp), 0);
}

static void cleanup(const env_t *e) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->tmp);
    cr_expect_eq(system(cmd), 0);
}

/* ---- the block split ------------------------------------------------------------------------- */

/* Every item in exactly one block, blocks adjacent and in rank order, lengths differ by <= 1, the
 * longest is ceil(n / size) (checked by counting, for small n and sizes). */
Test(dist, blocks_cover_items_once) {
    for (long n = 0; n <= 40; n++)
        for (int size = 1; size <= 9; size++) {
            long expect_lo = 0, mn = n + 1, mx = -1;
            for (int r = 0; r < size; r++) {
                long lo, hi;
                ae_dist_block(n, r, size, &lo, &hi);
                cr_assert_eq(lo, expect_lo, "n %ld size %d rank %d", n, size, r);
                cr_assert_geq(hi, lo);
                expect_lo = hi;
                if (hi - lo < mn) mn = hi - lo;
                if (hi - lo > mx) mx = hi - lo;
            }
            cr_assert_eq(expect_lo, n, "n %ld size %d: blocks end at %ld", n, size, expect_lo);
            cr_assert_leq(mx - mn, 1);
            cr_assert_eq(ae_dist_max_block(n, size), mx, "n %ld size %d", n, size);
        }
}

/* Without a launcher in the environment: one rank, collectives are no-ops that pass errors on. */
Test(dist, single_rank_without_launcher) {
    if (getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK"))
        cr_skip_test("skipped: started under an MPI launcher");
    ae_dist d;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ae_dist_init(NULL, NULL, &d, err), 0, "%s", err);
    cr_expect_eq(d.rank, 0);
    cr_expect_eq(d.size, 1);
    cr_expect_eq(d.mpi, 0);
    int flag = 7;
    cr_expect_eq(ae_dist_agree(&d, 0, &flag, err), 0);
    cr_expect_eq(flag, 7, "the root's flag is kept");
    snprintf(err, sizeof err, "mine");
    cr_expect_eq(ae_dist_agree(&d, -1, NULL, err), -1);
    cr_expect_str_eq(err, "mine", "a rank's own message stays");
    double v[4] = {1, 2, 3, 4};
    cr_expect_eq(ae_dist_allgather_blocks(&d, 0, v, 2, 2, err), 0);
    cr_expect(v[0] == 1 && v[3] == 4);
    cr_expect_eq(ae_dist_gpu(&d, 4), 0);
    ae_dist_abort(&d, 2);   /* one rank: returns */
    ae_dist_finalize(&d);
}

/* A build without MPI started by mpirun with 2 ranks refuses instead of running the job twice
 * (simulated with the launcher's variable; only meaningful for such a build). */
Test(dist, build_without_mpi_refuses_under_launcher, .timeout = 60) {
#if defined(APEX4_MPI) && APEX4_MPI
    cr_skip_test("skipped: this build has MPI (the refusal is for builds without it)");
#endif
    env_t e;
    setup_env(&e, 0);
    char cmd[8192], o[256], er[256];
    snprintf(o, sizeof o, "%s/out.txt", e.tmp);
    snprintf(er, sizeof er, "%s/err.txt", e.tmp);
    snprintf(cmd, sizeof cmd, "OMPI_COMM_WORLD_SIZE=2 '%s' eval ppl --model '%s' --modes fp16 --seqlen 64 "
             "--max-windows 1 --threads 1 --no-progress", e.bin, e.model);
    cr_expect_neq(run_cmd(cmd, o, er), 0);
    char *msg = slurp(er);
    cr_expect(strstr(msg, "built without MPI") && strstr(msg, "2 ranks"), "%s", msg);
    free(msg);
    cleanup(&e);
}

/* ---- eval ppl: 2 ranks == 1 rank --------------------------------------------------------------- */

/* stories260K, 5 windows of 128 (3 for rank 0, 2 for rank 1), fp16 + w4a4-g128 + w8a8 + an Atom mode
 * (calibration computed on rank 0 and broadcast): every number of every mode equal bit for bit. */
Test(dist, ppl_two_ranks_equal_one_rank, .timeout = 120) {
    env_t e;
    setup_env(&e, 1);
    const char *modes[] = {"fp16", "w4a4-g128", "w8a8", "atom-g32-o8"};
    char args[6000], cmd[8192], o1[256], o2[256], so[256], se[256];
    snprintf(args, sizeof args, "eval ppl --model '%s' --modes fp16,w4a4-g128,w8a8,atom-g32-o8 --seqlen 128 "
             "--max-windows 5 --threads 1 --no-progress --calib-windows 2", e.model);
    snprintf(o1, sizeof o1, "%s/one/r.json", e.tmp);
    snprintf(o2, sizeof o2, "%s/two/r.json", e.tmp);
    snprintf(so, sizeof so, "%s/stdout.txt", e.tmp);
    snprintf(se, sizeof se, "%s/stderr.txt", e.tmp);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/one' '%s/two'", e.tmp, e.tmp);
    cr_assert_eq(system(cmd), 0);
    snprintf(cmd, sizeof cmd, "'%s' %s --out '%s'", e.bin, args, o1);
    cr_assert_eq(run_cmd(cmd, so, se), 0, "1 rank failed: %s", slurp(se));
    snprintf(cmd, sizeof cmd, "%s '%s' %s --out '%s'", e.mpirun, e.bin, args, o2);
    cr_assert_eq(run_cmd(cmd, so, se), 0, "2 ranks failed: %s", slurp(se));
    char *out = slurp(so);
    cr_expect_eq(count_substr(out, "FP16 reference ppl"), 1, "rank 0 alone prints the table:\n%s", out);
    free(out);
    cJSON *a = read_json(o1), *b = read_json(o2);
    cr_expect_eq(key(a, "ranks")->valueint, 1);
    cr_expect_eq(key(b, "ranks")->valueint, 2);
    cr_expect_eq(key(b, "windows")->valueint, 5);
    same_number(a, b, "reference_ppl", "reference");
    static const char *const fields[] = {"ppl", "nll", "nll_stderr", "kld", "kld_stderr", "kld_max",
                                         "top1_agreement", "top1_agreement_stderr", "predictions"};
    for (size_t k = 0; k < sizeof modes / sizeof *modes; k++) {
        const cJSON *x = mode_entry(a, modes[k]), *y = mode_entry(b, modes[k]);
        cr_assert(cJSON_IsTrue(key(x, "applicable")) && cJSON_IsTrue(key(y, "applicable")), "%s", modes[k]);
        for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) same_number(x, y, fields[f], modes[k]);
    }
    /* the quantized modes differ from fp16: the comparison is not between identical rows */
    cr_expect_gt(key(mode_entry(a, "w4a4-g128"), "kld")->valuedouble, 0.0);
    cJSON_Delete(a);
    cJSON_Delete(b);
    cleanup(&e);
}

/* An error on the ranks (a mode that does not exist is caught before any work; an unreadable
 * model folder while loading): the job ends non-zero with the message, well within the timeout. */
Test(dist, ppl_error_ends_every_rank, .timeout = 60) {
    env_t e;
    setup_env(&e, 1);
    char cmd[8192], so[256], se[256];
    snprintf(so, sizeof so, "%s/stdout.txt", e.tmp);
    snprintf(se, sizeof se, "%s/stderr.txt", e.tmp);
    snprintf(cmd, sizeof cmd, "%s '%s' eval ppl --model '%s/nonexistent' --modes fp16 --seqlen 64 --threads 1 "
             "--no-progress", e.mpirun, e.bin, e.tmp);
    cr_expect_neq(run_cmd(cmd, so, se), 0);
    char *msg = slurp(se);
    cr_expect(strstr(msg, "nonexistent") != NULL, "%s", msg);
    free(msg);
    cleanup(&e);
}

/* ---- eval zeroshot: 2 ranks == 1 rank ---------------------------------------------------------- */

/* PIQA, 24 documents (48 requests), packs of at most 1500 tokens (several per rank), fp16 + w4a4-g32
 * + w8a8: every metric and every request's log-likelihood (--log-samples) equal bit for bit. */
Test(dist, zeroshot_two_ranks_equal_one_rank, .timeout = 120) {
    env_t e;
    setup_env(&e, 1);
    char args[6000], cmd[8192], o1[256], o2[256], l1[256], l2[256], so[256], se[256];
    snprintf(args, sizeof args, "eval zeroshot --model '%s' --tasks piqa --modes fp16,w4a4-g32,w8a8 --limit 24 "
             "--threads 1 --batch-tokens 1500", e.model);
    snprintf(o1, sizeof o1, "%s/z1.json", e.tmp);
    snprintf(o2, sizeof o2, "%s/z2.json", e.tmp);
    snprintf(l1, sizeof l1, "%s/z1.jsonl", e.tmp);
    snprintf(l2, sizeof l2, "%s/z2.jsonl", e.tmp);
    snprintf(so, sizeof so, "%s/stdout.txt", e.tmp);
    snprintf(se, sizeof se, "%s/stderr.txt", e.tmp);
    snprintf(cmd, sizeof cmd, "'%s' %s --out '%s' --log-samples '%s'", e.bin, args, o1, l1);
    int rc = run_cmd(cmd, so, se);
    char *msg = slurp(se);
    if (rc != 0 && strstr(msg, "piqa") && strstr(msg, "No such file")) cr_skip_test("skipped: PIQA data missing: %s", msg);
    cr_assert_eq(rc, 0, "1 rank failed: %s", msg);
    free(msg);
    snprintf(cmd, sizeof cmd, "%s '%s' %s --out '%s' --log-samples '%s'", e.mpirun, e.bin, args, o2, l2);
    cr_assert_eq(run_cmd(cmd, so, se), 0, "2 ranks failed: %s", slurp(se));
    char *out = slurp(so);
    cr_expect_eq(count_substr(out, "zero-shot (lm-eval scoring)"), 1, "rank 0 alone prints the table:\n%s", out);
    free(out);
    cJSON *a = read_json(o1), *b = read_json(o2);
    cr_expect_eq(key(a, "ranks")->valueint, 1);
    cr_expect_eq(key(b, "ranks")->valueint, 2);
    static const char *const modes[] = {"fp16", "w4a4-g32", "w8a8"};
    static const char *const fields[] = {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "mean_ll_gold", "n",
                                         "tokens_forwarded"};
    for (size_t k = 0; k < 3; k++) {
        const cJSON *x = key(key(mode_entry(a, modes[k]), "tasks"), "piqa");
        const cJSON *y = key(key(mode_entry(b, modes[k]), "tasks"), "piqa");
        cr_assert(x && y, "%s: piqa results missing", modes[k]);
        for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) same_number(x, y, fields[f], modes[k]);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    /* per request: the same lines in the same order, the same ll bits */
    char *s1 = slurp(l1), *s2 = slurp(l2);
    char *save1 = NULL, *save2 = NULL;
    char *p1 = strtok_r(s1, "\n", &save1), *p2 = strtok_r(s2, "\n", &save2);
    int lines = 0;
    while (p1 && p2) {
        char err[AX_ERR_LEN];
        cJSON *x = ax_json_parse_strict(p1, strlen(p1), "z1.jsonl", err), *y = ax_json_parse_strict(p2, strlen(p2), "z2.jsonl", err);
        cr_assert(x && y, "%s", err);
        same_number(x, y, "ll", "log-samples line");
        cr_expect_eq(cJSON_IsTrue(key(x, "greedy")), cJSON_IsTrue(key(y, "greedy")));
        cJSON_Delete(x);
        cJSON_Delete(y);
        lines++;
        p1 = strtok_r(NULL, "\n", &save1);
        p2 = strtok_r(NULL, "\n", &save2);
    }
    cr_expect(!p1 && !p2, "the sample files have different line counts");
    cr_expect_eq(lines, 3 * 48, "3 modes x 24 documents x 2 choices");
    free(s1);
    free(s2);
    cleanup(&e);
}
