/* ak_ops_nocuda.c — kernels/ak_ops.h in a build without CUDA (make CUDA=0): no device, every call
 * fails with "built without CUDA" naming the op; ak_ops_free / ak_ops_dfree do nothing. */
#include "ak_ops.h"

#include <stdio.h>

static int nocuda(const char *op, char *err) {
    if (err) snprintf(err, AX_ERR_LEN, "%s: no CUDA device: apex4 was built without CUDA (make CUDA=0)", op);
    return -1;
}

int ak_ops_new(int device, ak_ops **out, char *err) {
    (void)device;
    if (out) *out = NULL;
    return nocuda("ak_ops_new", err);
}
void ak_ops_free(ak_ops *o) { (void)o; }
void *ak_ops_stream(const ak_ops *o) { (void)o; return NULL; }
void *ak_ops_cublas(const ak_ops *o) { (void)o; return NULL; }
int ak_ops_sync(ak_ops *o, char *err) { (void)o; return nocuda("ak_ops_sync", err); }

int ak_ops_alloc(ak_ops *o, size_t bytes, void **dptr, const char *what, char *err) {
    (void)o; (void)bytes; (void)what;
    if (dptr) *dptr = NULL;
    return nocuda("ak_ops_alloc", err);
}
void ak_ops_dfree(ak_ops *o, void *dptr) { (void)o; (void)dptr; }
int ak_ops_upload(ak_ops *o, void *dst, const void *src_host, size_t bytes, char *err) {
    (void)o; (void)dst; (void)src_host; (void)bytes;
    return nocuda("ak_ops_upload", err);
}
int ak_ops_download(ak_ops *o, void *dst_host, const void *src, size_t bytes, char *err) {
    (void)o; (void)dst_host; (void)src; (void)bytes;
    return nocuda("ak_ops_download", err);
}
int ak_ops_zero(ak_ops *o, void *dptr, size_t bytes, char *err) {
    (void)o; (void)dptr; (void)bytes;
    return nocuda("ak_ops_zero", err);
}
int ak_ops_host_alloc(ak_ops *o, size_t bytes, void **p, const char *what, char *err) {
    (void)o; (void)bytes; (void)what;
    if (p) *p = NULL;
    return nocuda("ak_ops_host_alloc", err);
}
void ak_ops_host_free(ak_ops *o, void *p) { (void)o; (void)p; }
int ak_ops_upload_async(ak_ops *o, void *dst, const void *src_host, size_t bytes, int slot, char *err) {
    (void)o; (void)dst; (void)src_host; (void)bytes; (void)slot;
    return nocuda("ak_ops_upload_async", err);
}
int ak_ops_slot_wait(ak_ops *o, int slot, char *err) { (void)o; (void)slot; return nocuda("ak_ops_slot_wait", err); }

int ak_ops_to_f16(ak_ops *o, ak_ops_dtype src_type, const void *src, size_t n, uint16_t *dst,
                  const char *what, char *err) {
    (void)o; (void)src_type; (void)src; (void)n; (void)dst; (void)what;
    return nocuda("ak_ops_to_f16", err);
}

int ak_ops_embed(ak_ops *o, const int32_t *tokens, int T, const uint16_t *table, int vocab, int dim,
                 uint16_t *x, char *err) {
    (void)o; (void)tokens; (void)T; (void)table; (void)vocab; (void)dim; (void)x;
    return nocuda("ak_ops_embed", err);
}

int ak_ops_rmsnorm(ak_ops *o, const uint16_t *x, const uint16_t *w, int T, int dim, float eps,
                   uint16_t *out, char *err) {
    (void)o; (void)x; (void)w; (void)T; (void)dim; (void)eps; (void)out;
    return nocuda("ak_ops_rmsnorm", err);
}
int ak_ops_add_rmsnorm(ak_ops *o, uint16_t *x, const uint16_t *r, const uint16_t *w, int T, int dim,
                       float eps, uint16_t *out, char *err) {
    (void)o; (void)x; (void)r; (void)w; (void)T; (void)dim; (void)eps; (void)out;
    return nocuda("ak_ops_add_rmsnorm", err);
}

int ak_ops_rope_init(ak_ops *o, const ak_ops_rope_cfg *cfg, int max_pos, char *err) {
    (void)o; (void)cfg; (void)max_pos;
    return nocuda("ak_ops_rope_init", err);
}
int ak_ops_rope(ak_ops *o, uint16_t *q, int q_ld, int n_heads, uint16_t *k, int k_ld, int n_kv, int T,
                int pos0, char *err) {
    (void)o; (void)q; (void)q_ld; (void)n_heads; (void)k; (void)k_ld; (void)n_kv; (void)T; (void)pos0;
    return nocuda("ak_ops_rope", err);
}
int ak_ops_rope_packed(ak_ops *o, uint16_t *q, int q_ld, int n_heads, uint16_t *k, int k_ld, int n_kv, int T,
                       const int32_t *seg, char *err) {
    (void)o; (void)q; (void)q_ld; (void)n_heads; (void)k; (void)k_ld; (void)n_kv; (void)T; (void)seg;
    return nocuda("ak_ops_rope_packed", err);
}

int ak_ops_kv_store(ak_ops *o, const uint16_t *k, const uint16_t *v, int ld, int T, int pos0, int n_kv,
                    int head_dim, int kv4, uint16_t *k_cache, uint16_t *v_cache, int max_seq, char *err) {
    (void)o; (void)k; (void)v; (void)ld; (void)T; (void)pos0; (void)n_kv; (void)head_dim; (void)kv4;
    (void)k_cache; (void)v_cache; (void)max_seq;
    return nocuda("ak_ops_kv_store", err);
}
int ak_ops_kv4_fakequant(ak_ops *o, uint16_t *x, int rows, int n, char *err) {
    (void)o; (void)x; (void)rows; (void)n;
    return nocuda("ak_ops_kv4_fakequant", err);
}

