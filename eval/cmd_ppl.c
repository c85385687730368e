/* eval/cmd_ppl.c — `apex4 eval ppl`: argument parsing and printing only; the work is
 * ae_ppl_run_job (eval/ppl.c). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ax_util.h"
#include "dist.h"
#include "ppl.h"

int cmd_eval_ppl(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
            "usage: apex4 eval ppl --model DIR [--dataset wikitext2] [--modes M1,M2,...|standard]\n"
            "                      [--seqlen N] [--max-windows N] [--out results.json] [--device cpu|cuda|auto]\n"
            "                      [--gemm exact|fake]\n"
            "                      [--kv4] [--threads N] [--tokenizer tokenizer.json] [--calib-windows N]\n"
            "                      [--no-progress] [--resume] [--checkpoint-every SECONDS]\n"
            "                      [--gpu-mem-limit SIZE] [--layer-major|--no-layer-major]\n"
            "WikiText-2 test perplexity (GPTQ/Atom/QuaRot protocol: rows joined with \"\\n\\n\", numel // seqlen\n"
            "windows, positions 1..seqlen-1 scored), KL divergence from FP16 and top-1 agreement per mode\n"
            "(llama.cpp --kl-divergence). Defaults: all standard modes, seqlen 2048 (capped by the model's\n"
            "max_position_embeddings), --device auto (cuda when a GPU is present), --gemm exact on cuda (apex4's\n"
            "bit-exact kernels) and fake on cpu (fake-quant + sgemm). Atom calibration is cached next to --out.\n"
            "Resumable runs: with --out OUT, the finished windows' sums are checkpointed atomically to OUT.partial\n"
            "every --checkpoint-every seconds of work (default 300; 0 = after every window); OUT.partial records\n"
            "a hash of the arguments that affect the numbers and is removed when OUT is written. Run the same\n"
            "command again with --resume after a crash or kill: finished windows are skipped (at most one\n"
            "checkpoint interval is redone) and the numbers equal an uninterrupted run's. A checkpoint from other\n"
            "arguments is refused. On cuda the FP16 reference is recomputed for windows with a mode left to score.\n"
            "Ranks: mpirun -np N apex4 eval ppl ... (a build with Open MPI) splits the windows into N contiguous\n"
            "blocks, one GPU per rank (the local rank picks it); per-window sums are added in window order, so the\n"
            "numbers are bit-identical for any N. Rank 0 prints and writes --out; any rank's error ends the job.\n"
            "Layer-major (cuda): when a mode's model does not fit --gpu-mem-limit (e.g. 8GiB; default 90%% of the\n"
            "device), or with --layer-major, the engine streams its layers: each layer is read (or generated, for\n"
            "--model random:...) and quantized once, every window's hidden state (kept on the device) passes\n"
            "through it, and it is freed before the next: LLaMA-2-70B on one GPU. Same numbers bit for bit.\n");
}

/* An int option in [lo, hi] (ax_parse_long: digits only, no "1e20", no trailing characters). */
static int parse_int(const char *opt, const char *s, long lo, long hi, int *out) {
    char err[AX_ERR_LEN];
    long v;
    if (ax_parse_long(s, lo, hi, opt, &v, err)) {
        fprintf(stderr, "apex4 eval ppl: %s\n", err);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cmd_eval_ppl(int argc, char **argv) {
    ae_ppl_job job;
    memset(&job, 0, sizeof job);
    job.dataset = "wikitext2";
    job.progress = 1;
    const char *gemm_s = NULL, *device_s = "auto";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = !strcmp(a, "--model") || !strcmp(a, "--dataset") || !strcmp(a, "--modes") ||
                    !strcmp(a, "--seqlen") || !strcmp(a, "--max-windows") || !strcmp(a, "--out") ||
                    !strcmp(a, "--gemm") || !strcmp(a, "--threads") || !strcmp(a, "--tokenizer") ||
                    !strcmp(a, "--calib-windows") || !strcmp(a, "--device") || !strcmp(a, "--checkpoint-every") ||
                    !strcmp(a, "--gpu-mem-limit");
        if (takes && !v) { fprintf(stderr, "apex4 eval ppl: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--model")) job.model_dir = v;
        else if (!strcmp(a, "--dataset")) job.dataset = v;
        else if (!strcmp(a, "--modes")) job.modes = v;
        else if (!strcmp(a, "--out")) job.out = v;
        else if (!strcmp(a, "--tokenizer")) job.tokenizer = v;
        /* ranges: seqlen up to max_position_embeddings' own limit (config.json, 2^24); windows and
         * calibration windows up to 2^24; threads up to 1024 */
        else if (!strcmp(a, "--seqlen")) { if (parse_int(a, v, 2, 1L << 24, &job.seqlen)) return 2; }
        else if (!strcmp(a, "--max-windows")) { if (parse_int(a, v, 1, 1L << 24, &job.max_windows)) return 2; }
        else if (!strcmp(a, "--calib-windows")) { if (parse_int(a, v, 1, 1L << 24, &job.calib_windows)) return 2; }
        else if (!strcmp(a, "--threads")) { if (parse_int(a, v, 1, 1024, &job.nthreads)) return 2; }
        else if (!strcmp(a, "--gemm")) { gemm_s = v; }
        else if (!strcmp(a, "--device")) { device_s = v; }
        else if (!strcmp(a, "--checkpoint-every")) {   /* seconds, up to ~4 months; 0 = every window */
            int s;
            if (parse_int(a, v, 0, 10000000, &s)) return 2;
            job.checkpoint_every = s == 0 ? -1 : s;
        }
        else if (!strcmp(a, "--gpu-mem-limit")) {   /* 64 MiB .. 1 PiB */
            char e2[AX_ERR_LEN];
            if (ax_parse_size(v, "--gpu-mem-limit", 67108864.0, 1125899906842624.0, &job.gpu_mem_limit, e2)) {
                fprintf(stderr, "apex4 eval ppl: %s\n", e2);
                return 2;
            }
        }
        else if (!strcmp(a, "--layer-major")) { job.layer_major = 1; continue; }
        else if (!strcmp(a, "--no-layer-major")) { job.layer_major = -1; continue; }
        else if (!strcmp(a, "--resume")) { job.resume = 1; continue; }
        else if (!strcmp(a, "--kv4")) { job.kv4 = 1; continue; }
        else if (!strcmp(a, "--no-progress")) { job.progress = 0; continue; }
        else {
            fprintf(stderr, "apex4 eval ppl: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!job.model_dir) {
        fprintf(stderr, "apex4 eval ppl: --model DIR is required\n");
        usage(stderr);
        return 2;
    }
    char err[AX_ERR_LEN] = "";
    if (ae_device_parse(device_s, "--device", &job.device, err) ||
        (gemm_s && ae_gemm_parse(gemm_s, "--gemm", &job.gemm, err))) {
        fprintf(stderr, "apex4 eval ppl: %s\n", err);
        return 2;
    }
    /* the integer kernels are the GPU default: accuracy of what gets deployed */
    if (!gemm_s) job.gemm = job.device == AE_DEV_CUDA ? AE_GEMM_EXACT : AE_GEMM_FAKE;
    /* before any work: an unwritable --out would otherwise fail after the whole evaluation
     * (ae_ppl_run_job checks it again for library callers) */
    if (job.out && ax_check_out_path(job.out, "--out", err)) {
        fprintf(stderr, "apex4 eval ppl: %s\n", err);
        return 2;
    }
    if (job.resume && !job.out) {
        fprintf(stderr, "apex4 eval ppl: --resume needs --out OUT (the checkpoint is OUT.partial)\n");
        return 2;
    }
    if (job.nthreads > 0) openblas_set_num_threads(job.nthreads);
    ae_dist dist;   /* ranks under mpirun (eval/dist.h); one rank otherwise */
    if (ae_dist_init(&argc, &argv, &dist, err)) {
        fprintf(stderr, "apex4 eval ppl: %s\n", err);
        return 2;
    }
    job.dist = &dist;
    if (ae_ppl_run_job(&job, stdout, stderr, err)) {
        if (dist.size > 1) fprintf(stderr, "apex4 eval ppl: rank %d of %d: %s\n", dist.rank, dist.size, err);
        else fprintf(stderr, "apex4 eval ppl: %s\n", err);
        fflush(stderr);
        ae_dist_abort(&dist, 2);   /* a failure the other ranks do not know of: end them too */
        ae_dist_finalize(&dist);
        return 2;
    }
    ae_dist_finalize(&dist);
    return 0;
}
