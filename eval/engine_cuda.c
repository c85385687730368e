/* engine_cuda.c — the cuda backend of eval/engine.h.
 *
 * Per layer, as Hugging Face LlamaDecoderLayer in fp16 (modeling_llama.py, eager), activations fp16
 * on the device between ops (kernels/ak_ops.h), the same straight line as eval/forward.c:
 *   xb = rmsnorm(x, attn_norm)                 (x += previous residual fused: ak_ops_add_rmsnorm; on the
 *                                              exact integer route fused with the quantization of xb
 *                                              instead: ak_rmsnorm_quantize_x_dev, xb not written)
 *   q|k|v = linear(site ATTN_IN, xb)           one activation quantization, one GEMM on the stacked
 *                                              q|k|v weights (rows), q, k, v strided views
 *   rope(q, k); cache k, v (kv4: fake-quantized per (token, head))
 *   att = causal GQA flash attention (packed zero-shot requests: block-diagonal causal mask)
 *   o = linear(site ATTN_OUT, att);  xb = rmsnorm(x += o, ffn_norm)
 *   g|u = linear(site MLP_IN, xb) (stacked);  h = silu(g) * u;  d = linear(site MLP_OUT, h)
 * then logits fp32 = rmsnorm(x += d, final_norm) · lm_headᵀ by cuBLAS.
 * A linear by mode row (quant/aq.h aq_mode, engine.h):
 *   fp16, or exact/fake of FP16        cuBLAS fp16 (fp32 accumulate)
 *   integer mode, gemm exact           ak_quantize_x_dev + ak_gemm_dev on weights quantized on the
 *                                      device by ak_quantize_w_dev (bit-exact with quant/)
 *   integer mode, gemm fake            ak_fakequant_x_dev + cuBLAS on ak_fakequant_w_dev weights
 *   w4a16 (WONLY)                      cuBLAS on ak_fakequant_w_dev weights
 * Checkpoint weights are read per tensor as fp16 from the model (ae_model_read_f16: F16 copied,
 * F32/BF16 rounded to nearest even; NaN/inf or fp16 overflow are errors naming the file, tensor and
 * index) into a host staging buffer (pinned when cudaHostAlloc allows it; two halves: upload_tensor
 * reads the next row chunk while the previous one is copied), in row chunks, and uploaded; no fp32
 * copy is made.
 * The engine ends its build with one warm-up forward (one-time CUDA costs out of the timed windows).
 * APEX4_PROFILE=1 in the environment: per-op host-timed breakdown (each op synchronised) on stderr.
 * APEX4_GEMM_PATH=auto|int8|int4|wgmma|wgmma-sync: the integer GEMM kernel path of the exact route (as
 * `apex4 check --paths`; default auto = the planner's). Every path is bit-exact with the reference
 * (what `apex4 check` verifies), so only the speed depends on it; a path that cannot serve a
 * projection (a wgmma path for a mode with outliers, fewer than AK_WGMMA_MIN_M rows, another GPU)
 * leaves that one to the planner.
 * APEX4_HIDDEN_WINDOWS=k (testing): layer-major passes keep the hidden states in host memory and k
 * windows at a time on the device (hid_alloc), as when they do not fit the memory limit. */
#include "engine_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ak.h"
#include "ak_calib.h"
#include "ak_ops.h"
#include "ax_util.h"

#define SETERR(...) ax_seterr(err, __VA_ARGS__)

/* The seven projections (ae_engine_probe_linear's numbering) and the four GEMMs that run them:
 * q|k|v and gate|up share their input, so their weights are stacked by rows into one GEMM each
 * (every output element depends only on its own weight row: the integer kernels give the same bytes
 * as separate GEMMs; cuBLAS may pick another tile and reduce in another order). */
enum { L_Q, L_K, L_V, L_O, L_GATE, L_UP, L_DOWN, L_N };
enum { F_QKV, F_O, F_GU, F_DOWN, F_N };
static const int proj_fused[L_N] = {F_QKV, F_QKV, F_QKV, F_O, F_GU, F_GU, F_DOWN};
static const int fused_site[F_N] = {AE_SITE_ATTN_IN, AE_SITE_ATTN_OUT, AE_SITE_MLP_IN, AE_SITE_MLP_OUT};
static const char *const fused_name[F_N] = {"self_attn.q_proj|k_proj|v_proj", "self_attn.o_proj",
                                            "mlp.gate_proj|up_proj", "mlp.down_proj"};

typedef struct {
    int       N, K;
    uint16_t *w16;      /* device fp16 [N, K]: fp16 / fake / weight-only routes                    */
    ak_dqt    qw;       /* device quantized W: integer exact route                                 */
    int       quant;    /* 1: qw is used                                                           */
} cu_lin;

typedef struct {
    uint16_t *attn_norm, *ffn_norm;   /* device fp16 [dim]                                         */
    cu_lin    lin[F_N];               /* q|k|v, o, gate|up, down                                   */
    int32_t  *perm[AE_NSITES];        /* ATOM: device int32 [site width]                            */
    uint16_t *kc, *vc;                /* KV cache [max_seq, n_kv, head_dim] fp16                    */
} cu_layer;

typedef struct {
    ak_ops   *ops;
    ak_ctx   *ctx;
    int       route;                  /* 0 fp16/cuBLAS, 1 integer exact, 2 fake-quant + cuBLAS      */
    int       dim, hid, q_dim, kv_dim, hd, nh, nkv, V, max_seq;
    uint16_t *emb, *final_norm, *lm_head;
    cu_layer *L;
    /* activations [max_seq rows] */
    uint16_t *x, *xb, *qkv, *att, *t1, *hb, *hb2, *xq; /* qkv [T, q|k|v], hb [T, gate|up], hb2 [T, hidden] */
    ak_dqt    qx_dim, qx_q, qx_hid;   /* quantized activations of widths dim, q_dim, hidden         */
    float    *logits;                 /* [max_seq, V] fp32                                          */
    int32_t  *seg_d, *rows_d;         /* packed forwards: sequence starts, scored rows [max_seq]     */
    /* layer-major streaming (models larger than the device or --gpu-mem-limit): each layer's weights
     * are loaded (read, generated or quantized) when the layer runs and freed after it; one KV cache
     * shared by the layers; stage/wtmp kept for the loads. */
    int       streaming;
    uint16_t *stage, *wtmp;
    size_t    stage_n;
    int       stage_pinned;           /* stage from ak_ops_host_alloc (else malloc: copies are sync)   */
    int       stage_slot;             /* upload_tensor: the staging half the next chunk is read into  */
    uint16_t *kc_shared, *vc_shared;
    size_t    layer_bytes;            /* device bytes of one loaded layer (estimate, for hid_alloc)   */
    size_t    wtmp_bytes;             /* device bytes of wtmp (allocated outside s->bytes)            */
    size_t    mem_limit;              /* --gpu-mem-limit, else 90 % of the device's memory            */
    uint16_t *xg;                     /* packed forwards: gathered final hidden rows [max_seq, dim]  */
    size_t    bytes;                  /* device bytes allocated                                     */
    /* APEX4_PROFILE=1: each op synchronised and timed on the host (a breakdown printed to stderr when
     * the engine is freed; slows the run by the synchronisations, for finding where time goes). */
    int       prof;
    int       gemm_path;   /* APEX4_GEMM_PATH (ak_path; AK_PATH_AUTO by default)                    */
    double    prof_t[16], prof_last;
    long      prof_fwd;
    /* Atom calibration (cu_calib_sumsq): while set, layer_dev adds Σx² per channel of each site's
     * input to cal_acc [n_layers][dim | q_dim | dim | hidden] float64 (device), layer stride cal_stride */
    double   *cal_acc;
    size_t    cal_stride;
} cu_state;

/* P_NORMQ: the fused RMSNorm + activation quantization of the exact integer route (norm_site_in) */
enum { P_EMBED, P_NORM, P_QUANT, P_NORMQ, P_QKV, P_ROPE, P_KV, P_ATTN, P_O, P_GATEUP, P_SWIGLU, P_DOWN, P_HEAD, P_SCORE,
       P_N };
static const char *const prof_name[P_N] = {"embed", "rmsnorm", "act-quant", "rmsnorm+act-quant", "qkv", "rope",
                                           "kv-store", "attention", "o_proj", "gate/up", "swiglu", "down_proj",
                                           "lm_head", "score"};

