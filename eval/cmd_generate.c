/* eval/cmd_generate.c — `apex4 generate`: greedy decoding in a quantization mode. Argument parsing,
 * loading and printing; the decoding loop is ae_generate (eval/forward.c). */
#include <cblas.h>
#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ax_util.h"
#include "forward.h"
#include "tokenizer.h"

int cmd_generate(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: apex4 generate --model DIR [--mode M] [--prompt TEXT] [-n 256] [--gemm fake|exact]\n"
            "                      [--kv4] [--threads N] [--tokenizer tokenizer.json] [--calib-dir DIR]\n"
            "Greedy (argmax) decoding from BOS + the prompt; prints the prompt and the n new tokens\n"
            "(stops early at EOS or BOS, as llama2.c run.c does at BOS). Default mode fp16 (the checkpoint's\n"
            "values, fp32 compute). Atom modes calibrate on WikiText-2 validation (cached in --calib-dir, \".\").\n");
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
    const char *model_dir = NULL, *mode_name = "fp16", *prompt = "", *tok_path = NULL, *calib_dir = ".";
    int n_new = 256, nthreads = 0, kv4 = 0;
    ae_gemm_kind gemm = AE_GEMM_FAKE;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = !strcmp(a, "--model") || !strcmp(a, "--mode") || !strcmp(a, "--prompt") ||
                    !strcmp(a, "-n") || !strcmp(a, "--gemm") || !strcmp(a, "--threads") ||
                    !strcmp(a, "--tokenizer") || !strcmp(a, "--calib-dir");
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
        else if (!strcmp(a, "--gemm")) {
            if (!strcmp(v, "fake")) gemm = AE_GEMM_FAKE;
            else if (!strcmp(v, "exact")) gemm = AE_GEMM_EXACT;
            else { fprintf(stderr, "apex4 generate: --gemm expects fake or exact, got '%s'\n", v); return 2; }
        }
        else if (!strcmp(a, "--kv4")) { kv4 = 1; continue; }
        else { fprintf(stderr, "apex4 generate: unknown option '%s'\n", a); usage(stderr); return 2; }
        i++;
    }
    if (!model_dir) { fprintf(stderr, "apex4 generate: --model DIR is required\n"); usage(stderr); return 2; }
    /* paths checked before the model loads: --tokenizer, and --calib-dir (where the Atom
     * calibration cache is written) must be an existing folder */
    if (tok_path && !*tok_path) { fprintf(stderr, "apex4 generate: --tokenizer: empty path\n"); return 2; }
    if (!*calib_dir) { fprintf(stderr, "apex4 generate: --calib-dir: empty path\n"); return 2; }
    if (tok_path && strlen(tok_path) >= 4096) { fprintf(stderr, "apex4 generate: --tokenizer: path too long\n"); return 2; }
    struct stat st;
    if (stat(calib_dir, &st) != 0) {
        fprintf(stderr, "apex4 generate: --calib-dir '%s': %s\n", calib_dir, strerror(errno));
        return 2;
    }
    if (!S_ISDIR(st.st_mode)) { fprintf(stderr, "apex4 generate: --calib-dir '%s': not a folder\n", calib_dir); return 2; }
    if (nthreads > 0) openblas_set_num_threads(nthreads);
    char err[AX_ERR_LEN] = "", path[4096];
    aq_mode mode;
    if (aq_mode_parse(mode_name, &mode, err)) { fprintf(stderr, "apex4 generate: --mode: %s\n", err); return 2; }
    ae_model *m = NULL;
    ae_tokenizer *tok = NULL;
    ae_calib *calib = NULL;
    ae_runner *r = NULL;
    int *ids = NULL, *out = NULL, *prompt_ids = NULL, rc = 2;
    size_t n_ids = 0;
    if (ae_model_load(model_dir, &m, err)) goto done;
    if (tok_path) snprintf(path, sizeof path, "%s", tok_path);
    else snprintf(path, sizeof path, "%.4000s/tokenizer.json", model_dir);
    if (ae_tokenizer_load(path, &tok, err)) goto done;
    if (ae_model_check_tokenizer(m, tok, path, err)) goto done;   /* the check eval ppl / zeroshot run */
    int bos = ae_tokenizer_bos(tok) >= 0 ? ae_tokenizer_bos(tok) : m->cfg.bos_id;
    int eos = ae_tokenizer_eos(tok) >= 0 ? ae_tokenizer_eos(tok) : m->cfg.eos_id;
    if (*prompt) {
        if (ae_tokenize(tok, prompt, strlen(prompt), bos >= 0, &ids, &n_ids, err)) goto done;
    } else {
        if (bos < 0) { snprintf(err, sizeof err, "%.400s has no BOS token: give --prompt", path); goto done; }
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
    if (mode.kind == AQ_KIND_ATOM) {
        if (ae_mode_check(m, &mode, err)) goto done;
        int seqlen = m->cfg.max_pos < 2048 ? m->cfg.max_pos : 2048;
        if (ae_calib_obtain(m, tok, seqlen, 128, calib_dir, nthreads, stderr, &calib, NULL, err)) goto done;
    }
    ae_run_opts o = {mode, gemm, kv4, nthreads, (int)max_seq};
    if (ae_runner_build(m, &o, calib, &r, err)) goto done;
    out = malloc(((size_t)n_new + 1) * sizeof *out);
    if (!out) { snprintf(err, sizeof err, "out of memory"); goto done; }
    int stop[2], n_stop = 0, n_out = 0;
    if (eos >= 0) stop[n_stop++] = eos;
    if (bos >= 0) stop[n_stop++] = bos;
    stream_ctx sc = {tok, 0};
    on_token(&sc, ids, (int)n_ids); /* the prompt itself */
    if (ae_generate(r, ids, (int)n_ids, n_new, stop, n_stop, out, &n_out, on_token, &sc, err)) goto done;
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
    ae_runner_free(r);
    ae_calib_free(calib);
    ae_tokenizer_free(tok);
    ae_model_free(m);
    return rc;
}
