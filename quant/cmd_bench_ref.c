/* quant/cmd_bench_ref.c — `apex4 bench ref`: throughput of the CPU reference GEMM (aq_gemm) in integer
 * multiply-accumulates per second (M·N·K per GEMM; quantization of X and W is not timed).
 * Thin front end: inputs from aq_case_random, timing with ax_now. Exit 2 on bad options. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aq.h"
#include "aq_case.h"
#include "ax_util.h"

int cmd_bench_ref(int argc, char **argv);

/* Largest operand (elements of X [M,K], W [N,K], Y [M,N] each): 2^32 (8 GiB of fp16). */
#define BENCH_MAX_ELEMS ((size_t)1 << 32)

int cmd_bench_ref(int argc, char **argv) {
    long M = 512, N = 4096, K = 4096, threads = sysconf(_SC_NPROCESSORS_ONLN), k_splits = 1, reps = 0;
    const char *mode_s = "w4a4-g128";
    char err[AX_ERR_LEN];
    if (threads < 1) threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: apex4 bench ref [--m 512] [--n 4096] [--k 4096] [--mode w4a4-g128] [--threads N]\n"
                   "                       [--k-splits 1] [--reps R]\n"
                   "Times the CPU reference integer GEMM (aq_gemm) on random normal inputs and reports\n"
                   "integer multiply-accumulates per second, total and per thread (threads default: all\n"
                   "online cores; reps default: as many as fit in ~2 s, at least 1; the best rep is reported).\n");
            return 0;
        }
        if (i + 1 >= argc) { fprintf(stderr, "apex4 bench ref: option '%s' needs a value (or is unknown)\n", a); return 2; }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--m")) bad = ax_parse_long(v, 1, 1L << 24, "--m", &M, err);
        else if (!strcmp(a, "--n")) bad = ax_parse_long(v, 1, 1L << 24, "--n", &N, err);
        else if (!strcmp(a, "--k")) bad = ax_parse_long(v, 1, 1L << 24, "--k", &K, err);
        else if (!strcmp(a, "--threads")) bad = ax_parse_long(v, 1, 4096, "--threads", &threads, err);
        else if (!strcmp(a, "--k-splits")) bad = ax_parse_long(v, 1, 65536, "--k-splits", &k_splits, err);
        else if (!strcmp(a, "--reps")) bad = ax_parse_long(v, 1, 1000000, "--reps", &reps, err);
        else if (!strcmp(a, "--mode")) mode_s = v;
        else { fprintf(stderr, "apex4 bench ref: unknown option '%s' (see --help)\n", a); return 2; }
        if (bad) { fprintf(stderr, "apex4 bench ref: %s\n", err); return 2; }
    }
    const long pr[3][2] = {{M, K}, {N, K}, {M, N}};
    const char *pn[3] = {"--m x --k (X)", "--n x --k (W)", "--m x --n (Y)"};
    for (int i = 0; i < 3; i++) {
        size_t e = 0;
        if (ax_mul_size((size_t)pr[i][0], (size_t)pr[i][1], &e, pn[i], err) || e > BENCH_MAX_ELEMS) {
            if (e > BENCH_MAX_ELEMS) snprintf(err, sizeof err, "%s: %zu elements, more than the limit %zu", pn[i], e, BENCH_MAX_ELEMS);
            fprintf(stderr, "apex4 bench ref: %s\n", err);
            return 2;
        }
    }
    aq_mode mode;
    if (aq_mode_parse(mode_s, &mode, err)) { fprintf(stderr, "apex4 bench ref: %s\n", err); return 2; }
    if (!aq_mode_is_integer(&mode)) {
        fprintf(stderr, "apex4 bench ref: mode '%s' has no integer GEMM\n", mode.name);
        return 2;
    }
    aq_case c;
    if (aq_case_random(&mode, (int)M, (int)N, (int)K, (int)k_splits, 1, "normal", 1, &c, err)) {
        fprintf(stderr, "apex4 bench ref: %s\n", err);
        return 2;
    }
    if (aq_quantize_x(&mode, c.x, c.M, c.K, c.perm, &c.qx, err) ||
        aq_quantize_w(&mode, c.w, c.N, c.K, c.perm, &c.qw, err) || !(c.y = malloc((size_t)M * N * 2))) {
        fprintf(stderr, "apex4 bench ref: %s\n", c.y ? err : "out of memory");
        aq_case_free(&c);
        return 2;
    }
    double macs = (double)M * N * K, best = 1e30, total = 0;
    int done = 0;
    for (;;) {
        double t0 = ax_now();
        if (aq_gemm(&c.qx, &c.qw, (int)k_splits, c.y, (int)threads, err)) {
            fprintf(stderr, "apex4 bench ref: %s\n", err);
            aq_case_free(&c);
            return 2;
        }
        double dt = ax_now() - t0;
        total += dt;
        if (dt < best) best = dt;
        done++;
        if (reps ? done >= reps : (total >= 2.0 || done >= 50)) break;
    }
    printf("bench ref: %s M=%ld N=%ld K=%ld k_splits %ld threads %ld: best of %d: %.4f s/GEMM, "
           "%.3g MAC/s total, %.3g MAC/s per thread\n",
           mode.name, M, N, K, k_splits, threads, done, best, macs / best, macs / best / (double)threads);
    aq_case_free(&c);
    return 0;
}