static void prof_mark(cu_state *s, int cat) {
    if (!s->prof) return;
    ak_ops_sync(s->ops, NULL);
    double t = ax_now();
    if (cat >= 0) s->prof_t[cat] += t - s->prof_last;
    s->prof_last = t;
}

static void prof_print(const ae_engine *e) {
    const cu_state *s = e->dev;
    if (!s->prof || !s->prof_fwd) return;
    double tot = 0;
    for (int i = 0; i < P_N; i++) tot += s->prof_t[i];
    fprintf(stderr, "profile (%s, %ld forwards, %.3f s synchronised):", e->o.mode.name, s->prof_fwd, tot);
    for (int i = 0; i < P_N; i++)
        if (s->prof_t[i] > 0) fprintf(stderr, " %s %.1f%% (%.2f ms/fwd)", prof_name[i], 100 * s->prof_t[i] / tot,
                                      1e3 * s->prof_t[i] / (double)s->prof_fwd);
    fprintf(stderr, "\n");
}

static int dalloc(ae_engine *e, cu_state *s, size_t bytes, void **p, const char *what, char *err) {
    if (ak_ops_alloc(s->ops, bytes, p, what, err)) return -1;
    s->bytes += bytes;
    if (s->bytes > e->peak_bytes) e->peak_bytes = s->bytes;
    return 0;
}

/* The host staging buffer of the weight reads (cu_build): pinned when the driver allows it, so that
 * upload_tensor's copies run asynchronously. stage_free waits for the copies still reading it. */
static void stage_free(cu_state *s) {
    if (!s->stage) return;
    if (s->stage_pinned) {
        ak_ops_sync(s->ops, NULL);
        ak_ops_host_free(s->ops, s->stage);
    } else {
        free(s->stage);
    }
    s->stage = NULL;
    s->stage_pinned = 0;
}

/* Tensor (layer, id) of the model as fp16 into dev (device fp16 [rows*cols], allocated by the
 * caller): read with ae_model_read_f16 into the host staging buffer s->stage, as many rows at a time
 * as fit one half of it, each chunk's copy enqueued asynchronously (ak_ops_upload_async) while the
 * next chunk (of this tensor or the next one) is read into the other half: double-buffered, the
 * host's reads overlap the PCIe copies. A half is written only after the copy that last read it has
 * completed (ak_ops_slot_wait); kernels that use dev run after the copy (one stream). A staging
 * buffer smaller than two rows falls back to one synchronous chunk at a time. */
static int upload_tensor(cu_state *s, const ae_model *m, int layer, ae_tensor_id id, uint16_t *dev, char *err) {
    size_t rows, cols;
    char what[96], e2[AX_ERR_LEN];
    if (ae_model_tensor_shape(m, layer, id, &rows, &cols, what, err)) return -1;
    uint64_t vseed;
    double vstd;
    float vconst;
    int virt = ae_model_virtual_params(m, layer, id, &vseed, &vstd, &vconst, err);
    if (virt < 0) return -1;
    if (virt) {   /* a seeded virtual checkpoint: generated on the device, make-model's stream */
        if (vstd > 0) return ak_ops_gen_normal_f16(s->ops, vseed, vstd, 0, rows * cols, dev, err);
        return ak_ops_fill_f16(s->ops, aq_f32_to_f16(vconst), rows * cols, dev, err);
    }
    const size_t half = s->stage_n / 2;
    if (half / cols >= 1) {
        const size_t per = half / cols;
        for (size_t r0 = 0; r0 < rows; r0 += per) {
            const size_t nr = rows - r0 < per ? rows - r0 : per;
            const int slot = s->stage_slot;
            uint16_t *buf = s->stage + (size_t)slot * half;
            if (ak_ops_slot_wait(s->ops, slot, e2)) {
                SETERR("%s: rows from %zu: an earlier staged copy or kernel failed: %s", what, r0, e2);
                return -1;
            }
            if (ae_model_read_f16(m, layer, id, r0, nr, buf, err)) return -1;
            if (ak_ops_upload_async(s->ops, dev + r0 * cols, buf, nr * cols * 2, slot, e2)) {
                SETERR("%s: rows %zu..%zu: %s", what, r0, r0 + nr - 1, e2);
                return -1;
            }
            s->stage_slot ^= 1;
        }
        return 0;
    }
    const size_t per = s->stage_n / cols;
    if (per < 1) {
        SETERR("%s: weight staging buffer (%zu values) smaller than one row (%zu values)", what, s->stage_n, cols);
        return -1;
    }
    if (ak_ops_sync(s->ops, e2)) {   /* earlier asynchronous copies may still read the buffer */
        SETERR("%s: an earlier staged copy or kernel failed: %s", what, e2);
        return -1;
    }
    for (size_t r0 = 0; r0 < rows; r0 += per) {
        size_t nr = rows - r0 < per ? rows - r0 : per;
        if (ae_model_read_f16(m, layer, id, r0, nr, s->stage, err)) return -1;
        if (ak_ops_upload(s->ops, dev + r0 * cols, s->stage, nr * cols * 2, e2)) {
            SETERR("%s: rows %zu..%zu: %s", what, r0, r0 + nr - 1, e2);
            return -1;
        }
    }
    return 0;
}

/* Allocate *dst (device fp16, named by the tensor) and upload tensor (layer, id) into it. */
static int upload_f16(ae_engine *e, cu_state *s, int layer, ae_tensor_id id, uint16_t **dst, char *err) {
    size_t rows, cols;
    char what[96];
    if (ae_model_tensor_shape(e->m, layer, id, &rows, &cols, what, err)) return -1;
    if (dalloc(e, s, rows * cols * 2, (void **)dst, what, err)) return -1;
    return upload_tensor(s, e->m, layer, id, *dst, err);
}

static const ae_tensor_id lin_tensor[L_N] = {AE_T_WQ, AE_T_WK, AE_T_WV, AE_T_WO, AE_T_GATE, AE_T_UP, AE_T_DOWN};

/* Rows [*r0, *r0 + *n) of projection p inside its fused GEMM's output; *K its input width. */
static void proj_rows(const cu_state *s, int p, int *r0, int *n, int *K) {
    switch (p) {
    case L_Q: *r0 = 0; *n = s->q_dim; *K = s->dim; break;
    case L_K: *r0 = s->q_dim; *n = s->kv_dim; *K = s->dim; break;
    case L_V: *r0 = s->q_dim + s->kv_dim; *n = s->kv_dim; *K = s->dim; break;
    case L_O: *r0 = 0; *n = s->dim; *K = s->q_dim; break;
    case L_GATE: *r0 = 0; *n = s->hid; *K = s->dim; break;
    case L_UP: *r0 = s->hid; *n = s->hid; *K = s->dim; break;
    default: *r0 = 0; *n = s->dim; *K = s->hid; break;
    }
}

static void cu_destroy(ae_engine *e) {
    cu_state *s = e->dev;
    if (!s) return;
    if (s->ops) ak_ops_sync(s->ops, NULL);
    prof_print(e);
    if (s->L) {
        for (int l = 0; l < e->m->cfg.n_layers; l++) {
            cu_layer *L = &s->L[l];
            ak_ops_dfree(s->ops, L->attn_norm);
            ak_ops_dfree(s->ops, L->ffn_norm);
            if (!s->streaming) {
                ak_ops_dfree(s->ops, L->kc);
                ak_ops_dfree(s->ops, L->vc);
            }
            for (int i = 0; i < F_N; i++) {
                ak_ops_dfree(s->ops, L->lin[i].w16);
                if (L->lin[i].quant) ak_dqt_free(s->ctx, &L->lin[i].qw);
            }
            for (int i = 0; i < AE_NSITES; i++) ak_ops_dfree(s->ops, L->perm[i]);
        }
        free(s->L);
    }
    ak_ops_dfree(s->ops, s->kc_shared);
    ak_ops_dfree(s->ops, s->vc_shared);
    ak_ops_dfree(s->ops, s->wtmp);
    stage_free(s);
    if (s->lm_head != s->emb) ak_ops_dfree(s->ops, s->lm_head);
    ak_ops_dfree(s->ops, s->emb);
    ak_ops_dfree(s->ops, s->final_norm);
    void *acts[] = {s->x, s->xb, s->qkv, s->att, s->t1, s->hb, s->hb2, s->xq, s->logits, s->seg_d, s->rows_d,
                    s->xg};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++) ak_ops_dfree(s->ops, acts[i]);
    if (s->ctx) {
        ak_dqt_free(s->ctx, &s->qx_dim);
        ak_dqt_free(s->ctx, &s->qx_q);
        ak_dqt_free(s->ctx, &s->qx_hid);
        ak_ctx_free(s->ctx);
    }
    ak_ops_free(s->ops);
    free(s);
    e->dev = NULL;
}

