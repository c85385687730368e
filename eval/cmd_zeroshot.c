/* eval/cmd_zeroshot.c — `apex4 eval zeroshot`: argument parsing and printing only; the work is
 * ae_zs_run (eval/zeroshot.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ax_util.h"
#include "dist.h"
#include "job.h"
#include "zeroshot.h"

int cmd_eval_zeroshot(int argc, char **argv);

#define DEFAULT_TASKS "piqa,arc_easy,arc_challenge,boolq,hellaswag,winogrande,lambada_openai"

static void usage(FILE *f) {
    fprintf(f,
        "usage: apex4 eval zeroshot --model DIR [--tasks LIST] [--modes LIST] [--limit N]\n"
        "                           [--out results.json] [--tokenizer FILE] [--bos] [--threads N]\n"
        "                           [--device cpu|cuda|auto] [--gemm exact|fake] [--kv4]\n"
        "                           [--calib-windows N] [--calib-dir DIR] [--batch-tokens N]\n"
        "                           [--log-samples FILE.jsonl]\n"
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
        "  --device D       cpu, cuda or auto (default: cuda when a GPU is present)\n"
        "  --gemm K         exact (integer GEMM: the kernels on cuda, the reference on cpu) or fake\n"
        "                   (fake-quant + sgemm / cuBLAS); default exact on cuda, fake on cpu\n"
        "  --kv4            4-bit KV cache\n"
        "  --calib-windows N Atom calibration windows (WikiText-2 validation, default 128)\n"
        "  --calib-dir DIR  Atom calibration cache folder (default: the folder of --out, else .)\n"
        "  --batch-tokens N tokens packed into one engine call (default 16384)\n"
        "  --log-samples F  one JSON line per request (lm-eval --log_samples): mode, task, doc, choice,\n"
        "                   context, continuation, ctx_ids, cont_ids, ll (nats), greedy, skipped,\n"
        "                   choice_len (characters), gold; written atomically\n"
        "  Data: <data root>/data/... (APEX4_DATA or ../shared; see data/MANIFEST.md there).\n"
        "  Ranks: mpirun -np N apex4 eval zeroshot ... (a build with Open MPI): each task's packed calls\n"
        "  (requests in document order) are split into N contiguous blocks, one GPU per rank (the local\n"
        "  rank picks it); every call starts from an empty KV cache and the per-request scores are gathered\n"
        "  in request order, so the numbers are bit-identical for any N. Rank 0 prints and writes --out\n"
        "  and --log-samples; an error on any rank ends the job.\n");
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
    const char *model = NULL, *out = NULL, *tokenizer = NULL, *log_samples = NULL;
    char *tasks_s = NULL, *modes_s = NULL;
    char err[AX_ERR_LEN] = "";
    const char *device_s = NULL, *gemm_s = NULL, *calib_dir = NULL;
    ae_zs_opts o;
    memset(&o, 0, sizeof o);
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); free(tasks_s); free(modes_s); return 0; }
        else if (!strcmp(a, "--bos")) o.bos = 1;
        else if (!strcmp(a, "--kv4")) o.kv4 = 1;
        else if (!has && (!strcmp(a, "--model") || !strcmp(a, "--tasks") || !strcmp(a, "--modes") ||
                          !strcmp(a, "--limit") || !strcmp(a, "--out") || !strcmp(a, "--tokenizer") ||
                          !strcmp(a, "--threads") || !strcmp(a, "--gemm") || !strcmp(a, "--log-samples") ||
                          !strcmp(a, "--device") || !strcmp(a, "--calib-windows") || !strcmp(a, "--calib-dir") ||
                          !strcmp(a, "--batch-tokens"))) {
            fprintf(stderr, "apex4 eval zeroshot: %s needs a value\n", a);
            goto done;
        } else if (!strcmp(a, "--model")) model = argv[++i];
        else if (!strcmp(a, "--tasks")) { free(tasks_s); tasks_s = strdup(argv[++i]); }
        else if (!strcmp(a, "--modes")) { free(modes_s); modes_s = strdup(argv[++i]); }
        else if (!strcmp(a, "--out")) out = argv[++i];
        else if (!strcmp(a, "--log-samples")) log_samples = argv[++i];
        else if (!strcmp(a, "--tokenizer")) tokenizer = argv[++i];
        else if (!strcmp(a, "--limit")) {
            long n;   /* documents per task: 1 .. 10^8 (no set is near that) */
            if (ax_parse_long(argv[++i], 1, 100000000, "--limit", &n, err)) {
                fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
                goto done;
            }
            o.limit = n;
        } else if (!strcmp(a, "--threads")) {
            long n;   /* 0 = all cores */
            if (ax_parse_long(argv[++i], 0, 4096, "--threads", &n, err)) {
                fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
                goto done;
            }
            o.nthreads = (int)n;
        } else if (!strcmp(a, "--calib-windows") || !strcmp(a, "--batch-tokens")) {
            long n;   /* calibration windows, packed tokens: 1 .. 2^24 */
            if (ax_parse_long(argv[++i], 1, 1L << 24, a, &n, err)) {
                fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
                goto done;
            }
            if (!strcmp(a, "--calib-windows")) o.calib_windows = (int)n;
            else o.batch_tokens = (int)n;
        } else if (!strcmp(a, "--gemm")) gemm_s = argv[++i];
        else if (!strcmp(a, "--device")) device_s = argv[++i];
        else if (!strcmp(a, "--calib-dir")) calib_dir = argv[++i];
        else {
            fprintf(stderr, "apex4 eval zeroshot: unknown option '%s'\n\n", a);
            usage(stderr);
            goto done;
        }
    }
    if (!model) { fprintf(stderr, "apex4 eval zeroshot: --model DIR is required\n\n"); usage(stderr); goto done; }
    if (ae_job_parse_device(device_s, gemm_s, &o.device, &o.gemm, err)) {
        fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
        goto done;
    }
    if (calib_dir && !*calib_dir) { fprintf(stderr, "apex4 eval zeroshot: --calib-dir: empty path\n"); goto done; }
    if (!*model) { fprintf(stderr, "apex4 eval zeroshot: --model: empty path\n"); goto done; }
    if (tokenizer && !*tokenizer) { fprintf(stderr, "apex4 eval zeroshot: --tokenizer: empty path\n"); goto done; }
    /* output paths: checked before any work, not after hours of it */
    if (out && ax_check_out_path(out, "--out", err)) { fprintf(stderr, "apex4 eval zeroshot: %s\n", err); goto done; }
    if (log_samples && ax_check_out_path(log_samples, "--log-samples", err)) {
        fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
        goto done;
    }
    if (out && log_samples && !strcmp(out, log_samples)) {
        fprintf(stderr, "apex4 eval zeroshot: --out and --log-samples name the same file '%s'\n", out);
        goto done;
    }
    if (!tasks_s) tasks_s = strdup(DEFAULT_TASKS);
    if (!modes_s) modes_s = strdup("fp16");
    const char *tasks[64], *modes[64];
    int nt = tasks_s ? split_list(tasks_s, tasks, 64) : -1;
    int nm = modes_s ? split_list(modes_s, modes, 64) : -1;
    if (nt < 1 || nm < 1) { fprintf(stderr, "apex4 eval zeroshot: empty or too long --tasks/--modes list\n"); goto done; }
    o.model_dir = model;
    o.tokenizer = tokenizer;
    o.tasks = tasks; o.n_tasks = nt;
    o.modes = modes; o.n_modes = nm;
    o.out = out;               /* the calibration cache goes next to it (eval/job.h) */
    o.calib_dir = calib_dir;
    o.log = stderr;
    o.log_samples = log_samples;
    cJSON *doc = NULL;
    ae_dist dist;   /* ranks under mpirun (eval/dist.h); one rank otherwise */
    if (ae_dist_init(&argc, &argv, &dist, err)) {
        fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
        goto done;
    }
    o.dist = &dist;
    if (ae_zs_run(&o, &doc, err)) {
        if (dist.size > 1) fprintf(stderr, "apex4 eval zeroshot: rank %d of %d: %s\n", dist.rank, dist.size, err);
        else fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
        fflush(stderr);
        ae_dist_abort(&dist, 2);   /* a failure the other ranks do not know of: end them too */
        ae_dist_finalize(&dist);
        goto done;
    }
    if (dist.rank == 0) {   /* rank 0 prints and writes */
        ae_zs_print_table(stdout, doc);
        fflush(stdout);
        if (out) {
            if (ax_write_json(out, doc, err)) {
                fprintf(stderr, "apex4 eval zeroshot: %s\n", err);
                cJSON_Delete(doc);
                ae_dist_finalize(&dist);
                goto done;
            }
            fprintf(stderr, "results written to %s\n", out);
        }
        if (log_samples) fprintf(stderr, "samples written to %s\n", log_samples);
    }
    cJSON_Delete(doc);
    ae_dist_finalize(&dist);
    rc = 0;
done:
    free(tasks_s);
    free(modes_s);
    return rc;
}
