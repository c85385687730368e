/* eval/cmd_zeroshot.c — `apex4 eval zeroshot`: argument parsing and printing only; the work is
 * ae_zs_run (eval/zeroshot.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ax_util.h"
#include "zeroshot.h"

int cmd_eval_zeroshot(int argc, char **argv);

#define DEFAULT_TASKS "piqa,arc_easy,arc_challenge,boolq,hellaswag,winogrande,lambada_openai"

static void usage(FILE *f) {
    fprintf(f,
        "usage: apex4 eval zeroshot --model DIR [--tasks LIST] [--modes LIST] [--limit N]\n"
        "                           [--out results.json] [--tokenizer FILE] [--bos] [--threads N]\n"
        "                           [--gemm fake|exact] [--kv4]\n"
        "  Zero-shot accuracy scored as lm-evaluation-harness scores it (0-shot, target delimiter \" \").\n"
        "  --model DIR      Hugging Face LLaMA checkpoint folder (config.json, model.safetensors)\n"
        "  --tasks LIST     comma-separated, default " DEFAULT_TASKS "\n"
        "  --modes LIST     comma-separated quantization modes (apex4 modes), default fp16\n"
        "  --limit N        first N documents of each task (lm-eval --limit); default: all\n"
        "  --out FILE       results JSON, written atomically (Atom calibration cache goes next to it)\n"
        "  --tokenizer FILE tokenizer.json (default DIR/tokenizer.json)\n"
        "  --bos            prepend BOS to every request (lm-eval add_bos_token=True); default off,\n"
        "                   as lm-eval's HFLM up to v0.4.9 (the Atom/QuaRot protocol)\n"
        "  --threads N      worker threads (default: all cores)\n"
        "  --gemm K         fake (fake-quant + sgemm, default) or exact (integer reference GEMM)\n"
        "  --kv4            4-bit KV cache\n"
        "  Data: <data root>/data/... (APEX4_DATA or ../shared; see data/MANIFEST.md there).\n");
}

/* Split a comma list in place into list (at most max entries). */
static int split_list(char *s, const char **list, int max) {
    int n = 0;
    for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ","))
        if (*tok) {
            if (n == max) return -1;
            list[n++] = tok;
        }
    return n;
}

int cmd_eval_zeroshot(int argc, char **argv) {
    const char *model = NULL, *out = NULL, *tokenizer = NULL;
    char *tasks_s = NULL, *modes_s = NULL;
    ae_zs_opts o;
    memset(&o, 0, sizeof o);
    o.gemm = AE_GEMM_FAKE;
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); free(tasks_s); free(modes_s); return 0; }
        else if (!strcmp(a, "--bos")) o.bos = 1;
        else if (!strcmp(a, "--kv4")) o.kv4 = 1;
        else if (!has && (!strcmp(a, "--model") || !strcmp(a, "--tasks") || !strcmp(a, "--modes") ||
                          !strcmp(a, "--limit") || !strcmp(a, "--out") || !strcmp(a, "--tokenizer") ||
                          !strcmp(a, "--threads") || !strcmp(a, "--gemm"))) {
            fprintf(stderr, "apex4 eval zeroshot: %s needs a value\n", a);
            goto done;
        } else if (!strcmp(a, "--model")) model = argv[++i];
        else if (!strcmp(a, "--tasks")) { free(tasks_s); tasks_s = strdup(argv[++i]); }
        else if (!strcmp(a, "--modes")) { free(modes_s); modes_s = strdup(argv[++i]); }
        else if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--tokenizer")) tokenizer = argv[++i];
        else if (!strcmp(a, "--limit") || !strcmp(a, "--threads")) {
            const char *v = argv[++i];
            char *e;
            errno = 0;
            long n = strtol(v, &e, 10);
            if (errno || e == v || *e || n < (strcmp(a, "--limit") ? 0 : 1) || n > 100000000) {
                fprintf(stderr, "apex4 eval zeroshot: %s '%s' is not a %s integer\n", a, v,
                        strcmp(a, "--limit") ? "non-negative" : "positive");
                goto done;
            }
            if (!strcmp(a, "--limit")) o.limit = n; else o.nthreads = (int)n;
        } else if (!strcmp(a, "--gemm")) {
            const char *v = argv[++i];
            if (!strcmp(v, "fake")) o.gemm = AE_GEMM_FAKE;
            else if (!strcmp(v, "exact")) o.gemm = AE_GEMM_EXACT;
            else { fprintf(stderr, "apex4 eval zeroshot: --gemm '%s': expected fake or exact\n", v); goto done; }
        } else {
            fprintf(stderr, "apex4 eval zeroshot: unknown option '%s'\n\n", a);
            usage(stderr);
            goto done;
        }
    }
    if (!model) { fprintf(stderr, "apex4 eval zeroshot: --model DIR is required\n\n"); usage(stderr); goto done; }
    if (!tasks_s) tasks_s = strdup(DEFAULT_TASKS);
    if (!modes_s) modes_s = strdup("fp16");
    const char *tasks[64], *modes[64];
    int nt = tasks_s ? split_list(tasks_s, tasks, 64) : -1;
    int nm = modes_s ? split_list(modes_s, modes, 64) : -1;
    if (nt < 1 || nm < 1) { fprintf(stderr, "apex4 eval zeroshot: empty or too long --tasks/--modes list\n"); goto done; }
    char calib_dir[AX_PATH_LEN] = ".";
    if (out) {
        snprintf(calib_dir, sizeof calib_dir, "%s", out);
        char *slash = strrchr(calib_dir, '/');
        if (slash) { if (slash == calib_dir) slash[1] = 0; else *slash = 0; }
        else snprintf(calib_dir, sizeof calib_dir, ".");
    }
    if (out && access(calib_dir, W_OK) != 0) {   /* fail before hours of work, not after */
        fprintf(stderr, "apex4 eval zeroshot: --out %s: folder %s is not writable: %s\n", out, calib_dir,
                strerror(errno));
        goto done;
    }
    o.model_dir = model;
    o.tokenizer = tokenizer;
    o.tasks = tasks; o.n_tasks = nt;
    o.modes = modes; o.n_modes = nm;
    o.calib_dir = calib_dir;
    o.log = stderr;
    char err[AX_ERR_LEN] = "";
    cJSON *doc = NULL;
    if (ae_zs_run(&o, &doc, err)) {
        fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
        goto done;
    }
    ae_zs_print_table(stdout, doc);
    fflush(stdout);
    if (out) {
        if (ax_write_json(out, doc, err)) {
            fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
            cJSON_Delete(doc);
            goto done;
        }
        fprintf(stderr, "results written to %s\n", out);
    }
    cJSON_Delete(doc);
    rc = 0;
done:
    free(tasks_s);
    free(modes_s);
    return rc;
}