/* One fused GEMM's weights on the device for the engine's route: its projections' tensors stacked
 * by rows (upload_tensor into row offsets), then quantized / fake-quantized as one [N, K] matrix
 * (row-wise operations: the same bytes as each projection alone). wtmp: device fp16 scratch of the
 * largest fused matrix (the uploads go through s->stage). */
static int build_lin(ae_engine *e, cu_state *s, int l, int f, uint16_t *wtmp, char *err) {
    cu_lin *ln = &s->L[l].lin[f];
    int N = 0, K = 0;
    for (int p = 0; p < L_N; p++)
        if (proj_fused[p] == f) { int r0, n; proj_rows(s, p, &r0, &n, &K); N += n; }
    ln->N = N;
    ln->K = K;
    char what[96];
    snprintf(what, sizeof what, "model.layers.%d.%s.weight", l, fused_name[f]);
    size_t nel = (size_t)N * K;
    const aq_mode *m = &e->o.mode;
    const int32_t *perm = s->L[l].perm[fused_site[f]];
    uint16_t *dst = wtmp;
    if (s->route == 0) {   /* fp16: the checkpoint's weights */
        if (dalloc(e, s, nel * 2, (void **)&ln->w16, what, err)) return -1;
        dst = ln->w16;
    }
    for (int p = 0; p < L_N; p++) {
        if (proj_fused[p] != f) continue;
        int r0, n, k;
        proj_rows(s, p, &r0, &n, &k);
        if (upload_tensor(s, e->m, l, lin_tensor[p], dst + (size_t)r0 * K, err)) return -1;
    }
    if (s->route == 0) return 0;
    if (s->route == 1) {
        ln->quant = 1;
        if (ak_dqt_alloc(s->ctx, m, 1, N, K, &ln->qw, what, err)) { ln->quant = 0; return -1; }
        s->bytes += (size_t)N * (size_t)(K + 1) / 2 + (size_t)N * (size_t)((K + 15) / 16);  /* ~ codes + scales */
        if (s->bytes > e->peak_bytes) e->peak_bytes = s->bytes;
        return ak_quantize_w_dev(s->ctx, m, wtmp, N, K, perm, &ln->qw, what, err);
    }
    if (dalloc(e, s, nel * 2, (void **)&ln->w16, what, err)) return -1;
    return ak_fakequant_w_dev(s->ctx, m, wtmp, N, K, perm, ln->w16, what, err);
}

static int forward_dev(ae_engine *e, const int *tokens, int T, int pos, int logits_from, const int32_t *seg,
                       const int32_t *rows, int nrows, int nocache, char *err);

/* Layer l's norms and fused GEMM weights onto the device (read, generated or quantized for the route). */
static int layer_load(ae_engine *e, int l, char *err) {
    cu_state *s = e->dev;
    cu_layer *L = &s->L[l];
    if (upload_f16(e, s, l, AE_T_ATTN_NORM, &L->attn_norm, err) || upload_f16(e, s, l, AE_T_FFN_NORM, &L->ffn_norm, err))
        return -1;
    for (int i = 0; i < F_N; i++)
        if (build_lin(e, s, l, i, s->wtmp, err)) return -1;
    return 0;
}

/* Free layer l's weights (layer-major streaming), keeping the device byte count. */
static void layer_unload(ae_engine *e, int l) {
    cu_state *s = e->dev;
    cu_layer *L = &s->L[l];
    size_t b = (size_t)2 * s->dim * 2;
    ak_ops_dfree(s->ops, L->attn_norm);
    ak_ops_dfree(s->ops, L->ffn_norm);
    L->attn_norm = L->ffn_norm = NULL;
    for (int i = 0; i < F_N; i++) {
        cu_lin *ln = &L->lin[i];
        if (ln->w16) b += (size_t)ln->N * ln->K * 2;
        if (ln->quant) {
            b += (size_t)ln->N * (size_t)(ln->K + 1) / 2 + (size_t)ln->N * (size_t)((ln->K + 15) / 16);
            ak_dqt_free(s->ctx, &ln->qw);
        }
        ak_ops_dfree(s->ops, ln->w16);
        memset(ln, 0, sizeof *ln);
    }
    s->bytes = s->bytes > b ? s->bytes - b : 0;
}

