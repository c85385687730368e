/* test_resume.c — `apex4 eval ppl --resume` (eval/ppl.h ae_ppl_ctl): a CPU run killed with SIGKILL
 * after its first checkpoints, started again with the same arguments and --resume, finishes with the
 * numbers of an uninterrupted run (bit for bit), skips the finished windows and removes OUT.partial;
 * a checkpoint from other arguments is refused with a message naming the difference.
 * Expectations are properties (equality with the uninterrupted run of the same binary; counts read
 * from the checkpoint before the kill). Needs the data root (stories260K, WikiText-2) and $APEX4_BIN. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static const cJSON *key(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static cJSON *read_json_file(const char *path, char *err) {
    char *text = NULL;
    size_t len = 0;
    if (ax_read_file(path, &text, &len, err)) return NULL;
    cJSON *doc = ax_json_parse_strict(text, len, path, err);
    free(text);
    return doc;
}

static char *slurp(const char *path) {
    char *t = NULL, err[AX_ERR_LEN];
    size_t n = 0;
    if (ax_read_file(path, &t, &n, err)) return strdup("");
    return t;
}

static int run_cmd(const char *cmd, const char *out, const char *errf) {
    char full[16384];
    snprintf(full, sizeof full, "%s >'%s' 2>'%s'", cmd, out, errf);
    int st = system(full);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#define WINDOWS 12
#define MODES "fp16,w4a4-g32,w8a8"

Test(resume, killed_run_resumes_to_the_same_numbers, .timeout = 180) {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], tmp[64];
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root");
    const char *bin = getenv("APEX4_BIN");
    if (!bin) cr_skip_test("skipped: APEX4_BIN not set (run through make test)");
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    if (access(model, R_OK)) cr_skip_test("skipped: %s missing", model);
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    char full[256], out[256], partial[300], so[256], se[256], cmd[8192], seqlen[] = "512", windows[16];
    snprintf(full, sizeof full, "%s/full.json", tmp);
    snprintf(out, sizeof out, "%s/r.json", tmp);
    snprintf(partial, sizeof partial, "%s.partial", out);
    snprintf(so, sizeof so, "%s/stdout.txt", tmp);
    snprintf(se, sizeof se, "%s/stderr.txt", tmp);
    snprintf(windows, sizeof windows, "%d", WINDOWS);
    /* --gemm exact (the integer reference) at 512 tokens: ~0.3 s a window on one core, so the
     * interrupted run is caught between its first checkpoint and its end */
    const char *common = "--modes " MODES " --seqlen 512 --threads 1 --no-progress --gemm exact";

    /* the uninterrupted run */
    snprintf(cmd, sizeof cmd, "'%s' eval ppl --model '%s' %s --max-windows %s --out '%s'", bin, model, common,
             windows, full);
    cr_assert_eq(run_cmd(cmd, so, se), 0, "uninterrupted run failed: %s", slurp(se));

    /* the run to kill: a checkpoint after every window */
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        FILE *o1 = freopen("/dev/null", "w", stdout), *o2 = freopen(se, "w", stderr);  /* quiet child */
        (void)o1;
        (void)o2;
        execl(bin, bin, "eval", "ppl", "--model", model, "--modes", MODES, "--seqlen", seqlen, "--threads", "1",
              "--no-progress", "--gemm", "exact", "--max-windows", windows, "--out", out, "--checkpoint-every", "0",
              (char *)NULL);
        _exit(127);
    }
    long done_at_kill = -1;
    char err[AX_ERR_LEN] = "";
    for (int i = 0; i < 60000 && done_at_kill < 1; i++) {   /* up to 5 minutes in 5 ms steps */
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) cr_assert_fail("the run ended before it was killed (status %d)", st);
        cJSON *ck = read_json_file(partial, err);   /* replaced atomically: whole or absent */
        if (ck) {
            const cJSON *d = key(ck, "done_windows");
            if (cJSON_IsNumber(d)) done_at_kill = (long)d->valuedouble;
            cJSON_Delete(ck);
        }
        if (done_at_kill < 1) sleep_ms(5);
    }
    cr_assert_eq(kill(pid, SIGKILL), 0);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the run was killed by SIGKILL (status %d)", st);
    cr_assert_geq(done_at_kill, 1, "a checkpoint with a finished window was seen");
    cr_assert_lt(done_at_kill, WINDOWS, "work was left when it was killed");
    cr_assert_neq(access(out, F_OK), 0, "no results file from the killed run");
    cJSON *ck = read_json_file(partial, err);
    cr_assert_not_null(ck, "%s", err);
    long done_in_file = (long)key(ck, "done_windows")->valuedouble;
    cr_assert_geq(done_in_file, done_at_kill);
    cJSON_Delete(ck);

    /* other arguments: refused, naming the difference; the checkpoint stays */
    snprintf(cmd, sizeof cmd, "'%s' eval ppl --model '%s' --modes fp16,w8a8 --seqlen 512 --threads 1 --no-progress "
             "--gemm exact --max-windows %s --out '%s' --resume", bin, model, windows, out);
    cr_expect_neq(run_cmd(cmd, so, se), 0);
    char *msg = slurp(se);
    cr_expect(strstr(msg, "other arguments") && strstr(msg, "modes=fp16,w8a8") && strstr(msg, partial), "%s", msg);
    free(msg);
    cr_assert_eq(access(partial, F_OK), 0, "the refused checkpoint is kept");

    /* the same arguments with --resume: the finished windows are skipped */
    snprintf(cmd, sizeof cmd, "'%s' eval ppl --model '%s' %s --max-windows %s --out '%s' --checkpoint-every 0 --resume",
             bin, model, common, windows, out);
    cr_assert_eq(run_cmd(cmd, so, se), 0, "resumed run failed: %s", slurp(se));
    msg = slurp(se);
    char line[128];
    snprintf(line, sizeof line, ": %ld of %d windows finished, continuing", done_in_file, WINDOWS);
    cr_expect(strstr(msg, line), "expected '%s' in:\n%s", line, msg);
    free(msg);
    cr_expect_neq(access(partial, F_OK), 0, "OUT.partial removed after success");

    cJSON *a = read_json_file(full, err), *b = read_json_file(out, err);
    cr_assert(a && b, "%s", err);
    const cJSON *ra = key(a, "reference_ppl"), *rb = key(b, "reference_ppl");
    cr_expect_eq(memcmp(&ra->valuedouble, &rb->valuedouble, sizeof(double)), 0, "reference ppl %.17g vs %.17g",
                 ra->valuedouble, rb->valuedouble);
    static const char *const fields[] = {"ppl", "nll", "nll_stderr", "kld", "kld_stderr", "kld_max",
                                         "top1_agreement", "top1_agreement_stderr", "predictions"};
    const cJSON *ma = key(a, "modes"), *mb = key(b, "modes");
    cr_assert_eq(cJSON_GetArraySize(ma), 3);
    cr_assert_eq(cJSON_GetArraySize(mb), 3);
    for (int k = 0; k < 3; k++) {
        const cJSON *x = cJSON_GetArrayItem(ma, k), *y = cJSON_GetArrayItem(mb, k);
        cr_expect_str_eq(key(x, "mode")->valuestring, key(y, "mode")->valuestring);
        for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) {
            const cJSON *u = key(x, fields[f]), *v = key(y, fields[f]);
            cr_assert(cJSON_IsNumber(u) && cJSON_IsNumber(v), "%s %s", key(x, "mode")->valuestring, fields[f]);
            cr_expect_eq(memcmp(&u->valuedouble, &v->valuedouble, sizeof(double)), 0, "%s %s: %.17g vs %.17g",
                         key(x, "mode")->valuestring, fields[f], u->valuedouble, v->valuedouble);
        }
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    cr_expect_eq(system(cmd), 0);
}

