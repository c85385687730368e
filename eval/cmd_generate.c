/* eval/cmd_generate.c — `apex4 generate`: greedy decoding in a quantization mode on the cpu or cuda
 * engine. Argument parsing and printing; loading, calibration and the engine follow the job policy
 * (eval/job.h), the decoding loop is ae_job_generate (argmax over ae_engine_forward's logits). */
#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ax_util.h"
#include "job.h"
#include "tokenizer.h"

int cmd_generate(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: apex4 generate --model DIR [--mode M] [--prompt TEXT] [-n 256] [--device cpu|cuda|auto]\n"
            "                      [--gemm exact|fake] [--kv4] [--threads N] [--tokenizer tokenizer.json]\n"
            "                      [--calib-dir DIR] [--calib-windows N]\n"
            "Greedy (argmax) decoding from BOS + the prompt; prints the prompt and the n new tokens\n"
            "(stops early at EOS or BOS, as llama2.c run.c does at BOS). Default mode fp16 (the checkpoint's\n"
            "values), --device auto (cuda when a GPU is present), --gemm exact on cuda and fake on cpu.\n"
            "Atom modes calibrate on WikiText-2 validation (--calib-windows, default 128; cached in\n"
            "--calib-dir, default \".\").\n");
}

/* An int option in [lo, hi] (ax_parse_long: digits only, no "1e20", no trailing characters). */
static int parse_int(const char *opt, const char *s, long lo, long hi, int *out) {
    char err[AX_ERR_LEN];
    long v;
    if (ax_parse_long(s, lo, hi, opt, &v, err)) {
        fprintf(stderr, "apex4 generate: %s\n", err);
        return -1;
    }
    *out = (int)v;
    return 0;
}

typedef struct {
    const ae_tokenizer *tok;
    size_t printed;  /* bytes of the decoded text already printed */
} stream_ctx;

/* Print what the decoded sequence adds; hold back an incomplete UTF-8 tail (U+FFFD at the end). */
static void on_token(void *vctx, const int *seq, int n) {
    stream_ctx *s = vctx;
    char *text = ae_detokenize(s->tok, seq, (size_t)n);
    if (!text) return;
    size_t len = strlen(text);
    if (len >= 3 && !memcmp(text + len - 3, "\xEF\xBF\xBD", 3)) len -= 3;
    if (len > s->printed) {
        fwrite(text + s->printed, 1, len - s->printed, stdout);
        fflush(stdout);
        s->printed = len;
    }
    free(text);
}