static int cu_build(ae_engine *e, const ae_calib *calib, char *err) {
    const ae_config *c = &e->m->cfg;
    cu_state *s = calloc(1, sizeof *s);
    if (!s) { SETERR("cuda engine: out of memory"); return -1; }
    e->dev = s;
    const aq_mode *m = &e->o.mode;
    char e2[AX_ERR_LEN];
    if (ae_mode_check(e->m, m, e2)) { SETERR("mode %s: %s", m->name, e2); return -1; }
    s->route = aq_mode_is_fp16(m) ? 0 : (aq_mode_is_integer(m) && e->o.gemm == AE_GEMM_EXACT) ? 1 : 2;
    { const char *pe = getenv("APEX4_PROFILE"); s->prof = pe && *pe && strcmp(pe, "0"); }
    s->gemm_path = AK_PATH_AUTO;
    {
        const char *gp = getenv("APEX4_GEMM_PATH");
        if (gp && *gp && strcmp(gp, "auto")) {
            int found = 0;
            for (int p = AK_PATH_INT8; p <= AK_PATH_WGMMA_SYNC && !found; p++)
                if (!strcmp(gp, ak_path_name(p))) { s->gemm_path = p; found = 1; }
            if (!found) {
                SETERR("APEX4_GEMM_PATH '%.40s': expected auto, int8, int4, wgmma or wgmma-sync", gp);
                return -1;
            }
        }
    }
    s->dim = c->dim;
    s->hid = c->hidden_dim;
    s->hd = c->head_dim;
    s->nh = c->n_heads;
    s->nkv = c->n_kv_heads;
    s->q_dim = c->n_heads * c->head_dim;
    s->kv_dim = c->n_kv_heads * c->head_dim;
    s->V = c->vocab_size;
    s->max_seq = e->o.max_seq;
    if (s->route == 1) {
        int widths[3] = {s->dim, s->q_dim, s->hid};
        for (int i = 0; i < 3; i++)
            if (ak_supports(m, widths[i], e2)) {
                SETERR("mode %s with --gemm exact on cuda: %s (use --gemm fake or the cpu backend)", m->name, e2);
                return -1;
            }
    }
    if (ak_ops_new(e->o.gpu, &s->ops, err)) return -1;
    if (ak_ctx_new(e->o.gpu, &s->ctx, err)) return -1;
    ak_ctx_set_stream(s->ctx, ak_ops_stream(s->ops));   /* one stream: ops and kernels in order */
    ak_ctx_set_sync_checks(s->ctx, 0);                  /* findings checked once per forward     */
    ak_ops_rope_cfg rc = {c->head_dim, c->rope_theta, c->rope_llama3, c->rope_factor, c->rope_low_freq_factor,
                          c->rope_high_freq_factor, c->rope_orig_max_pos};
    if (ak_ops_rope_init(s->ops, &rc, s->max_seq, err)) return -1;
    /* wtmp: device fp16 scratch of the largest projection (weights before quantization); stage: host
     * fp16 staging of the weight reads, the largest projection or 32M values (whichever is larger) */
    size_t lin_big = (size_t)s->hid * s->dim;
    if ((size_t)s->q_dim * s->dim > lin_big) lin_big = (size_t)s->q_dim * s->dim;
    size_t stage_n = lin_big > ((size_t)1 << 25) ? lin_big : ((size_t)1 << 25);
    uint16_t *stage = NULL, *wtmp = NULL;
    int rc2 = -1;
    {   /* pinned for asynchronous double-buffered copies (upload_tensor); else pageable */
        char e2[AX_ERR_LEN];
        if (ak_ops_host_alloc(s->ops, stage_n * sizeof *stage, (void **)&stage, "weight staging buffer", e2) == 0)
            s->stage_pinned = 1;
        else
            stage = malloc(stage_n * sizeof *stage);
    }
    s->stage = stage;
    s->stage_n = stage_n;
    if (!stage) { SETERR("cuda engine: out of memory for the weight staging buffer (%zu values)", stage_n); goto out; }
    size_t fused_big = (size_t)(s->q_dim + 2 * s->kv_dim) * s->dim;   /* q|k|v; gate|up below */
    if ((size_t)2 * s->hid * s->dim > fused_big) fused_big = (size_t)2 * s->hid * s->dim;
    if (lin_big > fused_big) fused_big = lin_big;
    if (s->route && ak_ops_alloc(s->ops, fused_big * 2, (void **)&wtmp, "weight quantization scratch", err)) goto out;
    s->wtmp = wtmp;
    s->wtmp_bytes = s->route ? fused_big * 2 : 0;
    {   /* resident or layer-major streaming: the model's layers against the memory limit */
        size_t per_param = s->route == 1 ? 1 : 2;   /* int4 codes + scales ~0.6 B, rounded up */
        size_t lw = ((size_t)(s->q_dim + 2 * s->kv_dim) * s->dim + (size_t)s->dim * s->q_dim +
                     (size_t)3 * s->hid * s->dim) * per_param;
        size_t kv = (size_t)2 * s->max_seq * s->kv_dim * 2;
        size_t need = (size_t)c->n_layers * (lw + kv) + (size_t)2 * s->V * s->dim * 2 +
                      (size_t)s->max_seq * ((size_t)s->V * 4 + (size_t)(8 * s->dim + 6 * s->hid) * 2);
        size_t limit = e->o.gpu_mem_limit ? e->o.gpu_mem_limit : ak_ctx_info(s->ctx)->total_mem / 10 * 9;
        s->streaming = e->o.layer_major > 0 || (e->o.layer_major == 0 && need > limit);
        s->layer_bytes = lw;
        s->mem_limit = limit;
    }
    if (upload_f16(e, s, -1, AE_T_EMB, &s->emb, err)) goto out;
    if (c->tie_embeddings) s->lm_head = s->emb;
    else if (upload_f16(e, s, -1, AE_T_LM_HEAD, &s->lm_head, err)) goto out;
    if (upload_f16(e, s, -1, AE_T_FINAL_NORM, &s->final_norm, err)) goto out;
    s->L = calloc((size_t)c->n_layers, sizeof *s->L);
    if (!s->L) { SETERR("cuda engine: out of memory"); goto out; }
    for (int l = 0; l < c->n_layers; l++) {
        cu_layer *L = &s->L[l];
        char what[96];
        if (m->needs_calib) {
            if (!calib || calib->n_layers != c->n_layers) {
                SETERR("mode %s: calibration missing or for another layer count", m->name);
                goto out;
            }
            int wd[AE_NSITES] = {s->dim, s->q_dim, s->dim, s->hid};
            for (int si = 0; si < AE_NSITES; si++) {
                snprintf(what, sizeof what, "layer %d site %d channel order", l, si);
                if (dalloc(e, s, (size_t)wd[si] * 4, (void **)&L->perm[si], what, err)) goto out;
                if (ak_ops_upload(s->ops, L->perm[si], calib->perm[l * AE_NSITES + si], (size_t)wd[si] * 4, err))
                    goto out;
            }
        }
        size_t kvb = (size_t)s->max_seq * s->kv_dim * 2;
        if (s->streaming) {   /* weights when the layer runs (layer_load); one KV cache for all layers */
            if (!s->kc_shared && (dalloc(e, s, kvb, (void **)&s->kc_shared, "KV cache (layer-major)", err) ||
                                  dalloc(e, s, kvb, (void **)&s->vc_shared, "KV cache (layer-major)", err)))
                goto out;
            L->kc = s->kc_shared;
            L->vc = s->vc_shared;
            continue;
        }
        if (layer_load(e, l, err)) goto out;
        snprintf(what, sizeof what, "layer %d KV cache", l);
        if (dalloc(e, s, kvb, (void **)&L->kc, what, err) || dalloc(e, s, kvb, (void **)&L->vc, what, err)) goto out;
    }
    /* activations */
    size_t T = (size_t)s->max_seq;
    int wmax = s->hid > s->q_dim ? s->hid : s->q_dim;
    if (wmax < s->dim) wmax = s->dim;
    if (dalloc(e, s, T * s->dim * 2, (void **)&s->x, "hidden state", err) ||
        dalloc(e, s, T * s->dim * 2, (void **)&s->xb, "normed hidden state", err) ||
        dalloc(e, s, T * (size_t)(s->q_dim + 2 * s->kv_dim) * 2, (void **)&s->qkv, "q|k|v", err) ||
        dalloc(e, s, T * s->q_dim * 2, (void **)&s->att, "attention output", err) ||
        dalloc(e, s, T * s->dim * 2, (void **)&s->t1, "residual branch", err) ||
        dalloc(e, s, T * s->hid * 4, (void **)&s->hb, "gate|up", err) ||
        dalloc(e, s, T * s->hid * 2, (void **)&s->hb2, "silu(gate) * up", err) ||
        dalloc(e, s, T * (size_t)wmax * 2, (void **)&s->xq, "fake-quantized activations", err) ||
        dalloc(e, s, T * (size_t)s->V * 4, (void **)&s->logits, "logits", err))
        goto out;
    if (s->route == 1) {
        if (ak_dqt_alloc(s->ctx, m, 0, s->max_seq, s->dim, &s->qx_dim, "X (width dim)", err) ||
            ak_dqt_alloc(s->ctx, m, 0, s->max_seq, s->q_dim, &s->qx_q, "X (width q_dim)", err) ||
            ak_dqt_alloc(s->ctx, m, 0, s->max_seq, s->hid, &s->qx_hid, "X (width intermediate)", err))
            goto out;
    }
    if (ak_ops_sync(s->ops, err) || ak_ctx_sync(s->ctx, err)) goto out;
    /* Warm-up: one forward of min(max_seq, 2048) tokens (id 0) with logits, so that one-time costs —
     * CUDA's lazy loading of the kernels cuBLAS picks for these shapes, the first launch of ours —
     * land in the build time and not in the first window or request. The cache is then empty again. */
    if (!s->streaming) {
        int Tw = s->max_seq < 2048 ? s->max_seq : 2048;
        int *tw = calloc((size_t)Tw, sizeof *tw);
        if (!tw) { SETERR("cuda engine: out of memory"); goto out; }
        int w = forward_dev(e, tw, Tw, 0, 0, NULL, NULL, 0, 1, err);
        free(tw);
        if (w) goto out;
        memset(s->prof_t, 0, sizeof s->prof_t);
        s->prof_fwd = 0;
        e->pos = 0;
    }
    rc2 = 0;
out:
    if (!s->streaming) {   /* kept for the per-layer loads otherwise */
        stage_free(s);
        ak_ops_dfree(s->ops, wtmp);
        s->wtmp = NULL;
    }
    return rc2;
}

/* Prepare the input of the linears at one site: quantize (exact) or fake-quantize (fake) x [T, K]. */
static int site_in(cu_state *s, int l, int site, const uint16_t *x, int T, int K, const uint16_t **xin,
                   ak_dqt **qx, const aq_mode *m, char *err) {
    *xin = x;
    *qx = NULL;
    const int32_t *perm = s->L[l].perm[site];
    if (s->route == 1) {
        ak_dqt *t = K == s->dim ? &s->qx_dim : K == s->q_dim ? &s->qx_q : &s->qx_hid;
        char what[64];
        snprintf(what, sizeof what, "layer %d site %d input", l, site);
        if (ak_quantize_x_dev(s->ctx, m, x, T, K, perm, t, what, err)) return -1;
        *qx = t;
    } else if (s->route == 2 && aq_mode_is_integer(m)) {
        char what[64];
        snprintf(what, sizeof what, "layer %d site %d input", l, site);
        if (ak_fakequant_x_dev(s->ctx, m, x, T, K, perm, s->xq, what, err)) return -1;
        *xin = s->xq;
    }
    return 0;
}

/* The RMSNorm in front of q|k|v or gate|up (site ATTN_IN / MLP_IN, width dim): s->x (+= r when r is
 * not NULL, written back) normalized with w and quantized for the site. Exact integer route: one
 * kernel, ak_rmsnorm_quantize_x_dev (the same bytes as ak_ops_add_rmsnorm / ak_ops_rmsnorm then
 * ak_quantize_x_dev: tests/test_gpu_fused.c), s->xb not written (on this route nothing but the
 * quantizer reads it); *qx = the quantized input. Other routes (fp16, fake-quant: they read xb), or
 * pointers the fused kernel does not take: the two calls, xb written, then site_in. */
