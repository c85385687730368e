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

int ak_bench_rmsnorm_quant(ak_bench *b, const aq_mode *mode, int M, int K, int residual, int warmup, int runs,
                           double *ms_median, double *bytes, char *err) {
    (void)b; (void)mode; (void)M; (void)K; (void)residual; (void)warmup; (void)runs; (void)ms_median; (void)bytes;
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

/* ---- device-resident API: no device in a CPU-only build ------------------------------------------- */
int ak_ctx_new(int device, ak_ctx **out, char *err) {
    (void)device;
    if (out) *out = NULL;
    return nocuda(err);
}
void ak_ctx_free(ak_ctx *c) { (void)c; }
int ak_ctx_sync(ak_ctx *c, char *err) { (void)c; return nocuda(err); }
int ak_ctx_check(ak_ctx *c, char *err) { (void)c; return nocuda(err); }
void ak_ctx_set_sync_checks(ak_ctx *c, int on) { (void)c; (void)on; }
const ak_ctx_facts *ak_ctx_info(const ak_ctx *c) { (void)c; return NULL; }
void *ak_ctx_stream(const ak_ctx *c) { (void)c; return NULL; }
int ak_ctx_set_stream(ak_ctx *c, void *stream) { (void)c; (void)stream; return -1; }

int ak_dmalloc(ak_ctx *c, size_t bytes, void **out, const char *what, char *err) {
    (void)c; (void)bytes; (void)what;
    if (out) *out = NULL;
    return nocuda(err);
}
void ak_dfree(ak_ctx *c, void *p) { (void)c; (void)p; }
int ak_upload(ak_ctx *c, void *dst, const void *src, size_t bytes, const char *what, char *err) {
    (void)c; (void)dst; (void)src; (void)bytes; (void)what;
    return nocuda(err);
}
int ak_download(ak_ctx *c, void *dst, const void *src, size_t bytes, const char *what, char *err) {
    (void)c; (void)dst; (void)src; (void)bytes; (void)what;
    return nocuda(err);
}
int ak_dmemset(ak_ctx *c, void *dst, int value, size_t bytes, const char *what, char *err) {
    (void)c; (void)dst; (void)value; (void)bytes; (void)what;
    return nocuda(err);
}

int ak_dqt_alloc(ak_ctx *c, const aq_mode *m, int is_weight, int cap, int K, ak_dqt *out, const char *what,
                 char *err) {
    (void)c; (void)m; (void)is_weight; (void)cap; (void)K; (void)what;
    if (out) memset(out, 0, sizeof *out);
    return nocuda(err);
}
void ak_dqt_free(ak_ctx *c, ak_dqt *t) {
    (void)c;
    if (t) memset(t, 0, sizeof *t);
}
int ak_dqt_upload(ak_ctx *c, const aq_qtensor *src, ak_dqt *out, const char *what, char *err) {
    (void)c; (void)src; (void)what;
    if (out) memset(out, 0, sizeof *out);
    return nocuda(err);
}
int ak_dqt_download(ak_ctx *c, const ak_dqt *src, aq_qtensor *out, char *err) {
    (void)c; (void)src;
    if (out) memset(out, 0, sizeof *out);
    return nocuda(err);
}

int ak_quantize_w_dev(ak_ctx *c, const aq_mode *m, const uint16_t *w, int N, int K, const int32_t *perm, ak_dqt *out,
                      const char *what, char *err) {
    (void)c; (void)m; (void)w; (void)N; (void)K; (void)perm; (void)out; (void)what;
    return nocuda(err);
}
int ak_quantize_x_dev(ak_ctx *c, const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm, ak_dqt *out,
                      const char *what, char *err) {
    (void)c; (void)m; (void)x; (void)M; (void)K; (void)perm; (void)out; (void)what;
    return nocuda(err);
}
int ak_rmsnorm_quantize_x_dev(ak_ctx *c, const aq_mode *m, uint16_t *x, const uint16_t *r, const uint16_t *w, int M,
                              int K, float eps, const int32_t *perm, ak_dqt *out, const char *what, char *err) {
    (void)c; (void)m; (void)x; (void)r; (void)w; (void)M; (void)K; (void)eps; (void)perm; (void)out; (void)what;
    return nocuda(err);
}
int ak_gemm_dev(ak_ctx *c, const ak_dqt *qx, const ak_dqt *qw, uint16_t *y, char *err) {
    (void)c; (void)qx; (void)qw; (void)y;
    return nocuda(err);
}
int ak_gemm_dev_ex(ak_ctx *c, const ak_dqt *qx, const ak_dqt *qw, ak_path path, int k_splits, uint16_t *y, char *err) {
    (void)c; (void)qx; (void)qw; (void)path; (void)k_splits; (void)y;
    return nocuda(err);
}
int ak_gemm_plan(const aq_mode *m, int M, int N, int K, int sms, int k_splits, ak_plan *out) {
    (void)m; (void)M; (void)N; (void)K; (void)sms; (void)k_splits;
    if (out) memset(out, 0, sizeof *out);
    return -1;
}
int ak_gemm_plan_ex(const aq_mode *m, int M, int N, int K, int sms, int cc, int path, int k_splits, ak_plan *out) {
    (void)m; (void)M; (void)N; (void)K; (void)sms; (void)cc; (void)path; (void)k_splits;
    if (out) memset(out, 0, sizeof *out);
    return -1;
}
int ak_dequantize_w_dev(ak_ctx *c, const ak_dqt *t, uint16_t *out, const char *what, char *err) {
    (void)c; (void)t; (void)out; (void)what;
    return nocuda(err);
}
int ak_fakequant_x_dev(ak_ctx *c, const aq_mode *m, const uint16_t *x, int M, int K, const int32_t *perm,
                       uint16_t *out, const char *what, char *err) {
    (void)c; (void)m; (void)x; (void)M; (void)K; (void)perm; (void)out; (void)what;
    return nocuda(err);
}
int ak_fakequant_w_dev(ak_ctx *c, const aq_mode *m, const uint16_t *w, int N, int K, const int32_t *perm,
                       uint16_t *out, const char *what, char *err) {
    (void)c; (void)m; (void)w; (void)N; (void)K; (void)perm; (void)out; (void)what;
    return nocuda(err);
}