int ak_ops_attention(ak_ops *o, ak_attn_impl impl, const uint16_t *q, int q_ld, const uint16_t *k_cache,
                     const uint16_t *v_cache, int max_seq, int T, int pos0, int n_heads, int n_kv,
                     int head_dim, uint16_t *out, char *err) {
    (void)o; (void)impl; (void)q; (void)q_ld; (void)k_cache; (void)v_cache; (void)max_seq; (void)T;
    (void)pos0; (void)n_heads; (void)n_kv; (void)head_dim; (void)out;
    return nocuda("ak_ops_attention", err);
}
int ak_ops_attention_packed(ak_ops *o, ak_attn_impl impl, const uint16_t *q, int q_ld, const uint16_t *k_cache,
                            const uint16_t *v_cache, int max_seq, int T, const int32_t *seg, int n_heads, int n_kv,
                            int head_dim, uint16_t *out, char *err) {
    (void)o; (void)impl; (void)q; (void)q_ld; (void)k_cache; (void)v_cache; (void)max_seq; (void)T;
    (void)seg; (void)n_heads; (void)n_kv; (void)head_dim; (void)out;
    return nocuda("ak_ops_attention_packed", err);
}
int ak_ops_gather_rows(ak_ops *o, const uint16_t *src, int ld, const int32_t *rows, int n, int width,
                       uint16_t *dst, char *err) {
    (void)o; (void)src; (void)ld; (void)rows; (void)n; (void)width; (void)dst;
    return nocuda("ak_ops_gather_rows", err);
}
int ak_ops_attention_tc_ok(int head_dim, int q_ld, const void *q, const void *k_cache,
                           const void *v_cache, const void *out) {
    (void)head_dim; (void)q_ld; (void)q; (void)k_cache; (void)v_cache; (void)out;
    return 0;
}
int ak_ops_bench_attention(ak_ops *o, ak_attn_impl impl, int T, int n_heads, int n_kv, int head_dim,
                           int warmup, int runs, double *ms_median, char *err) {
    (void)o; (void)impl; (void)T; (void)n_heads; (void)n_kv; (void)head_dim; (void)warmup; (void)runs;
    if (ms_median) *ms_median = 0;
    return nocuda("ak_ops_bench_attention", err);
}

int ak_ops_swiglu(ak_ops *o, const uint16_t *gate, const uint16_t *up, int ld_in, int T, int hidden,
                  uint16_t *out, char *err) {
    (void)o; (void)gate; (void)up; (void)ld_in; (void)T; (void)hidden; (void)out;
    return nocuda("ak_ops_swiglu", err);
}
int ak_ops_add(ak_ops *o, uint16_t *x, const uint16_t *y, size_t n, char *err) {
    (void)o; (void)x; (void)y; (void)n;
    return nocuda("ak_ops_add", err);
}

int ak_ops_linear(ak_ops *o, const uint16_t *x, int T, int K, const uint16_t *w, int N, uint16_t *y,
                  char *err) {
    (void)o; (void)x; (void)T; (void)K; (void)w; (void)N; (void)y;
    return nocuda("ak_ops_linear", err);
}
int ak_ops_linear_f32(ak_ops *o, const uint16_t *x, int T, int K, const uint16_t *w, int N, float *y,
                      char *err) {
    (void)o; (void)x; (void)T; (void)K; (void)w; (void)N; (void)y;
    return nocuda("ak_ops_linear_f32", err);
}

int ak_ops_score(ak_ops *o, const float *logits, long ld, int T, int V, const int32_t *targets,
                 const float *ref, long ref_ld, ak_ops_ref_kind ref_kind, double *nll, int32_t *argmax,
                 double *kld, int32_t *same, char *err) {
    (void)o; (void)logits; (void)ld; (void)T; (void)V; (void)targets; (void)ref; (void)ref_ld;
    (void)ref_kind; (void)nll; (void)argmax; (void)kld; (void)same;
    return nocuda("ak_ops_score", err);
}
int ak_ops_logprobs(ak_ops *o, const float *logits, long ld, int T, int V, float *logp, long logp_ld,
                    int32_t *argmax, char *err) {
    (void)o; (void)logits; (void)ld; (void)T; (void)V; (void)logp; (void)logp_ld; (void)argmax;
    return nocuda("ak_ops_logprobs", err);
}

int ak_ops_gen_normal_f16(ak_ops *o, uint64_t tensor_seed, double std, size_t first, size_t n, uint16_t *dst,
                          char *err) {
    (void)o; (void)tensor_seed; (void)std; (void)first; (void)n; (void)dst;
    return nocuda("ak_ops_gen_normal_f16", err);
}
int ak_ops_fill_f16(ak_ops *o, uint16_t value, size_t n, uint16_t *dst, char *err) {
    (void)o; (void)value; (void)n; (void)dst;
    return nocuda("ak_ops_fill_f16", err);
}
int ak_ops_attention_prefill(ak_ops *o, ak_attn_impl impl, const uint16_t *q, int q_ld, const uint16_t *k,
                             const uint16_t *v, int kv_ld, int T, const int32_t *seg, int n_heads, int n_kv,
                             int head_dim, uint16_t *out, char *err) {
    (void)o; (void)impl; (void)q; (void)q_ld; (void)k; (void)v; (void)kv_ld; (void)T; (void)seg; (void)n_heads;
    (void)n_kv; (void)head_dim; (void)out;
    return nocuda("ak_ops_attention_prefill", err);
}