static int norm_site_in(cu_state *s, int l, int site, const uint16_t *r, const uint16_t *w, int T, float eps,
                        const aq_mode *m, const uint16_t **xin, ak_dqt **qx, char *err) {
    if (s->route == 1 && !(((uintptr_t)s->x | (uintptr_t)r | (uintptr_t)w) & 15)) {
        char what[64];
        snprintf(what, sizeof what, "layer %d site %d input", l, site);
        *xin = s->xb;
        *qx = &s->qx_dim;
        if (ak_rmsnorm_quantize_x_dev(s->ctx, m, s->x, r, w, T, s->dim, eps, s->L[l].perm[site], &s->qx_dim, what, err))
            return -1;
        prof_mark(s, P_NORMQ);
        return 0;
    }
    if (r ? ak_ops_add_rmsnorm(s->ops, s->x, r, w, T, s->dim, eps, s->xb, err)
          : ak_ops_rmsnorm(s->ops, s->x, w, T, s->dim, eps, s->xb, err))
        return -1;
    prof_mark(s, P_NORM);
    if (site_in(s, l, site, s->xb, T, s->dim, xin, qx, m, err)) return -1;
    prof_mark(s, P_QUANT);
    return 0;
}

/* Integer GEMMs run with k_splits = 1: the contract's result depends on the split for multi-group
 * modes, and the CPU exact path (eval/forward.c) uses 1, so the two backends agree byte for byte. */
static int lin_run(cu_state *s, const cu_lin *ln, const uint16_t *xin, const ak_dqt *qx, int T, uint16_t *y,
                   char *err) {
    if (ln->quant) {
        ak_plan pl;
        const ak_ctx_facts *f = ak_ctx_info(s->ctx);
        if (s->gemm_path != AK_PATH_AUTO && (s->gemm_path < AK_PATH_WGMMA || T >= AK_WGMMA_MIN_M) &&
            !ak_gemm_plan_ex(&ln->qw.mode, T, ln->N, ln->K, f->sms, f->cc, s->gemm_path, 1, &pl))
            return ak_gemm_dev_ex(s->ctx, qx, &ln->qw, pl.path, 1, y, err);
        if (ak_gemm_plan_ex(&ln->qw.mode, T, ln->N, ln->K, f->sms, f->cc, AK_PATH_AUTO, 1, &pl)) {
            SETERR("gemm plan for M %d N %d K %d failed", T, ln->N, ln->K);
            return -1;
        }
        return ak_gemm_dev_ex(s->ctx, qx, &ln->qw, pl.path, 1, y, err);
    }
    return ak_ops_linear(s->ops, xin, T, ln->K, ln->w16, ln->N, y, err);
}

/* Calibration hook: Σx² of site `site`'s input x [T, width] (row stride width) of layer l into
 * s->cal_acc (no-op when not calibrating). The calibration engine runs FP16 (route 0): the site inputs
 * are the fp16 tensors xb, att, xb, hb2 the GEMMs read. */
/* Offset of site `site` inside one layer's block of s->cal_acc: dim | q_dim | dim | hidden. */
static size_t cal_off(const cu_state *s, int site) {
    switch (site) {
    case AE_SITE_ATTN_IN: return 0;
    case AE_SITE_ATTN_OUT: return (size_t)s->dim;
    case AE_SITE_MLP_IN: return (size_t)s->dim + (size_t)s->q_dim;
    default: return (size_t)2 * s->dim + (size_t)s->q_dim;
    }
}

static int cal_site(cu_state *s, int l, int site, const uint16_t *x, int T, int width, char *err) {
    if (!s->cal_acc) return 0;
    return ak_ops_colsumsq(s->ops, x, T, width, width, s->cal_acc + (size_t)l * s->cal_stride + cal_off(s, site), err);
}

/* Forward into s->logits rows 0 .. T-logits_from-1 (device), or no logits when logits_from == T. */
/* Layer l on s->x [T, dim] (positions pos .. pos+T-1, or packed with seg): pending = the previous
 * layer's residual branch s->t1 is still to be added to s->x (fused into the first RMSNorm, as HF's
 * residual add); leaves this layer's down_proj output in s->t1, not yet added. nocache (pos 0, no
 * kv4, the cache not read afterwards): attention reads k, v from the q|k|v output, no cache copy. */
static int layer_dev(ae_engine *e, int l, int T, int pos, const int32_t *seg, int pending, int nocache, char *err) {
    cu_state *s = e->dev;
    const ae_config *c = &e->m->cfg;
    const aq_mode *m = &e->o.mode;
    const uint16_t *xin;
    ak_dqt *qx;
    cu_layer *L = &s->L[l];
    if (norm_site_in(s, l, AE_SITE_ATTN_IN, pending ? s->t1 : NULL, L->attn_norm, T, c->rms_eps, m, &xin, &qx, err) ||
        cal_site(s, l, AE_SITE_ATTN_IN, s->xb, T, s->dim, err))
        return -1;
    if (lin_run(s, &L->lin[F_QKV], xin, qx, T, s->qkv, err)) return -1;
    const int ld = s->q_dim + 2 * s->kv_dim;
    uint16_t *q = s->qkv, *k = s->qkv + s->q_dim, *v = k + s->kv_dim;
    prof_mark(s, P_QKV);
    if (seg ? ak_ops_rope_packed(s->ops, q, ld, s->nh, k, ld, s->nkv, T, seg, err)
            : ak_ops_rope(s->ops, q, ld, s->nh, k, ld, s->nkv, T, pos, err))
        return -1;
    prof_mark(s, P_ROPE);
    if (nocache && pos == 0 && !e->o.kv4) {
        prof_mark(s, P_KV);
        if (ak_ops_attention_prefill(s->ops, AK_ATTN_AUTO, q, ld, k, v, ld, T, seg, s->nh, s->nkv, s->hd, s->att, err))
            return -1;
    } else {
        if (ak_ops_kv_store(s->ops, k, v, ld, T, pos, s->nkv, s->hd, e->o.kv4, L->kc, L->vc, s->max_seq,
                            err))
            return -1;
        prof_mark(s, P_KV);
        if (seg ? ak_ops_attention_packed(s->ops, AK_ATTN_AUTO, q, ld, L->kc, L->vc, s->max_seq, T, seg, s->nh,
                                          s->nkv, s->hd, s->att, err)
                : ak_ops_attention(s->ops, AK_ATTN_AUTO, q, ld, L->kc, L->vc, s->max_seq, T, pos, s->nh, s->nkv,
                                   s->hd, s->att, err))
            return -1;
    }
    prof_mark(s, P_ATTN);
    if (cal_site(s, l, AE_SITE_ATTN_OUT, s->att, T, s->q_dim, err) ||
        site_in(s, l, AE_SITE_ATTN_OUT, s->att, T, s->q_dim, &xin, &qx, m, err))
        return -1;
    prof_mark(s, P_QUANT);
    if (lin_run(s, &L->lin[F_O], xin, qx, T, s->t1, err)) return -1;
    prof_mark(s, P_O);
    if (norm_site_in(s, l, AE_SITE_MLP_IN, s->t1, L->ffn_norm, T, c->rms_eps, m, &xin, &qx, err) ||
        cal_site(s, l, AE_SITE_MLP_IN, s->xb, T, s->dim, err))
        return -1;
    if (lin_run(s, &L->lin[F_GU], xin, qx, T, s->hb, err)) return -1;
    prof_mark(s, P_GATEUP);
    if (ak_ops_swiglu(s->ops, s->hb, s->hb + s->hid, 2 * s->hid, T, s->hid, s->hb2, err)) return -1;
    prof_mark(s, P_SWIGLU);
    if (cal_site(s, l, AE_SITE_MLP_OUT, s->hb2, T, s->hid, err) ||
        site_in(s, l, AE_SITE_MLP_OUT, s->hb2, T, s->hid, &xin, &qx, m, err))
        return -1;
    prof_mark(s, P_QUANT);
    if (lin_run(s, &L->lin[F_DOWN], xin, qx, T, s->t1, err)) return -1;
    prof_mark(s, P_DOWN);
    return 0;
}

/* Packed sequences (zero-shot): seg [T] device int32 (the row where each row's sequence starts; pos
 * must be 0) runs RoPE and attention per sequence; rows [nrows] device int32 (non-NULL): logits only
 * for those rows, into s->logits rows 0 .. nrows-1 (logits_from is then ignored). */
