/* quant/cmd_gemm.c — `apex4 gemm`: the reference W4A4 GEMM on an HDF5 case (quant/CASE_FORMAT.md),
 * optionally checked byte for byte against another file (--compare) or the CUDA kernels (--device).
 * Thin front end: argument parsing and printing; the work is aq_case_* (quant/aq_case.h) and ak_*.
 * Exit codes: 0 done (and everything compared equal), 1 a comparison found differing bytes,
 * 2 usage or input error (message names the file/dataset; no output file is left behind),
 * 3 --device cuda without a usable CUDA device ("skipped: no CUDA device", nothing is written). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ak.h"
#include "aq.h"
#include "aq_case.h"

int cmd_gemm(int argc, char **argv);

static void usage(FILE *f) {
    fprintf(f,
        "usage: apex4 gemm --mode MODE (--in case.h5 | --random M,N,K [--seed S] [--dist normal|heavy]\n"
        "                  [--perm sumsq|random]) [--out result.h5] [--k-splits N] [--threads N]\n"
        "                  [--compare other.h5] [--device cpu|cuda [--path int8|int4]]\n"
        "\n"
        "Reference integer GEMM Y = X·Wᵀ (NUMERICS.md) on fp16 X [M,K] and W [N,K] from an HDF5 file\n"
        "(datasets X, W, optional perm int32 [K] for atom modes; without it, atom sorts channels by Σx²\n"
        "of X) or generated (--random; normal or Student-t(3) heavy tails; seed default 0). Writes the\n"
        "inputs, codes, scales and Y to --out (layout: quant/CASE_FORMAT.md).\n"
        "  --k-splits N   split-K accumulation order (default 1)\n"
        "  --threads N    CPU threads (default: all online cores); the result does not depend on it\n"
        "  --compare F    count differing bytes per dataset against F; exit 1 if any differ\n"
        "  --device cuda  quantize X and run the GEMM with the CUDA kernels (W from the reference),\n"
        "                 compare with the reference byte for byte (exit 1 if any differ); --out and\n"
        "                 --compare then use the device's results. No device: exit 3.\n"
        "Modes: integer modes only (w8a8, w4a4-pc, w4a4-gN, w4a4-mixed-gN, atom-gN-oO).\n");
}

static int fail(const char *msg) {
    fprintf(stderr, "apex4 gemm: %s\n", msg);
    return 2;
}

static int parse_int(const char *s, long lo, long hi, long *v) {
    char *end;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (errno || end == s || *end || x < lo || x > hi) return -1;
    *v = x;
    return 0;
}

int cmd_gemm(int argc, char **argv) {
    const char *mode_s = NULL, *in = NULL, *random = NULL, *out = NULL, *cmp = NULL, *dist = NULL;
    const char *device = "cpu", *path_s = "int8", *perm_s = NULL, *seed_s = NULL;
    long k_splits = 1, threads = sysconf(_SC_NPROCESSORS_ONLN);
    char err[AX_ERR_LEN], msg[AX_ERR_LEN + 64];
    if (threads < 1) threads = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (i + 1 >= argc) { snprintf(msg, sizeof msg, "option '%s' needs a value (or is unknown; see --help)", a); return fail(msg); }
        const char *v = argv[++i];
        if (!strcmp(a, "--mode")) mode_s = v;
        else if (!strcmp(a, "--in")) in = v;
        else if (!strcmp(a, "--random")) random = v;
        else if (!strcmp(a, "--seed")) seed_s = v;
        else if (!strcmp(a, "--dist")) dist = v;
        else if (!strcmp(a, "--perm")) perm_s = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--compare")) cmp = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--path")) path_s = v;
        else if (!strcmp(a, "--k-splits")) {
            if (parse_int(v, 1, 65536, &k_splits)) return fail("--k-splits: expected an integer 1..65536");
        } else if (!strcmp(a, "--threads")) {
            if (parse_int(v, 1, 4096, &threads)) return fail("--threads: expected an integer 1..4096");
        } else {
            snprintf(msg, sizeof msg, "unknown option '%s' (see apex4 gemm --help)", a);
            return fail(msg);
        }
    }
    if (!mode_s) return fail("--mode is required (see apex4 gemm --help)");
    aq_mode mode;
    if (aq_mode_parse(mode_s, &mode, err)) return fail(err);
    if (!aq_mode_is_integer(&mode)) {
        snprintf(msg, sizeof msg, "mode '%s' has no integer GEMM; use w8a8, w4a4-pc, w4a4-gN, w4a4-mixed-gN "
                 "or atom-gN-oO", mode.name);
        return fail(msg);
    }
    if (!in == !random) return fail("give exactly one of --in case.h5 and --random M,N,K");
    if (in && (seed_s || dist || perm_s)) return fail("--seed, --dist and --perm go with --random, not --in");
    int use_cuda;
    if (!strcmp(device, "cpu")) use_cuda = 0;
    else if (!strcmp(device, "cuda")) use_cuda = 1;
    else { snprintf(msg, sizeof msg, "--device: unknown device '%s' (valid: cpu, cuda)", device); return fail(msg); }
    ak_path kpath;
    if (!strcmp(path_s, "int8")) kpath = AK_PATH_INT8;
    else if (!strcmp(path_s, "int4")) kpath = AK_PATH_INT4;
    else { snprintf(msg, sizeof msg, "--path: unknown kernel path '%s' (valid: int8, int4)", path_s); return fail(msg); }
    int perm_random = 0;
    if (perm_s && !strcmp(perm_s, "random")) perm_random = 1;
    else if (perm_s && strcmp(perm_s, "sumsq")) { snprintf(msg, sizeof msg, "--perm: '%s' (valid: sumsq, random)", perm_s); return fail(msg); }
    if (use_cuda && ak_device_count() < 1) {
        char why[256];
        ak_device_describe(why, sizeof why);
        printf("apex4 gemm: skipped: no CUDA device (%s)\n", why);
        return 3;
    }

    aq_case c;
    if (in) {
        if (aq_case_read_inputs(in, &mode, (int)k_splits, &c, err)) return fail(err);
    } else {
        long M, N, K;
        char extra;
        unsigned long long seed = 0;
        if (sscanf(random, "%ld,%ld,%ld%c", &M, &N, &K, &extra) != 3 || M < 1 || N < 1 || K < 1 ||
            M > (1L << 24) || N > (1L << 24) || K > (1L << 24))
            return fail("--random: expected M,N,K (three positive integers, e.g. 64,128,4096)");
        if (seed_s) {
            char *end;
            errno = 0;
            seed = strtoull(seed_s, &end, 10);
            if (errno || end == seed_s || *end || seed_s[0] == '-') return fail("--seed: expected a non-negative integer");
        }
        if (aq_case_random(&mode, (int)M, (int)N, (int)K, (int)k_splits, seed, dist ? dist : "normal",
                           perm_random, &c, err))
            return fail(err);
    }
    if (aq_case_run(&c, (int)threads, err)) {
        snprintf(msg, sizeof msg, "%s%s%s", in ? in : "", in ? ": " : "", err);
        aq_case_free(&c);
        return fail(msg);
    }
    long ninf = 0;
    for (size_t i = 0; i < (size_t)c.M * c.N; i++) ninf += (c.y[i] & 0x7c00u) == 0x7c00u;
    printf("apex4 gemm: mode %s  M=%d N=%d K=%d  k_splits %d  (reference, %ld threads)\n", mode.name, c.M, c.N,
           c.K, c.k_splits, threads);
    if (ninf) printf("  warning: %ld values of Y overflow fp16 (|acc| >= 65520 -> ±inf)\n", ninf);

    int rc = 0;
    aq_case dev;
    memset(&dev, 0, sizeof dev);
    if (use_cuda) {
        dev.mode = mode; dev.M = c.M; dev.N = c.N; dev.K = c.K; dev.k_splits = c.k_splits;
        if (ak_quantize_x(&mode, c.x, c.M, c.K, c.perm, &dev.qx, err)) {
            aq_case_free(&c);
            snprintf(msg, sizeof msg, "cuda: %s", err);
            return fail(msg);
        }
        dev.y = malloc((size_t)c.M * c.N * 2);
        if (!dev.y || ak_gemm(&dev.qx, &c.qw, kpath, dev.y, err)) {
            if (!dev.y) snprintf(err, sizeof err, "out of memory");
            aq_case_free(&c); aq_case_free(&dev);
            snprintf(msg, sizeof msg, "cuda: %s", err);
            return fail(msg);
        }
        dev.have_q = 1;
        long nd = 0;
        printf("cuda (%s path) vs reference%s:\n", path_s, c.k_splits != 1 ? " (note: ak_gemm has no k_splits)" : "");
        aq_case_compare(&c, NULL, &dev, stdout, &nd, err);
        printf("  total: %ld differing bytes -> %s\n", nd, nd ? "MISMATCH" : "bit-exact");
        if (nd) rc = 1;
        /* from here on the case holds the device's X codes/scales and Y (W stays the reference's) */
        aq_qtensor tq = c.qx; c.qx = dev.qx; dev.qx = tq;
        uint16_t *ty = c.y; c.y = dev.y; dev.y = ty;
        snprintf(c.source, sizeof c.source, "cuda-%s", path_s);
    }
    if (cmp) {
        long nd = 0;
        printf("compare with %s:\n", cmp);
        if (aq_case_compare(&c, cmp, NULL, stdout, &nd, err)) {
            aq_case_free(&c); aq_case_free(&dev);
            return fail(err);
        }
        printf("  total: %ld differing bytes -> %s\n", nd, nd ? "DIFFER" : "identical");
        if (nd) rc = 1;
    }
    if (out) {
        if (aq_case_write(out, &c, err)) {
            aq_case_free(&c); aq_case_free(&dev);
            return fail(err);
        }
        printf("wrote %s\n", out);
    }
    aq_case_free(&c);
    aq_case_free(&dev);
    return rc;
}
