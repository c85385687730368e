/* test_gemm_cli.c — `apex4 gemm` end to end: HDF5 round trip, a hand-derived case written here with
 * the HDF5 C API, --compare, --threads/--k-splits, --device without CUDA, and every input error path
 * (exit 2, message naming the file and dataset, no output file left behind).
 * Runs the CLI binary named by $APEX4_BIN (set by `make test`). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aq.h"
#include "ak.h"
#include "testutil.h"

static char dir[64];
static char out[16384];

static void setup(void) {
    cr_assert_eq(tu_mkdtemp(dir, sizeof dir), 0);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}
static void teardown(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (dir[0]) cr_assert_eq(system(cmd), 0);
}

/* Run `apex4 <args>` in dir, capture stdout+stderr into `out`; return the exit code. */
static int apex4(const char *args) {
    const char *bin = getenv("APEX4_BIN");
    if (!bin) cr_skip_test("skipped: APEX4_BIN is not set (run through `make test`)");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s 2>&1", dir, bin, args);
    FILE *p = popen(cmd, "r");
    cr_assert(p != NULL);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Run `apex4 gemm <args>` (see apex4). */
static int gemm(const char *args) {
    char a[3072];
    snprintf(a, sizeof a, "gemm %s", args);
    return apex4(a);
}

static int exists(const char *name) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

/* Only the listed files may be in dir (no output or temporary left behind). */
static void only_files(const char *const *allowed, int n) {
    DIR *d = opendir(dir);
    cr_assert(d != NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int ok = 0;
        for (int i = 0; i < n; i++) ok |= !strcmp(e->d_name, allowed[i]);
        cr_assert(ok, "unexpected file left behind: %s", e->d_name);
    }
    closedir(d);
}

/* fp16 as HDF5 documents a custom float (H5Tset_fields), written independently of quant/aq_case.c. */
static hid_t f16_type(void) {
    hid_t t = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(t, 15, 10, 5, 0, 10);
    H5Tset_precision(t, 16);
    H5Tset_size(t, 2);
    H5Tset_ebias(t, 15);
    return t;
}

static void put(hid_t f, const char *name, hid_t type, int rank, hsize_t d0, hsize_t d1, const void *data) {
    hsize_t dims[2] = {d0, d1};
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t ds = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(ds >= 0);
    cr_assert(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
}

static hid_t create(const char *name) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(f >= 0);
    return f;
}

/* Read a whole dataset as raw bytes of `type`; returns element count. */
static size_t get(const char *file, const char *name, hid_t type, void *buf, size_t cap, hsize_t *dims) {
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    cr_assert(f >= 0, "%s", p);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    cr_assert(ds >= 0, "%s: dataset %s", p, name);
    hid_t sp = H5Dget_space(ds);
    int r = H5Sget_simple_extent_ndims(sp);
    hsize_t d[2] = {1, 1};
    H5Sget_simple_extent_dims(sp, d, NULL);
    size_t n = (size_t)d[0] * (r == 2 ? d[1] : 1);
    cr_assert(n * H5Tget_size(type) <= cap);
    cr_assert(H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    if (dims) { dims[0] = d[0]; dims[1] = r == 2 ? d[1] : 0; }
    H5Sclose(sp); H5Dclose(ds); H5Fclose(f);
    return n;
}

static void hand_case(const char *name) {
    /* X = {7, 3, 0.7, -0.7} [1,4], W = {1, -1, 14, 2} [1,4] as fp16 bit patterns:
     * 7 = 0x4700, 3 = 0x4200, 0.7 -> 0x399a (0.7001953125), 1 = 0x3c00, 14 = 0x4b00, 2 = 0x4000. */
    uint16_t x[4] = {0x4700, 0x4200, 0x399a, 0xb99a}, w[4] = {0x3c00, 0xbc00, 0x4b00, 0x4000};
    hid_t f = create(name), t = f16_type();
    put(f, "X", t, 2, 1, 4, x);
    put(f, "W", t, 2, 1, 4, w);
    H5Tclose(t);
    H5Fclose(f);
}

TestSuite(gemm_cli, .init = setup, .fini = teardown);

Test(gemm_cli, hand_case_gives_the_hand_result) {
    /* w4a4-g2 on the hand case of test_gemm_ref.c (derivation there): Y = 0x4a33 (12.3984375);
     * codes: X {7, 3 | 7, -7} -> packed bytes 0x37, 0x97; W {7, -7 | 7, 1} -> 0x97, 0x17;
     * scales X {1 (0x3c00), 0.10003662109375 (0x2e67)}, W {0.142822265625 (0x3092), 2 (0x4000)}. */
    hand_case("case.h5");
    cr_assert_eq(gemm("--mode w4a4-g2 --in case.h5 --out res.h5"), 0, "%s", out);
    uint16_t y[1], sx[2], sw[2];
    uint8_t cx[2], cw[2];
    hsize_t d[2];
    hid_t t = f16_type();
    get("res.h5", "Y", t, y, sizeof y, d);
    cr_assert(d[0] == 1 && d[1] == 1);
    cr_assert_eq(y[0], 0x4a33, "%04x", y[0]);
    get("res.h5", "qx_scales", t, sx, sizeof sx, d);
    get("res.h5", "qw_scales", t, sw, sizeof sw, d);
    H5Tclose(t);
    cr_assert(sx[0] == 0x3c00 && sx[1] == 0x2e67 && sw[0] == 0x3092 && sw[1] == 0x4000,
              "%04x %04x %04x %04x", sx[0], sx[1], sw[0], sw[1]);
    get("res.h5", "qx_codes", H5T_NATIVE_UINT8, cx, sizeof cx, d);
    get("res.h5", "qw_codes", H5T_NATIVE_UINT8, cw, sizeof cw, d);
    cr_assert(cx[0] == 0x37 && cx[1] == 0x97 && cw[0] == 0x97 && cw[1] == 0x17, "%02x %02x %02x %02x",
              cx[0], cx[1], cw[0], cw[1]);
    const char *keep[] = {"case.h5", "res.h5"};
    only_files(keep, 2);
}

Test(gemm_cli, random_round_trip_and_compare) {
    /* The written inputs, read back through --in, reproduce every byte; a flipped byte of Y is found. */
    cr_assert_eq(gemm("--mode atom-g32-o8 --random 19,37,101 --seed 9 --dist heavy --perm random --out a.h5"), 0, "%s", out);
    cr_assert_eq(gemm("--mode atom-g32-o8 --in a.h5 --out b.h5 --compare a.h5 --threads 3"), 0, "%s", out);
    cr_assert(strstr(out, "identical"), "%s", out);
    hsize_t d[2];
    int32_t perm[101];
    cr_assert_eq(get("a.h5", "perm", H5T_NATIVE_INT32, perm, sizeof perm, d), 101);
    int8_t oc[19 * 8];
    get("a.h5", "qx_outl_codes", H5T_NATIVE_INT8, oc, sizeof oc, d);
    cr_assert(d[0] == 19 && d[1] == 8);
    uint8_t codes[19 * 47];
    get("a.h5", "qx_codes", H5T_NATIVE_UINT8, codes, sizeof codes, d);
    cr_assert(d[0] == 19 && d[1] == 47, "main part K - o = 93 channels -> 47 bytes per row");
    uint16_t s[19 * 3];
    hid_t t = f16_type();
    get("a.h5", "qx_scales", t, s, sizeof s, d);
    cr_assert(d[1] == 3, "ceil(93 / 32) = 3 groups");
    /* flip one byte of Y in a copy */
    uint16_t x[19 * 101], w[37 * 101], y[19 * 37];
    get("a.h5", "X", t, x, sizeof x, d);
    get("a.h5", "W", t, w, sizeof w, d);
    get("a.h5", "Y", t, y, sizeof y, d);
    y[5] ^= 0x0001;
    hid_t f = create("c.h5");
    put(f, "X", t, 2, 19, 101, x);
    put(f, "W", t, 2, 37, 101, w);
    put(f, "perm", H5T_NATIVE_INT32, 1, 101, 0, perm);
    put(f, "Y", t, 2, 19, 37, y);
    H5Fclose(f);
    H5Tclose(t);
    cr_assert_eq(gemm("--mode atom-g32-o8 --in a.h5 --compare c.h5"), 1, "%s", out);
    cr_assert(strstr(out, "Y               1 of 1406 bytes differ"), "%s", out);
    cr_assert(strstr(out, "qx_codes") && strstr(out, "missing"), "%s", out);
}

Test(gemm_cli, k_splits_and_threads) {
    cr_assert_eq(gemm("--mode w4a4-g32 --random 40,50,300 --seed 2 --out a.h5 --k-splits 4 --threads 1"), 0, "%s", out);
    cr_assert_eq(gemm("--mode w4a4-g32 --in a.h5 --compare a.h5 --k-splits 4 --threads 3"), 0, "%s", out);
    cr_assert_eq(gemm("--mode w4a4-mixed-g32 --random 40,50,300 --out m.h5"), 0, "%s", out);
    hsize_t d[2];
    uint16_t s[50];
    hid_t t = f16_type();
    get("m.h5", "qw_scales", t, s, sizeof s, d);
    H5Tclose(t);
    cr_assert(d[0] == 50 && d[1] == 1, "mixed W: one per-channel scale per row");
    uint8_t u[50 * 10];
    get("m.h5", "qw_sub", H5T_NATIVE_UINT8, u, sizeof u, d);
    cr_assert(d[0] == 50 && d[1] == 10);
    for (int i = 0; i < 500; i++) cr_assert(u[i] >= 1 && u[i] <= 15);
}

Test(gemm_cli, device_without_cuda_exits_3) {
    if (ak_device_count() > 0) {
        /* a GPU is present: the kernels must match the reference byte for byte */
        cr_assert_eq(gemm("--mode w4a4-g128 --random 77,130,520 --device cuda"), 0, "%s", out);
        cr_assert(strstr(out, "bit-exact"), "%s", out);
        return;
    }
    cr_assert_eq(gemm("--mode w4a4-g128 --random 7,13,52 --device cuda --out d.h5"), 3, "%s", out);
    cr_assert(strstr(out, "skipped: no CUDA device"), "%s", out);
    only_files(NULL, 0);
}

/* ---- error paths ----------------------------------------------------------------------------- */

static void expect_error(const char *args, const char *must1, const char *must2) {
    cr_assert_eq(gemm(args), 2, "%s -> %s", args, out);
    cr_assert(strstr(out, "apex4 gemm: "), "%s", out);
    if (must1) cr_assert(strstr(out, must1), "'%s' not in: %s", must1, out);
    if (must2) cr_assert(strstr(out, must2), "'%s' not in: %s", must2, out);
    cr_assert(!exists("out.h5"), "no output may be left behind: %s", args);
}

Test(gemm_cli, missing_file) {
    expect_error("--mode w4a4-g32 --in nothere.h5 --out out.h5", "nothere.h5", NULL);
    only_files(NULL, 0);
}

Test(gemm_cli, not_hdf5_or_truncated) {
    hand_case("case.h5");
    char p[256];
    snprintf(p, sizeof p, "%s/junk.h5", dir);
    FILE *f = fopen(p, "wb");
    fputs("this is not HDF5\n", f);
    fclose(f);
    expect_error("--mode w4a4-g32 --in junk.h5 --out out.h5", "junk.h5", NULL);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "head -c 1000 '%s/case.h5' > '%s/trunc.h5'", dir, dir);
    cr_assert_eq(system(cmd), 0);
    expect_error("--mode w4a4-g32 --in trunc.h5 --out out.h5", "trunc.h5", NULL);
    const char *keep[] = {"case.h5", "junk.h5", "trunc.h5"};
    only_files(keep, 3);
}

Test(gemm_cli, missing_dataset) {
    uint16_t x[4] = {0x3c00, 0, 0, 0};
    hid_t f = create("nw.h5"), t = f16_type();
    put(f, "X", t, 2, 1, 4, x);
    H5Fclose(f);
    H5Tclose(t);
    expect_error("--mode w4a4-g2 --in nw.h5 --out out.h5", "nw.h5", "'W'");
}

Test(gemm_cli, wrong_dtype_and_rank) {
    float xf[4] = {1, 2, 3, 4};
    uint16_t w[4] = {0x3c00, 0, 0, 0};
    hid_t f = create("f32.h5"), t = f16_type();
    put(f, "X", H5T_NATIVE_FLOAT, 2, 1, 4, xf);
    put(f, "W", t, 2, 1, 4, w);
    H5Fclose(f);
    expect_error("--mode w4a4-g2 --in f32.h5 --out out.h5", "f32.h5", "'X' has dtype float32");
    f = create("rank.h5");
    put(f, "X", t, 1, 4, 0, w);
    put(f, "W", t, 2, 1, 4, w);
    H5Fclose(f);
    expect_error("--mode w4a4-g2 --in rank.h5 --out out.h5", "rank.h5", "'X' has rank 1");
    H5Tclose(t);
}

Test(gemm_cli, k_mismatch) {
    uint16_t a[6] = {0x3c00, 0, 0, 0, 0, 0};
    hid_t f = create("km.h5"), t = f16_type();
    put(f, "X", t, 2, 1, 6, a);
    put(f, "W", t, 2, 1, 4, a);
    H5Fclose(f);
    H5Tclose(t);
    expect_error("--mode w4a4-g2 --in km.h5 --out out.h5", "km.h5", "K mismatch");
}

Test(gemm_cli, bad_perm_and_nan) {
    uint16_t a[4] = {0x3c00, 0x4000, 0, 0};
    int32_t perm[4] = {0, 1, 1, 3};
    hid_t f = create("p.h5"), t = f16_type();
    put(f, "X", t, 2, 1, 4, a);
    put(f, "W", t, 2, 1, 4, a);
    put(f, "perm", H5T_NATIVE_INT32, 1, 4, 0, perm);
    H5Fclose(f);
    expect_error("--mode atom-g2-o2 --in p.h5 --out out.h5", "p.h5", "perm");
    a[2] = 0x7e00;   /* NaN */
    f = create("nan.h5");
    put(f, "X", t, 2, 1, 4, a);
    put(f, "W", t, 2, 1, 4, a);
    H5Fclose(f);
    H5Tclose(t);
    expect_error("--mode w4a4-g2 --in nan.h5 --out out.h5", "nan.h5", "'X' has a non-finite value");
}

Test(gemm_cli, usage_errors) {
    hand_case("case.h5");
    expect_error("--mode w4a4-g7 --in case.h5 --out out.h5", "w4a4-g7", "atom-gN-oO");
    expect_error("--mode fp16 --in case.h5 --out out.h5", "fp16", "integer");
    expect_error("--in case.h5 --out out.h5", "--mode", NULL);
    expect_error("--mode w4a4-g2 --out out.h5", "--in", NULL);
    expect_error("--mode w4a4-g2 --in case.h5 --random 1,2,3 --out out.h5", "--random", NULL);
    expect_error("--mode w4a4-g2 --random 1,2 --out out.h5", "--random", NULL);
    expect_error("--mode w4a4-g2 --random 1,2,3 --dist cauchy --out out.h5", "cauchy", NULL);
    expect_error("--mode w4a4-g2 --in case.h5 --k-splits 0 --out out.h5", "--k-splits", NULL);
    expect_error("--mode w4a4-g2 --in case.h5 --frobnicate 1", "--frobnicate", NULL);
    expect_error("--mode w4a4-g2 --in case.h5 --out nodir/out.h5", "nodir/out.h5", NULL);
    expect_error("--mode w4a4-g2 --in case.h5 --compare nothere.h5", "nothere.h5", NULL);
    const char *keep[] = {"case.h5"};
    only_files(keep, 1);
}

/* ---- hostile input (issue "hostile input": mutation run against the ASan+UBSan build) ----------- */

/* Numbers on the command line: each option's value is range-checked (ax_parse_long / ax_parse_u64)
 * and the message names the option; expected outcomes follow the documented ranges in --help and the
 * limits in kernels/cmd_gemm.c (M, N, K in 1..2^24, each of M*K, N*K, M*N at most 2^32 elements). */
Test(gemm_cli, random_shape_and_numbers_out_of_range) {
    const struct { const char *args, *must; } bad[] = {
        {"--random 1e20,1,1", "--random M"},
        {"--random 0,1,1", "--random M"},
        {"--random 4,-1,8", "--random N"},
        {"--random 4,8,99999999999999999999", "--random K"},  /* > 2^64: no wrap-around to a small K */
        {"--random 4,8,16777217", "--random K"},              /* 2^24 + 1                          */
        {"--random 4,8", "M,N,K"},
        {"--random 4,8,16,32", "M,N,K"},
        {"--random 4,,16", "--random N"},
        {"--random ' 4,8,16'", "--random M"},
        {"--random 4,8,0x10", "--random K"},
        {"--random 65536,65537,1", "Y [M, N]"},               /* 2^32 + 2^16 elements of Y          */
        {"--random 16777216,1,16777216", "X [M, K]"},        /* 2^48 elements of X                 */
        {"--random 4,8,16 --seed -1", "--seed"},
        {"--random 4,8,16 --seed 18446744073709551616", "--seed"},   /* 2^64 */
        {"--random 4,8,16 --seed 1.5", "--seed"},
        {"--random 4,8,16 --k-splits 1e3", "--k-splits"},
        {"--random 4,8,16 --k-splits 65537", "--k-splits"},
        {"--random 4,8,16 --k-splits -2", "--k-splits"},
        {"--random 4,8,16 --threads 0", "--threads"},
        {"--random 4,8,16 --threads 4097", "--threads"},
        {"--random 4,8,16 --threads 99999999999999999999", "--threads"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char a[256];
        snprintf(a, sizeof a, "--mode w4a4-g8 %s --out out.h5", bad[i].args);
        expect_error(a, bad[i].must, NULL);
    }
    /* the limits themselves are accepted: the largest seed (2^64 - 1) and 0x hex */
    cr_assert_eq(gemm("--mode w4a4-g8 --random 2,3,16 --seed 18446744073709551615"), 0, "%s", out);
    cr_assert_eq(gemm("--mode w4a4-g8 --random 2,3,16 --seed 0x10 --k-splits 65536 --threads 4096"), 0, "%s", out);
    only_files(NULL, 0);
}

Test(gemm_cli, absurd_mode_strings) {
    const char *modes[] = {"w4a4-g99999999999999999999", "atom-g128-o-1", "w4a4-g0x10", "w4a4-g128junk",
                           "atom-g18446744073709551744-o8",
                           "w4a4-g1282222222222222222222222222222222222222222222222222222222222222"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        char a[256];
        snprintf(a, sizeof a, "--mode %s --random 2,3,16 --out out.h5", modes[i]);
        expect_error(a, "unknown quantization mode", "atom-gN-oO");
    }
}

/* The other commands' numeric options (the option is validated before any device is looked for, so
 * these run in CPU-only builds too; the message must name the option). */
static void expect_cmd_error(const char *args, const char *must) {
    cr_assert_eq(apex4(args), 2, "%s -> %s", args, out);
    cr_assert(strstr(out, must), "'%s' not in: %s", must, out);
}

Test(gemm_cli, bench_ref_check_bench_gemm_numbers_out_of_range) {
    expect_cmd_error("bench ref --m 0", "--m");
    expect_cmd_error("bench ref --n 1e20", "--n");
    expect_cmd_error("bench ref --k -5", "--k");
    expect_cmd_error("bench ref --k 99999999999999999999", "--k");
    expect_cmd_error("bench ref --threads 0x10", "--threads");
    expect_cmd_error("bench ref --k-splits 65537", "--k-splits");
    expect_cmd_error("bench ref --reps 0", "--reps");
    expect_cmd_error("bench ref --m 16777216 --n 16777216 --k 1", "--m x --n");   /* 2^48 elements of Y */
    expect_cmd_error("bench ref --mode w4a4-g0x10", "unknown quantization mode");
    expect_cmd_error("check --device cuda --threads 0", "--threads");
    expect_cmd_error("check --device cuda --threads 1e3", "--threads");
    expect_cmd_error("check --device cuda --seed -1", "--seed");
    expect_cmd_error("check --device cuda --seed 4294967296", "--seed");        /* 2^32: seed is 32-bit */
    expect_cmd_error("check --device cuda --modes atom-g128-o-1", "unknown quantization mode");
    expect_cmd_error("bench gemm --runs 19", "--runs");
    expect_cmd_error("bench gemm --runs 1e3", "--runs");
    expect_cmd_error("bench gemm --warmup 0", "--warmup");
    expect_cmd_error("bench gemm --m 0", "--m");
    expect_cmd_error("bench gemm --m 1,2,x", "--m");
    expect_cmd_error("bench gemm --m 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17", "--m");
    expect_cmd_error("bench gemm --paths int8,int4,int8", "--paths");          /* used to overrun paths[2] */
    expect_cmd_error("bench gemm --modes w4a4-g99999999999999999999", "unknown quantization mode");
}

/* Mutated case files (tests/fuzz-corpus/h5case): bytes flipped in the first KiB of a case written by
 * `apex4 gemm --mode w4a4-g32 --random 4,6,64 --seed 1 --out case.h5`. Before the pre-check in
 * quant/aq_case.c each made the ASan+UBSan build abort inside libhdf5 (no apex4 frame): the local
 * heap's data size (byte 0x2b5) -> a 4 TiB malloc in H5HL_protect under H5Lexists; the root group's
 * continuation length (0x87) -> a 1 EiB malloc in H5C_protect under H5Fopen; its continuation address
 * (0x7b) and its header size (0x6b) -> leaked metadata cache entries after a failed H5Fopen; X's
 * header size (0x32b) -> the same leak after a failed H5Dopen2. Now each is an input error: exit 2 and
 * a message naming the file, for --in and for --compare alike. */
static const char *const corpus[] = {"heap-size-0x2b5.h5", "root-cont-len-0x87.h5", "root-cont-addr-0x7b.h5",
                                     "root-hdr-size-0x6b.h5", "x-header-size-0x32b.h5"};

static void corpus_path(const char *name, char *buf, size_t len) {
    char cwd[1024];
    cr_assert_not_null(getcwd(cwd, sizeof cwd));
    snprintf(buf, len, "%s/tests/fuzz-corpus/h5case/%s", cwd, name);
    FILE *f = fopen(buf, "rb");
    cr_assert_not_null(f, "%s is missing (run the tests from the repository root, as `make test` does)", buf);
    fclose(f);
}

Test(gemm_cli, corrupt_case_files_are_input_errors) {
    cr_assert_eq(gemm("--mode w4a4-g32 --random 4,6,64 --seed 1 --out good.h5"), 0, "%s", out);
    for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
        char p[1400], a[1600];
        corpus_path(corpus[i], p, sizeof p);
        snprintf(a, sizeof a, "--mode w4a4-g32 --in '%s' --out out.h5", p);
        expect_error(a, corpus[i], "corrupt");
        snprintf(a, sizeof a, "--mode w4a4-g32 --in good.h5 --compare '%s' --out out.h5", p);
        expect_error(a, corpus[i], "corrupt");
    }
    const char *keep[] = {"good.h5"};
    only_files(keep, 1);
}

Test(gemm_cli, empty_and_non_regular_inputs) {
    char p[256];
    snprintf(p, sizeof p, "%s/empty.h5", dir);
    FILE *f = fopen(p, "wb");
    cr_assert_not_null(f);
    fclose(f);
    expect_error("--mode w4a4-g32 --in empty.h5 --out out.h5", "empty.h5", "empty");
    snprintf(p, sizeof p, "%s/adir.h5", dir);
    cr_assert_eq(mkdir(p, 0700), 0);
    expect_error("--mode w4a4-g32 --in adir.h5 --out out.h5", "adir.h5", "not a regular file");
    expect_error("--mode w4a4-g32 --random 2,3,32 --compare adir.h5 --out out.h5", "adir.h5", "not a regular file");
}

/* --compare: a file whose dataset cannot be read is bad input (exit 2, naming file and dataset), not
 * "bytes differ" (exit 1); a readable dataset of another dtype still counts as a difference. */
Test(gemm_cli, compare_with_unreadable_dataset_exits_2) {
    cr_assert_eq(gemm("--mode w4a4-g8 --random 2,3,16 --seed 4 --out a.h5"), 0, "%s", out);
    uint16_t x[2 * 16], w[3 * 16], y[2 * 3];
    hsize_t d[2];
    hid_t t = f16_type();
    get("a.h5", "X", t, x, sizeof x, d);
    get("a.h5", "W", t, w, sizeof w, d);
    get("a.h5", "Y", t, y, sizeof y, d);
    /* Y declared [2^30, 2^30] fp16 (2 EiB) with no data written: its metadata promise more bytes
     * than the file holds (the old code tried a 2 EiB malloc, failed, and reported "dtype differs") */
    hid_t f = create("huge.h5");
    put(f, "X", t, 2, 2, 16, x);
    put(f, "W", t, 2, 3, 16, w);
    hsize_t big[2] = {(hsize_t)1 << 30, (hsize_t)1 << 30};
    hid_t sp = H5Screate_simple(2, big, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_LATE);
    hid_t ds = H5Dcreate2(f, "Y", t, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    cr_assert(ds >= 0);
    H5Dclose(ds); H5Pclose(dcpl); H5Sclose(sp);
    H5Fclose(f);
    expect_error("--mode w4a4-g8 --in a.h5 --compare huge.h5 --out out.h5", "huge.h5", "'Y'");
    /* the same Y as int32: readable, another dtype -> a difference (exit 1), as documented */
    int32_t yi[2 * 3] = {0};
    f = create("i32.h5");
    put(f, "Y", H5T_NATIVE_INT32, 2, 2, 3, yi);
    H5Fclose(f);
    cr_assert_eq(gemm("--mode w4a4-g8 --in a.h5 --compare i32.h5"), 1, "%s", out);
    cr_assert(strstr(out, "dtype or rank differs"), "%s", out);
    /* a truncated compare file: exit 2 naming it */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "head -c 3000 '%s/a.h5' > '%s/trunc.h5'", dir, dir);
    cr_assert_eq(system(cmd), 0);
    expect_error("--mode w4a4-g8 --in a.h5 --compare trunc.h5 --out out.h5", "trunc.h5", NULL);
    H5Tclose(t);
    (void)y;
}

/* ax_parse_size (--gpu-mem-limit): units by hand (1 GiB = 2^30, 1 GB = 10^9 bytes), bounds inclusive,
 * fractional values rounded down, junk and NaN refused with the option named. */
Test(gemm_cli, byte_sizes_with_units) {
    char err[AX_ERR_LEN];
    size_t v = 0;
    cr_assert_eq(ax_parse_size("8GiB", "--gpu-mem-limit", 1, 1e18, &v, err), 0, "%s", err);
    cr_assert_eq(v, (size_t)8 << 30);
    cr_assert_eq(ax_parse_size("1.5GiB", "--gpu-mem-limit", 1, 1e18, &v, err), 0, "%s", err);
    cr_assert_eq(v, (size_t)3 << 29);
    cr_assert_eq(ax_parse_size("8GB", "--gpu-mem-limit", 1, 1e18, &v, err), 0, "%s", err);
    cr_assert_eq(v, (size_t)8000000000ull);
    cr_assert_eq(ax_parse_size("4096", "x", 4096, 4096, &v, err), 0, "%s", err);
    cr_assert_eq(v, 4096);
    cr_assert_eq(ax_parse_size("1023B", "x", 1, 1e18, &v, err), 0, "%s", err);
    cr_assert_eq(v, 1023);
    const char *bad[] = {"", "GiB", "8 GiB", "8gib", "-1GiB", "+8GiB", "nan", "inf", "8GiBx", "0x10"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        cr_assert_neq(ax_parse_size(bad[i], "--gpu-mem-limit", 1, 1e18, &v, err), 0, "'%s' accepted", bad[i]);
        cr_assert(strstr(err, "--gpu-mem-limit"), "'%s': %s", bad[i], err);
    }
    cr_assert_neq(ax_parse_size("63MiB", "--gpu-mem-limit", 67108864.0, 1e18, &v, err), 0);
    cr_assert(strstr(err, "outside"), "%s", err);
    expect_cmd_error("eval ppl --model x --gpu-mem-limit 3Gx", "--gpu-mem-limit");
    expect_cmd_error("eval ppl --model x --gpu-mem-limit 1MiB", "--gpu-mem-limit");
}