static int forward_dev(ae_engine *e, const int *tokens, int T, int pos, int logits_from, const int32_t *seg,
                       const int32_t *rows, int nrows, int nocache, char *err) {
    cu_state *s = e->dev;
    const ae_config *c = &e->m->cfg;
    if (T < 1 || pos < 0 || pos + T > s->max_seq) {
        SETERR("forward: %d tokens at position %d exceed the engine's %d positions", T, pos, s->max_seq);
        return -1;
    }
    s->prof_fwd++;
    prof_mark(s, -1);
    if (ak_ops_embed(s->ops, tokens, T, s->emb, s->V, s->dim, s->x, err)) return -1;
    prof_mark(s, P_EMBED);
    for (int l = 0; l < c->n_layers; l++) {
        if (s->streaming && layer_load(e, l, err)) return -1;
        if (layer_dev(e, l, T, pos, seg, l > 0, nocache, err)) return -1;
        if (s->streaming) layer_unload(e, l);
    }
    if (rows) {
        if (ak_ops_add_rmsnorm(s->ops, s->x, s->t1, s->final_norm, T, s->dim, c->rms_eps, s->xb, err) ||
            ak_ops_gather_rows(s->ops, s->xb, s->dim, rows, nrows, s->dim, s->xg, err))
            return -1;
        prof_mark(s, P_NORM);
        if (ak_ops_linear_f32(s->ops, s->xg, nrows, s->dim, s->lm_head, s->V, s->logits, err)) return -1;
        prof_mark(s, P_HEAD);
    } else if (logits_from < T) {
        if (ak_ops_add_rmsnorm(s->ops, s->x, s->t1, s->final_norm, T, s->dim, c->rms_eps, s->xb, err)) return -1;
        prof_mark(s, P_NORM);
        if (ak_ops_linear_f32(s->ops, s->xb + (size_t)logits_from * s->dim, T - logits_from, s->dim, s->lm_head, s->V,
                              s->logits, err))
            return -1;
        prof_mark(s, P_HEAD);
    }
    /* deferred checks of the activation quantizers (a non-finite activation names layer and site) */
    if (ak_ctx_check(s->ctx, err)) return -1;
    return ak_ops_sync(s->ops, err);
}

static int cu_forward(ae_engine *e, const int *tokens, int T, int pos, int logits_from, float *logits, char *err) {
    cu_state *s = e->dev;
    if (pos != e->pos) { SETERR("forward at position %d but the cache holds %d", pos, e->pos); return -1; }
    if (logits_from < 0 || logits_from > T || (!logits && logits_from < T)) {
        SETERR("forward: logits_from %d outside [0, %d] or logits missing", logits_from, T);
        return -1;
    }
    if (forward_dev(e, tokens, T, pos, logits_from, NULL, NULL, 0, 0, err)) return -1;
    if (logits_from < T)
        return ak_ops_download(s->ops, logits, s->logits, (size_t)(T - logits_from) * s->V * sizeof(float), err);
    return 0;
}

static void cu_truncate(ae_engine *e, int pos) { (void)e; (void)pos; /* the cache is overwritten in order */ }

/* The reference store: device log-probs owned by a context of its own, so that it outlives the
 * engine that filled it; the reference argmax per position on the host. */
/* Device-resident by default; in host memory when it would take more than half of --gpu-mem-limit or
 * the device allocation fails (then each window's slot moves through `stage` on the device). */
typedef struct { ak_ops *ops; float *logp, *host, *stage; } cu_store;

static int cu_rs_alloc(ae_engine *e, ae_refstore *rs, char *err) {
    size_t n;
    if (ax_mul3_size((size_t)rs->n_windows, (size_t)(rs->seqlen - 1), (size_t)rs->vocab, &n,
                     "reference log-probs", err))
        return -1;
    cu_store *cs = calloc(1, sizeof *cs);
    rs->argmax = malloc((size_t)rs->n_windows * (size_t)(rs->seqlen - 1) * sizeof(int));
    if (!cs || !rs->argmax) { free(cs); SETERR("reference store: out of memory"); return -1; }
    rs->dev = cs;
    if (ak_ops_new(e->o.gpu, &cs->ops, err)) return -1;
    char what[160];
    snprintf(what, sizeof what, "reference log-probs (%d windows x %d positions x vocab %d, fp32)", rs->n_windows,
             rs->seqlen - 1, rs->vocab);
    const size_t bytes = n * sizeof(float), slot = (size_t)(rs->seqlen - 1) * rs->vocab * sizeof(float);
    int host = e->o.gpu_mem_limit && bytes > e->o.gpu_mem_limit / 2;
    if (!host && ak_ops_alloc(cs->ops, bytes, (void **)&cs->logp, what, err)) host = 1;   /* fall back to host */
    if (host) {
        cs->host = malloc(bytes);
        if (!cs->host) { SETERR("%s: out of host memory (%zu bytes)", what, bytes); return -1; }
        if (ak_ops_alloc(cs->ops, slot, (void **)&cs->stage, "reference log-probs staging (one window)", err)) return -1;
    }
    return 0;
}

static void cu_rs_release(ae_refstore *rs) {
    cu_store *cs = rs->dev;
    if (cs) {
        if (cs->ops) {
            ak_ops_dfree(cs->ops, cs->logp);
            ak_ops_dfree(cs->ops, cs->stage);
            ak_ops_free(cs->ops);
        }
        free(cs->host);
        free(cs);
    }
    free(rs->argmax);
    rs->dev = NULL;
    rs->argmax = NULL;
}

static int cu_layer_major(const ae_engine *e) { return ((const cu_state *)e->dev)->streaming; }

/* Score the logits s->logits [T-1 rows used] of one window against tokens[1..T-1] (cu_score). */
static int score_logits(ae_engine *e, const int *tokens, int T, ae_refstore *rs, long window, int store, double *nll,
                        double *kld, int *same, char *err);

static int cu_score(ae_engine *e, const int *tokens, int T, ae_refstore *rs, long window, int store, double *nll,
                    double *kld, int *same, char *err) {
    e->pos = 0;
    if (forward_dev(e, tokens, T, 0, 0, NULL, NULL, 0, 1, err)) return -1;
    if (score_logits(e, tokens, T, rs, window, store, nll, kld, same, err)) return -1;
    e->pos = 0;   /* attention read k, v from the q|k|v output: the cache was not filled */
    return 0;
}

/* Hidden states of the n windows of a layer-major pass, [n, T, dim] fp16. On the device when they fit
 * the memory limit (s->mem_limit) next to what is allocated and one loaded layer (s->layer_bytes);
 * else spilled: all n windows in host memory and a device buffer of nb < n windows, each layer passing
 * the windows through that buffer chunk by chunk (upload, layer, download). Either way every layer sees
 * the windows in order, so the bytes are the same (tests/test_gpu_layer.c). */
typedef struct {
    uint16_t *dev;    /* device [nb, T, dim] (nb = n when not spilled)                          */
    uint16_t *host;   /* host [n, T, dim], NULL when not spilled                                */
    int       n, nb;
    size_t    wst;    /* T * dim values per window                                              */
} cu_hid;

static int hid_alloc(ae_engine *e, int n, int T, const char *what, cu_hid *h, char *err) {
    cu_state *s = e->dev;
    memset(h, 0, sizeof *h);
    h->n = n;
    h->wst = (size_t)T * s->dim;
    const size_t wb = h->wst * 2, used = s->bytes + s->layer_bytes + (s->wtmp ? s->wtmp_bytes : 0);
    size_t fit = s->mem_limit > used ? (s->mem_limit - used) / wb : 0;
    const char *env = getenv("APEX4_HIDDEN_WINDOWS");   /* testing: force a chunk of that many windows */
    const int forced = env && *env;
    if (forced) {
        long v;
        if (ax_parse_long(env, 1, 1L << 30, "APEX4_HIDDEN_WINDOWS", &v, err)) return -1;
        fit = (size_t)v;
    }
    h->nb = fit >= (size_t)n ? n : fit < 1 ? 1 : (int)fit;
    for (;;) {   /* memory held outside s->bytes (the reference store, cuBLAS) can make it fail: spill more */
        char w2[192];
        if (h->nb < n && !h->host) {
            snprintf(w2, sizeof w2, "%s: host copy (spilled, %d of %d windows on the device at a time)", what, h->nb, n);
            h->host = malloc((size_t)n * wb);
            if (!h->host) { SETERR("%s: out of host memory (%zu bytes)", w2, (size_t)n * wb); return -1; }
        }
        if (h->nb < n) snprintf(w2, sizeof w2, "%s: device chunk of %d windows (spilled to host)", what, h->nb);
        else snprintf(w2, sizeof w2, "%s", what);
        if (!dalloc(e, s, (size_t)h->nb * wb, (void **)&h->dev, w2, err)) return 0;
        if (h->nb == 1 || forced) { free(h->host); h->host = NULL; return -1; }
        h->nb = (h->nb + 1) / 2;
    }
}