/* --resume without --out, and a corrupt checkpoint: clear messages, no work. */
Test(resume, bad_uses_are_refused, .timeout = 60) {
    char root[AX_PATH_LEN], model[AX_PATH_LEN + 64], tmp[64];
    if (tu_data_root(root, sizeof root)) cr_skip_test("skipped: no data root");
    const char *bin = getenv("APEX4_BIN");
    if (!bin) cr_skip_test("skipped: APEX4_BIN not set (run through make test)");
    snprintf(model, sizeof model, "%s/models/stories260K", root);
    cr_assert_eq(tu_mkdtemp(tmp, sizeof tmp), 0);
    char so[256], se[256], out[256], partial[300], cmd[8192];
    snprintf(so, sizeof so, "%s/stdout.txt", tmp);
    snprintf(se, sizeof se, "%s/stderr.txt", tmp);
    snprintf(out, sizeof out, "%s/r.json", tmp);
    snprintf(partial, sizeof partial, "%s.partial", out);
    snprintf(cmd, sizeof cmd, "'%s' eval ppl --model '%s' --modes fp16 --seqlen 64 --max-windows 2 --threads 1 "
             "--no-progress --resume", bin, model);
    cr_expect_neq(run_cmd(cmd, so, se), 0);
    char *msg = slurp(se);
    cr_expect(strstr(msg, "--resume needs --out"), "%s", msg);
    free(msg);
    FILE *f = fopen(partial, "w");
    cr_assert_not_null(f);
    fputs("{\"format\": \"something else\"}\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' eval ppl --model '%s' --modes fp16 --seqlen 64 --max-windows 2 --threads 1 "
             "--no-progress --resume --out '%s'", bin, model, out);
    cr_expect_neq(run_cmd(cmd, so, se), 0);
    msg = slurp(se);
    cr_expect(strstr(msg, partial) && strstr(msg, "not an apex4 eval ppl checkpoint"), "%s", msg);
    free(msg);
    cr_expect_neq(access(out, F_OK), 0, "no results from a refused resume");
    /* a checkpoint-every out of range */
    snprintf(cmd, sizeof cmd, "'%s' eval ppl --model '%s' --checkpoint-every -5 --out '%s'", bin, model, out);
    cr_expect_eq(run_cmd(cmd, so, se), 2);
    msg = slurp(se);
    cr_expect(strstr(msg, "--checkpoint-every"), "%s", msg);
    free(msg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    cr_expect_eq(system(cmd), 0);
}