int cmd_generate(int argc, char **argv) {
    const char *model_dir = NULL, *mode_name = "fp16", *prompt = "", *tok_path = NULL, *calib_dir = NULL;
    const char *device_s = NULL, *gemm_s = NULL;
    int n_new = 256, nthreads = 0, kv4 = 0, calib_windows = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = !strcmp(a, "--model") || !strcmp(a, "--mode") || !strcmp(a, "--prompt") ||
                    !strcmp(a, "-n") || !strcmp(a, "--gemm") || !strcmp(a, "--threads") ||
                    !strcmp(a, "--tokenizer") || !strcmp(a, "--calib-dir") || !strcmp(a, "--device") ||
                    !strcmp(a, "--calib-windows");
        if (takes && !v) { fprintf(stderr, "apex4 generate: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--model")) model_dir = v;
        else if (!strcmp(a, "--mode")) mode_name = v;
        else if (!strcmp(a, "--prompt")) prompt = v;
        else if (!strcmp(a, "--tokenizer")) tok_path = v;
        else if (!strcmp(a, "--calib-dir")) calib_dir = v;
        /* -n up to max_position_embeddings' own limit (2^24; capped by the model's with a notice) */
        else if (!strcmp(a, "-n")) { if (parse_int(a, v, 0, 1L << 24, &n_new)) return 2; }
        else if (!strcmp(a, "--threads")) { if (parse_int(a, v, 1, 1024, &nthreads)) return 2; }
        else if (!strcmp(a, "--calib-windows")) { if (parse_int(a, v, 1, 1L << 24, &calib_windows)) return 2; }
        else if (!strcmp(a, "--gemm")) gemm_s = v;
        else if (!strcmp(a, "--device")) device_s = v;
        else if (!strcmp(a, "--kv4")) { kv4 = 1; continue; }
        else { fprintf(stderr, "apex4 generate: unknown option '%s'\n", a); usage(stderr); return 2; }
        i++;
    }
    if (!model_dir) { fprintf(stderr, "apex4 generate: --model DIR is required\n"); usage(stderr); return 2; }
    /* paths checked before the model loads: --tokenizer, and --calib-dir (where the Atom
     * calibration cache is written) must be an existing folder */
    if (tok_path && !*tok_path) { fprintf(stderr, "apex4 generate: --tokenizer: empty path\n"); return 2; }
    if (calib_dir && !*calib_dir) { fprintf(stderr, "apex4 generate: --calib-dir: empty path\n"); return 2; }
    if (tok_path && strlen(tok_path) >= 4096) { fprintf(stderr, "apex4 generate: --tokenizer: path too long\n"); return 2; }
    struct stat st;
    if (calib_dir && stat(calib_dir, &st) != 0) {
        fprintf(stderr, "apex4 generate: --calib-dir '%s': %s\n", calib_dir, strerror(errno));
        return 2;
    }
    if (calib_dir && !S_ISDIR(st.st_mode)) { fprintf(stderr, "apex4 generate: --calib-dir '%s': not a folder\n", calib_dir); return 2; }
    char err[AX_ERR_LEN] = "";
    ae_job_opts jo;
    memset(&jo, 0, sizeof jo);
    if (ae_job_parse_device(device_s, gemm_s, &jo.device, &jo.gemm, err)) {
        fprintf(stderr, "apex4 generate: %s\n", err);
        return 2;
    }
    if (nthreads > 0) openblas_set_num_threads(nthreads);
    aq_mode mode;
    if (aq_mode_parse(mode_name, &mode, err)) { fprintf(stderr, "apex4 generate: --mode: %s\n", err); return 2; }
    ae_job *job = NULL;
    ae_engine *eng = NULL;
    int *ids = NULL, *out = NULL, *prompt_ids = NULL, rc = 2;
    size_t n_ids = 0;
    jo.model_dir = model_dir;
    jo.tokenizer = tok_path;
    jo.calib_dir = calib_dir;       /* no --out: --calib-dir, else "." (eval/job.h) */
    jo.calib_windows = calib_windows;
    jo.kv4 = kv4;
    jo.nthreads = nthreads;
    jo.log = stderr;
    /* model, tokenizer and the check eval ppl / zeroshot run (ae_model_check_tokenizer) */
    if (ae_job_open(&jo, &job, err)) goto done;
    const ae_model *m = job->model;
    const ae_tokenizer *tok = job->tok;
    int bos = ae_tokenizer_bos(tok) >= 0 ? ae_tokenizer_bos(tok) : m->cfg.bos_id;
    int eos = ae_tokenizer_eos(tok) >= 0 ? ae_tokenizer_eos(tok) : m->cfg.eos_id;
    if (*prompt) {
        if (ae_tokenize(tok, prompt, strlen(prompt), bos >= 0, &ids, &n_ids, err)) goto done;
    } else {
        if (bos < 0) { snprintf(err, sizeof err, "%.400s has no BOS token: give --prompt", job->tokenizer_path); goto done; }
        ids = malloc(sizeof *ids);
        if (!ids) { snprintf(err, sizeof err, "out of memory"); goto done; }
        ids[0] = bos;
        n_ids = 1;
    }
    long max_seq = (long)n_ids + n_new;
    if (max_seq > m->cfg.max_pos) {
        fprintf(stderr, "notice: %ld positions capped to max_position_embeddings %d\n", max_seq, m->cfg.max_pos);
        max_seq = m->cfg.max_pos;
    }
    if ((long)n_ids > max_seq) { snprintf(err, sizeof err, "the prompt has %zu tokens, more than %ld positions", n_ids, max_seq); goto done; }
    if (ae_mode_check(m, &mode, err)) goto done;
    if (ae_job_calibrate(job, &mode, 1, err)) goto done;
    if (ae_job_engine_new(job, &mode, (int)max_seq, &eng, err)) goto done;
    out = malloc(((size_t)n_new + 1) * sizeof *out);
    if (!out) { snprintf(err, sizeof err, "out of memory"); goto done; }
    int stop[2], n_stop = 0, n_out = 0;
    if (eos >= 0) stop[n_stop++] = eos;
    if (bos >= 0) stop[n_stop++] = bos;
    stream_ctx sc = {tok, 0};
    on_token(&sc, ids, (int)n_ids); /* the prompt itself */
    if (ae_job_generate(eng, ids, (int)n_ids, n_new, stop, n_stop, out, &n_out, on_token, &sc, err)) goto done;
    /* flush a held-back tail, then the final newline */
    prompt_ids = malloc((n_ids + (size_t)n_out + 1) * sizeof *prompt_ids);
    if (prompt_ids) {
        memcpy(prompt_ids, ids, n_ids * sizeof *ids);
        memcpy(prompt_ids + n_ids, out, (size_t)n_out * sizeof *out);
        char *text = ae_detokenize(tok, prompt_ids, n_ids + (size_t)n_out);
        if (text && strlen(text) > sc.printed) fputs(text + sc.printed, stdout);
        free(text);
    }
    fputc('\n', stdout);
    rc = 0;
done:
    if (rc) fprintf(stderr, "apex4 generate: %s\n", err);
    free(ids); free(out); free(prompt_ids);
    ae_engine_free(eng);
    ae_job_close(job);
    return rc;
}