static void hid_free(ae_engine *e, cu_hid *h) {
    cu_state *s = e->dev;
    if (h->dev) {
        ak_ops_sync(s->ops, NULL);
        ak_ops_dfree(s->ops, h->dev);
        s->bytes -= (size_t)h->nb * h->wst * 2;
    }
    free(h->host);
    memset(h, 0, sizeof *h);
}

/* Window w's hidden state on the device (spilled: uploaded into the buffer's first slot). */
static uint16_t *hid_window(ae_engine *e, cu_hid *h, int w, char *err) {
    cu_state *s = e->dev;
    if (!h->host) return h->dev + (size_t)w * h->wst;
    if (ak_ops_upload(s->ops, h->dev, h->host + (size_t)w * h->wst, h->wst * 2, err)) return NULL;
    return h->dev;
}

/* The layer-major pass shared by scoring and calibration: embed windows tokens [n, T] into the hidden
 * states h, then per layer: load it, pass every window's hidden state through it in order (the
 * residual added at the layer's end, as the resident order's fused add_rmsnorm does; spilled: chunk by
 * chunk through the device buffer), check and sync, free it. Leaves s->x pointing into h->dev; 0 or
 * -1 with err. */
static int layer_major_pass(ae_engine *e, const int *tokens, int n, int T, cu_hid *h, char *err) {
    cu_state *s = e->dev;
    const size_t wst = h->wst, wb = wst * 2;
    prof_mark(s, -1);
    for (int c0 = 0; c0 < n; c0 += h->nb) {
        const int cnt = n - c0 < h->nb ? n - c0 : h->nb;
        for (int w = 0; w < cnt; w++)
            if (ak_ops_embed(s->ops, tokens + (size_t)(c0 + w) * T, T, s->emb, s->V, s->dim, h->dev + w * wst, err))
                return -1;
        if (h->host && ak_ops_download(s->ops, h->host + (size_t)c0 * wst, h->dev, (size_t)cnt * wb, err)) return -1;
    }
    prof_mark(s, P_EMBED);
    for (int l = 0; l < e->m->cfg.n_layers; l++) {
        int bad = layer_load(e, l, err);
        for (int c0 = 0; c0 < n && !bad; c0 += h->nb) {
            const int cnt = n - c0 < h->nb ? n - c0 : h->nb;
            if (h->host && ak_ops_upload(s->ops, h->dev, h->host + (size_t)c0 * wst, (size_t)cnt * wb, err)) bad = 1;
            for (int w = 0; w < cnt && !bad; w++) {
                s->x = h->dev + w * wst;
                if (layer_dev(e, l, T, 0, NULL, 0, 1, err) || ak_ops_add(s->ops, s->x, s->t1, wst, err)) bad = 1;
            }
            if (!bad && h->host && ak_ops_download(s->ops, h->host + (size_t)c0 * wst, h->dev, (size_t)cnt * wb, err))
                bad = 1;
        }
        if (!bad && (ak_ctx_check(s->ctx, err) || ak_ops_sync(s->ops, err))) bad = 1;
        if (bad) ak_ops_sync(s->ops, NULL);   /* the layer's buffers may still be in use */
        layer_unload(e, l);                     /* also after a failure: no stale pointers for the next load */
        if (bad) return -1;
    }
    return 0;
}

/* Layer-major (streaming engines): the hidden states of all n windows [n, T, dim] fp16 (on the
 * device, or spilled to host: hid_alloc); each layer is loaded once, every window passes through it
 * (residual added at the layer's end: the same fp16 add as the fused add_rmsnorm of the resident
 * order, so the same bytes), then it is freed; then the final norm, lm_head and scoring window by
 * window. Resident engines: cu_score per window. tokens [n, T]; nll, kld [n, T-1] and same [n, T-1]. */
static int cu_score_windows(ae_engine *e, const int *tokens, int n, int T, ae_refstore *rs, long window0, int store,
                            double *nll, double *kld, int *same, char *err) {
    cu_state *s = e->dev;
    const ae_config *c = &e->m->cfg;
    const size_t tm1 = (size_t)(T - 1);
    if (!s->streaming) {
        for (int w = 0; w < n; w++)
            if (cu_score(e, tokens + (size_t)w * T, T, rs, window0 + w, store, nll + w * tm1, kld ? kld + w * tm1 : NULL,
                         same ? same + w * tm1 : NULL, err))
                return -1;
        return 0;
    }
    if (T < 2 || T > s->max_seq) { SETERR("score windows: T %d outside [2, %d]", T, s->max_seq); return -1; }
    uint16_t *x0 = s->x;
    cu_hid h;
    char what[96];
    snprintf(what, sizeof what, "hidden states of %d windows x %d tokens (layer-major)", n, T);
    if (hid_alloc(e, n, T, what, &h, err)) return -1;
    int rc = -1;
    s->prof_fwd += n;
    if (layer_major_pass(e, tokens, n, T, &h, err)) goto out;
    for (int w = 0; w < n; w++) {
        if (!(s->x = hid_window(e, &h, w, err))) goto out;
        if (ak_ops_rmsnorm(s->ops, s->x, s->final_norm, T, s->dim, c->rms_eps, s->xb, err)) goto out;
        prof_mark(s, P_NORM);
        if (ak_ops_linear_f32(s->ops, s->xb, T, s->dim, s->lm_head, s->V, s->logits, err)) goto out;
        prof_mark(s, P_HEAD);
        if (score_logits(e, tokens + (size_t)w * T, T, rs, window0 + w, store, nll + w * tm1, kld ? kld + w * tm1 : NULL,
                         same ? same + w * tm1 : NULL, err))
            goto out;
    }
    rc = 0;
out:
    s->x = x0;
    hid_free(e, &h);
    e->pos = 0;
    return rc;
}

static int score_logits(ae_engine *e, const int *tokens, int T, ae_refstore *rs, long window, int store, double *nll,
                        double *kld, int *same, char *err) {
    cu_state *s = e->dev;
    int32_t *am = malloc((size_t)T * sizeof(int32_t));
    if (!am) { SETERR("out of memory"); return -1; }
    int rc = -1;
    const int32_t *targets = (const int32_t *)tokens + 1;
    prof_mark(s, -1);
    if (!rs) {
        rc = ak_ops_score(s->ops, s->logits, s->V, T - 1, s->V, targets, NULL, 0, AK_OPS_REF_LOGP, nll, am, NULL,
                          NULL, err);
    } else {
        cu_store *cs = rs->dev;
        const size_t sb = (size_t)(T - 1) * (size_t)s->V * sizeof(float);
        float *hslot = cs->host ? cs->host + (size_t)window * (size_t)(T - 1) * (size_t)s->V : NULL;
        float *slot = cs->host ? cs->stage : cs->logp + (size_t)window * (size_t)(T - 1) * (size_t)s->V;
        if (hslot && !store && ak_ops_upload(s->ops, slot, hslot, sb, err)) { free(am); return -1; }
        int *ram = rs->argmax + (size_t)window * (size_t)(T - 1);
        if (store) {
            rc = ak_ops_score(s->ops, s->logits, s->V, T - 1, s->V, targets, NULL, 0, AK_OPS_REF_LOGP, nll, am, NULL,
                              NULL, err);
            if (!rc) rc = ak_ops_logprobs(s->ops, s->logits, s->V, T - 1, s->V, slot, s->V, NULL, err);
            if (!rc && hslot) rc = ak_ops_download(s->ops, hslot, slot, sb, err);
            if (!rc) for (int t = 0; t < T - 1; t++) ram[t] = am[t];
        } else {
            rc = ak_ops_score(s->ops, s->logits, s->V, T - 1, s->V, targets, slot, s->V, AK_OPS_REF_LOGP, nll, am, kld,
                              NULL, err);
            if (!rc && same) for (int t = 0; t < T - 1; t++) same[t] = am[t] == ram[t];
        }
    }
    free(am);
    prof_mark(s, P_SCORE);
    return rc ? -1 : 0;
}

