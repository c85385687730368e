/* engine_cuda.c — the cuda backend of eval/engine.h (placeholder until the device API lands). */
#include "engine_internal.h"
#include "ax_util.h"

static int cu_build(ae_engine *e, const ae_calib *calib, char *err) {
    (void)e; (void)calib;
    ax_seterr(err, "cuda backend: not available in this build");
    return -1;
}
static void cu_destroy(ae_engine *e) { (void)e; }
static int cu_forward(ae_engine *e, const int *tokens, int T, int pos, int logits_from, float *logits, char *err) {
    (void)e; (void)tokens; (void)T; (void)pos; (void)logits_from; (void)logits;
    ax_seterr(err, "cuda backend: not available");
    return -1;
}
static void cu_truncate(ae_engine *e, int pos) { (void)e; (void)pos; }
static int cu_rs_alloc(ae_engine *e, ae_refstore *rs, char *err) { (void)e; (void)rs; ax_seterr(err, "cuda backend: not available"); return -1; }
static void cu_rs_release(ae_refstore *rs) { (void)rs; }
static int cu_score(ae_engine *e, const int *tokens, int T, ae_refstore *rs, long window, int store, double *nll,
                    double *kld, int *same, char *err) {
    (void)e; (void)tokens; (void)T; (void)rs; (void)window; (void)store; (void)nll; (void)kld; (void)same;
    ax_seterr(err, "cuda backend: not available");
    return -1;
}
static void cu_describe(const ae_engine *e, char *buf, size_t len) { (void)e; snprintf(buf, len, "cuda"); }

const ae_backend ae_backend_cuda = {"cuda", cu_build, cu_destroy, cu_forward, cu_truncate, cu_rs_alloc,
                                    cu_rs_release, cu_score, cu_describe, NULL};
