/* kernels/cmd_gemm.c — `apex4 gemm`: the reference W4A4 GEMM on an HDF5 case (quant/CASE_FORMAT.md),
 * optionally checked byte for byte against another file (--compare) or the CUDA kernels (--device).
 * Thin front end: argument parsing and printing; the work is aq_case_* (quant/aq_case.h) and ak_*.
 * Exit codes: 0 done (and everything compared equal), 1 a comparison found differing bytes,
 * 2 usage or input error (message names the file/dataset; no output file is left behind),
 * 3 --device cuda without a usable CUDA device ("skipped: no CUDA device", nothing is written). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ak.h"
#include "aq.h"
#include "aq_case.h"
#include "ax_util.h"

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
        "  --random M,N,K each 1..16777216, and M*K, N*K, M*N each at most 2^32 elements\n"
        "  --seed S       unsigned 64-bit, decimal or 0x hex (default 0)\n"
        "  --k-splits N   split-K accumulation order, 1..65536 (default 1)\n"
        "  --threads N    CPU threads, 1..4096 (default: all online cores); the result does not depend on it\n"
        "  --compare F    count differing bytes per dataset against F; exit 1 if any differ (exit 2 if F\n"
        "                 or one of its datasets cannot be read)\n"
        "  --device cuda  quantize X and run the GEMM with the CUDA kernels (W from the reference),\n"
        "                 compare with the reference byte for byte (exit 1 if any differ); --out and\n"
        "                 --compare then use the device's results. No device: exit 3.\n"
        "Modes: integer modes only (w8a8, w4a4-pc, w4a4-gN, w4a4-mixed-gN, atom-gN-oO).\n");
}

static int fail(const char *msg) {
    fprintf(stderr, "apex4 gemm: %s\n", msg);
    return 2;
}

/* Largest generated matrix (elements of X [M,K], W [N,K] and Y [M,N] each): 2^32, i.e. 8 GiB of fp16. */
#define GEMM_MAX_ELEMS ((size_t)1 << 32)

/* --random M,N,K: three comma-separated decimal integers, each 1..2^24, no other characters, and no
 * product M*K, N*K, M*N above GEMM_MAX_ELEMS (checked with ax_mul_size: no overflow anywhere). */
static int parse_shape(const char *v, long *M, long *N, long *K, char *err) {
    char buf[96], *parts[3];
    const char *names[3] = {"--random M", "--random N", "--random K"};
    if (strlen(v) >= sizeof buf) {
        ax_seterr(err, "--random: expected M,N,K (three integers 1..16777216), got a %zu-character value", strlen(v));
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", v);
    int n = 0;
    char *p = buf;
    for (;;) {
        if (n == 3) { ax_seterr(err, "--random: expected M,N,K (three integers), got '%s'", v); return -1; }
        parts[n++] = p;
        char *c = strchr(p, ',');
        if (!c) break;
        *c = 0;
        p = c + 1;
    }
    if (n != 3) { ax_seterr(err, "--random: expected M,N,K (three integers, e.g. 64,128,4096), got '%s'", v); return -1; }
    long *dst[3] = {M, N, K};
    for (int i = 0; i < 3; i++)
        if (ax_parse_long(parts[i], 1, 1L << 24, names[i], dst[i], err)) return -1;
    const long pr[3][2] = {{*M, *K}, {*N, *K}, {*M, *N}};
    const char *pn[3] = {"--random: X [M, K]", "--random: W [N, K]", "--random: Y [M, N]"};
    for (int i = 0; i < 3; i++) {
        size_t e;
        if (ax_mul_size((size_t)pr[i][0], (size_t)pr[i][1], &e, pn[i], err)) return -1;
        if (e > GEMM_MAX_ELEMS) {
            ax_seterr(err, "%s has %zu elements, more than the limit %zu", pn[i], e, GEMM_MAX_ELEMS);
            return -1;
        }
    }
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
            if (ax_parse_long(v, 1, 65536, "--k-splits", &k_splits, err)) return fail(err);
        } else if (!strcmp(a, "--threads")) {
            if (ax_parse_long(v, 1, 4096, "--threads", &threads, err)) return fail(err);
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
        uint64_t seed = 0;
        if (parse_shape(random, &M, &N, &K, err)) return fail(err);
        if (seed_s && ax_parse_u64(seed_s, "--seed", &seed, err)) return fail(err);
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