/* Packed: as many whole sequences as fit the engine's max_seq positions run side by side in one
 * forward (positions restart at 0 per sequence, attention block-diagonal causal: ak_ops_*_packed),
 * the final hidden rows of the scored positions gathered, lm_head and ak_ops_score on those rows only. */
static int cu_loglik(ae_engine *e, const int *tokens, const int *offsets, int n_seqs, const int *targets,
                     double *logp, int *greedy, char *err) {
    cu_state *s = e->dev;
    const size_t ms = (size_t)s->max_seq;
    if (!s->seg_d && (dalloc(e, s, ms * 4, (void **)&s->seg_d, "packed sequence starts", err) ||
                      dalloc(e, s, ms * 4, (void **)&s->rows_d, "packed scored rows", err) ||
                      dalloc(e, s, ms * (size_t)s->dim * 2, (void **)&s->xg, "packed scored hidden rows", err)))
        return -1;
    e->last_len = 0;   /* packed forwards overwrite the KV cache */
    e->pos = 0;
    int32_t *seg = malloc(ms * 4), *rows = malloc(ms * 4), *tg = malloc(ms * 4), *am = malloc(ms * 4);
    int *map = malloc(ms * sizeof(int));
    double *nll = malloc(ms * sizeof(double));
    int rc = -1;
    if (!seg || !rows || !tg || !am || !map || !nll) { SETERR("out of memory"); goto out; }
    for (int i = 0; i < n_seqs;) {
        const int base = offsets[i];
        int i1 = i + 1;   /* each sequence fits alone (checked by ae_engine_loglik_packed) */
        while (i1 < n_seqs && offsets[i1 + 1] - base <= s->max_seq) i1++;
        const int T = offsets[i1] - base;
        int nr = 0;
        for (int q = i; q < i1; q++)
            for (int j = offsets[q]; j < offsets[q + 1]; j++) {
                seg[j - base] = offsets[q] - base;
                if (targets[j] >= 0) { rows[nr] = j - base; tg[nr] = targets[j]; map[nr] = j; nr++; }
            }
        if (ak_ops_upload(s->ops, s->seg_d, seg, (size_t)T * 4, err) ||
            (nr && ak_ops_upload(s->ops, s->rows_d, rows, (size_t)nr * 4, err)) ||
            forward_dev(e, tokens + base, T, 0, T, s->seg_d, nr ? s->rows_d : NULL, nr, 1, err))
            goto out;
        if (nr) {
            char e2[AX_ERR_LEN];
            prof_mark(s, -1);
            if (ak_ops_score(s->ops, s->logits, s->V, nr, s->V, tg, NULL, 0, AK_OPS_REF_LOGP, nll, am, NULL, NULL,
                             e2)) {
                SETERR("sequences %d..%d (mode %s): %s", i, i1 - 1, e->o.mode.name, e2);
                goto out;
            }
            prof_mark(s, P_SCORE);
            for (int r = 0; r < nr; r++) {
                logp[map[r]] = -nll[r];
                greedy[map[r]] = am[r] == tg[r];
            }
        }
        i = i1;
    }
    rc = 0;
out:
    free(seg); free(rows); free(tg); free(am); free(map); free(nll);
    return rc;
}

static int cu_probe(ae_engine *e, int layer, int proj, const uint16_t *x, int T, uint16_t *y, char *err) {
    cu_state *s = e->dev;
    const int f = proj_fused[proj];
    const cu_lin *ln = &s->L[layer].lin[f];
    int r0, n, K;
    proj_rows(s, proj, &r0, &n, &K);
    const uint16_t *xin;
    ak_dqt *qx;
    uint16_t *dx = f == F_DOWN ? s->hb2 : f == F_O ? s->att : s->xb;   /* the site's input buffer */
    uint16_t *dy = (uint16_t *)s->logits;   /* [T, vocab] fp32 holds the fused [T, N] fp16 output */
    if ((size_t)ln->N * 2 > (size_t)s->V * 4) { SETERR("probe: fused output wider than the logits buffer"); return -1; }
    uint16_t *full = malloc((size_t)T * ln->N * 2);
    if (!full) { SETERR("probe: out of memory"); return -1; }
    int rc = -1;
    if (ak_ops_upload(s->ops, dx, x, (size_t)T * K * 2, err) ||
        site_in(s, layer, fused_site[f], dx, T, K, &xin, &qx, &e->o.mode, err) || lin_run(s, ln, xin, qx, T, dy, err) ||
        ak_ctx_check(s->ctx, err) || ak_ops_sync(s->ops, err) ||
        ak_ops_download(s->ops, full, dy, (size_t)T * ln->N * 2, err))
        goto out;
    for (int t = 0; t < T; t++) memcpy(y + (size_t)t * n, full + (size_t)t * ln->N + r0, (size_t)n * 2);
    rc = 0;
out:
    free(full);
    return rc;
}

/* Atom calibration (ae_engine_calib_sumsq): the device buffer [layers][dim | q_dim | dim | hidden]
 * float64 loaded from c->sumsq, every window's FP16 forward (no logits) with layer_dev's hook adding
 * each site input's column Σx² (ak_ops_colsumsq), then downloaded into c->sumsq. Resident engines run
 * window by window (forward_dev); layer-major engines as cu_score_windows: the hidden states of all
 * windows [n, T, dim] fp16 (on the device, or spilled to host: hid_alloc), each layer loaded once and every window passed through it in
 * order. Either way each accumulator sees windows in order, rows in order: the same sums bit for bit. */
static int cu_calib_sumsq(ae_engine *e, const int *tokens, int n, int T, ae_calib *c, char *err) {
    cu_state *s = e->dev;
    const ae_config *cfg = &e->m->cfg;
    const int nl = cfg->n_layers;
    const int wd[AE_NSITES] = {s->dim, s->q_dim, s->dim, s->hid};
    if (s->route != 0) { SETERR("calibration: the cuda engine must run fp16 (mode %s)", e->o.mode.name); return -1; }
    const size_t stride = (size_t)2 * s->dim + (size_t)s->q_dim + (size_t)s->hid, nacc = (size_t)nl * stride;
    const size_t abytes = nacc * sizeof(double);
    double *host = malloc(abytes), *acc = NULL;
    uint16_t *x0 = s->x;
    cu_hid h = {0};
    int rc = -1;
    if (!host) { SETERR("calibration: out of memory (%zu bytes of sums)", abytes); return -1; }
    for (int l = 0, i = 0; l < nl; l++)
        for (int si = 0; si < AE_NSITES; si++, i++)
            memcpy(host + (size_t)l * stride + cal_off(s, si), c->sumsq[i], (size_t)wd[si] * sizeof(double));
    if (dalloc(e, s, abytes, (void **)&acc, "calibration sums of squares", err) ||
        ak_ops_upload(s->ops, acc, host, abytes, err))
        goto out;
    s->cal_acc = acc;
    s->cal_stride = stride;
    e->pos = 0;
    if (!s->streaming) {
        for (int w = 0; w < n; w++)
            if (forward_dev(e, tokens + (size_t)w * T, T, 0, T, NULL, NULL, 0, 1, err)) goto out;
    } else {
        char what[128];
        snprintf(what, sizeof what, "hidden states of %d calibration windows x %d tokens (layer-major)", n, T);
        if (hid_alloc(e, n, T, what, &h, err)) goto out;
        if (layer_major_pass(e, tokens, n, T, &h, err)) goto out;
    }
    if (ak_ops_download(s->ops, host, acc, abytes, err)) goto out;
    for (int l = 0, i = 0; l < nl; l++)
        for (int si = 0; si < AE_NSITES; si++, i++)
            memcpy(c->sumsq[i], host + (size_t)l * stride + cal_off(s, si), (size_t)wd[si] * sizeof(double));
    c->tokens += (long)n * T;
    rc = 0;
out:
    s->cal_acc = NULL;
    s->x = x0;
    ak_ops_sync(s->ops, NULL);
    hid_free(e, &h);
    if (acc) { ak_ops_dfree(s->ops, acc); s->bytes -= abytes; }
    free(host);
    e->pos = 0;
    return rc;
}

static void cu_describe(const ae_engine *e, char *buf, size_t len) {
    (void)e;
    ak_device_describe(buf, len);
}

const ae_backend ae_backend_cuda = {"cuda", cu_build, cu_destroy, cu_forward, cu_truncate, cu_rs_alloc,
                                    cu_rs_release, cu_score, cu_describe, cu_loglik, cu_probe,
                                    cu_score_windows, cu_layer_major, cu_calib_sumsq};
