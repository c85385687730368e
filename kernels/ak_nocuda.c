/* ak_nocuda.c — the kernel API in a build without CUDA (make CUDA=0): no device, every call fails
 * with a clear message. */
#include "ak.h"
#include <stdio.h>
#include <string.h>
#include "ak_inputs.h"

int ak_device_count(void) { return 0; }

void ak_device_describe(char *buf, size_t len) {
    snprintf(buf, len, "no CUDA device: apex4 was built without CUDA (make CUDA=0)");
}

static int nocuda(char *err) {
    if (err) snprintf(err, AX_ERR_LEN, "no CUDA device: apex4 was built without CUDA (make CUDA=0)");
    return -1;
}

int ak_quantize_x(const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                  aq_qtensor *out, char *err) {
    (void)m; (void)x; (void)M; (void)K; (void)perm; (void)out;
    return nocuda(err);
}

int ak_gemm(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, uint16_t *y, char *err) {
    (void)qx; (void)qw; (void)path; (void)y;
    return nocuda(err);
}

int ak_supports(const aq_mode *m, int K, char *err) {
    (void)m; (void)K;
    return nocuda(err);
}

int ak_device_info(ak_devinfo *d, char *err) {
    memset(d, 0, sizeof *d);
    return nocuda(err);
}

int ak_bench_new(ak_bench **out, char *err) {
    *out = NULL;
    return nocuda(err);
}

void ak_bench_free(ak_bench *b) { (void)b; }

int ak_bench_gemm(ak_bench *b, ak_impl impl, const aq_mode *mode, ak_path path, int M, int N, int K,
                  int warmup, int runs, double *ms_median, double *ms_min, double *ms_max, char *err) {
    (void)b; (void)impl; (void)mode; (void)path; (void)M; (void)N; (void)K; (void)warmup; (void)runs;
    (void)ms_median; (void)ms_min; (void)ms_max;
    return nocuda(err);
}

int ak_bench_quant(ak_bench *b, const aq_mode *mode, int M, int K, int warmup, int runs,
                   double *ms_median, double *bytes, char *err) {
    (void)b; (void)mode; (void)M; (void)K; (void)warmup; (void)runs; (void)ms_median; (void)bytes;
    return nocuda(err);
}

int ak_bench_copy(ak_bench *b, size_t bytes, int runs, double *gbs, char *err) {
    (void)b; (void)bytes; (void)runs; (void)gbs;
    return nocuda(err);
}

const char *ak_input_name(ak_input k) { return (int)k >= 0 && (int)k < 3 ? akin_names[k] : "?"; }

int ak_input_parse(const char *s) {
    for (int i = 0; i < 3; i++)
        if (s && !strcmp(s, akin_names[i])) return i;
    return -1;
}

void ak_fill_input(ak_input k, unsigned seed, int rows, int K, uint16_t *x) { akin_fill(k, seed, rows, K, x); }

int ak_check_case(const aq_mode *m, int M, int N, int K, ak_input input, unsigned seed, int paths_mask,
                  int ref_threads, ak_check_result *r, char *err) {
    (void)m; (void)M; (void)N; (void)K; (void)input; (void)seed; (void)paths_mask; (void)ref_threads;
    memset(r, 0, sizeof *r);
    return nocuda(err);
}

int ak_gemm_ex(const aq_qtensor *qx, const aq_qtensor *qw, ak_path path, int k_splits, uint16_t *y,
               char *err) {
    (void)qx; (void)qw; (void)path; (void)k_splits; (void)y;
    return nocuda(err);
}

int ak_gemm_splits(const aq_mode *m, int M, int N, int K) {
    (void)m; (void)M; (void)N; (void)K;
    return 1;
}

int ak_selftest_rounding(long long *pairs, long long *mismatches, char *err) {
    *pairs = 0;
    *mismatches = 0;
    return nocuda(err);
}
