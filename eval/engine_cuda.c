/* engine_cuda.c — the cuda backend of eval/engine.h.
 *
 * Per layer, as Hugging Face LlamaDecoderLayer in fp16 (modeling_llama.py, eager), activations fp16
 * on the device between ops (kernels/ak_ops.h), the same straight line as eval/forward.c:
 *   xb = rmsnorm(x, attn_norm)                 (x += previous residual fused: ak_ops_add_rmsnorm)
 *   q, k, v = linear(site ATTN_IN, xb)         one activation quantization for the three
 *   rope(q, k); cache k, v (kv4: fake-quantized per (token, head))
 *   att = causal GQA flash attention
 *   o = linear(site ATTN_OUT, att);  xb = rmsnorm(x += o, ffn_norm)
 *   g, u = linear(site MLP_IN, xb);  h = silu(g) * u;  d = linear(site MLP_OUT, h)
 * then logits fp32 = rmsnorm(x += d, final_norm) · lm_headᵀ by cuBLAS.
 * A linear by mode row (quant/aq.h aq_mode, engine.h):
 *   fp16, or exact/fake of FP16        cuBLAS fp16 (fp32 accumulate)
 *   integer mode, gemm exact           ak_quantize_x_dev + ak_gemm_dev on weights quantized on the
 *                                      device by ak_quantize_w_dev (bit-exact with quant/)
 *   integer mode, gemm fake            ak_fakequant_x_dev + cuBLAS on ak_fakequant_w_dev weights
 *   w4a16 (WONLY)                      cuBLAS on ak_fakequant_w_dev weights
 * Checkpoint weights (fp32 in host memory, exact from F16/BF16/F32) are uploaded per tensor and
 * rounded to fp16 on the device (ak_ops_to_f16: aq_f32_to_f16 semantics, non-finite or overflowing
 * values are errors naming the tensor). */
#include "engine_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ak.h"
#include "ak_ops.h"
#include "ax_util.h"

#define SETERR(...) ax_seterr(err, __VA_ARGS__)

enum { L_Q, L_K, L_V, L_O, L_GATE, L_UP, L_DOWN, L_N };
static const int lin_site[L_N] = {AE_SITE_ATTN_IN, AE_SITE_ATTN_IN, AE_SITE_ATTN_IN, AE_SITE_ATTN_OUT,
                                  AE_SITE_MLP_IN, AE_SITE_MLP_IN, AE_SITE_MLP_OUT};
static const char *const lin_name[L_N] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                          "down_proj"};

typedef struct {
    int       N, K;
    uint16_t *w16;      /* device fp16 [N, K]: fp16 / fake / weight-only routes                    */
    ak_dqt    qw;       /* device quantized W: integer exact route                                 */
    int       quant;    /* 1: qw is used                                                           */
} cu_lin;

typedef struct {
    uint16_t *attn_norm, *ffn_norm;   /* device fp16 [dim]                                         */
    cu_lin    lin[L_N];
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
    uint16_t *x, *xb, *q, *k, *v, *att, *t1, *hb, *hb2, *xq;
    ak_dqt    qx_dim, qx_q, qx_hid;   /* quantized activations of widths dim, q_dim, hidden         */
    float    *logits;                 /* [max_seq, V] fp32                                          */
    size_t    bytes;                  /* device bytes allocated                                     */
} cu_state;

static int dalloc(ae_engine *e, cu_state *s, size_t bytes, void **p, const char *what, char *err) {
    if (ak_ops_alloc(s->ops, bytes, p, what, err)) return -1;
    s->bytes += bytes;
    if (s->bytes > e->peak_bytes) e->peak_bytes = s->bytes;
    return 0;
}

/* Upload an fp32 host tensor [n] and round it to fp16 on the device into dst (allocated here). */
static int upload_f16(ae_engine *e, cu_state *s, const float *src, size_t n, float *scratch, uint16_t **dst,
                      const char *what, char *err) {
    if (dalloc(e, s, n * 2, (void **)dst, what, err)) return -1;
    if (ak_ops_upload(s->ops, scratch, src, n * sizeof(float), err)) return -1;
    return ak_ops_to_f16(s->ops, AK_OPS_F32, scratch, n, *dst, what, err);
}

static const float *layer_w(const ae_layer *L, int i) {
    switch (i) {
    case L_Q: return L->wq;
    case L_K: return L->wk;
    case L_V: return L->wv;
    case L_O: return L->wo;
    case L_GATE: return L->w_gate;
    case L_UP: return L->w_up;
    default: return L->w_down;
    }
}

static void cu_destroy(ae_engine *e) {
    cu_state *s = e->dev;
    if (!s) return;
    if (s->ops) ak_ops_sync(s->ops, NULL);
    if (s->L) {
        for (int l = 0; l < e->m->cfg.n_layers; l++) {
            cu_layer *L = &s->L[l];
            ak_ops_dfree(s->ops, L->attn_norm);
            ak_ops_dfree(s->ops, L->ffn_norm);
            ak_ops_dfree(s->ops, L->kc);
            ak_ops_dfree(s->ops, L->vc);
            for (int i = 0; i < L_N; i++) {
                ak_ops_dfree(s->ops, L->lin[i].w16);
                if (L->lin[i].quant) ak_dqt_free(s->ctx, &L->lin[i].qw);
            }
            for (int i = 0; i < AE_NSITES; i++) ak_ops_dfree(s->ops, L->perm[i]);
        }
        free(s->L);
    }
    if (s->lm_head != s->emb) ak_ops_dfree(s->ops, s->lm_head);
    ak_ops_dfree(s->ops, s->emb);
    ak_ops_dfree(s->ops, s->final_norm);
    void *acts[] = {s->x, s->xb, s->q, s->k, s->v, s->att, s->t1, s->hb, s->hb2, s->xq, s->logits};
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

/* One projection's weights on the device for the engine's route. wtmp: device fp16 scratch of the
 * largest projection; scratch: device fp32 scratch for the upload. */
static int build_lin(ae_engine *e, cu_state *s, int l, int i, float *scratch, uint16_t *wtmp, char *err) {
    const ae_config *c = &e->m->cfg;
    cu_lin *ln = &s->L[l].lin[i];
    int N = i == L_Q ? s->q_dim : i == L_K || i == L_V ? s->kv_dim : i == L_O ? c->dim :
            i == L_GATE || i == L_UP ? s->hid : c->dim;
    int K = i == L_O ? s->q_dim : i == L_DOWN ? s->hid : c->dim;
    ln->N = N;
    ln->K = K;
    char what[96];
    snprintf(what, sizeof what, "model.layers.%d.%s.weight", l, lin_name[i]);
    size_t n = (size_t)N * K;
    const aq_mode *m = &e->o.mode;
    const int32_t *perm = s->L[l].perm[lin_site[i]];
    if (ak_ops_upload(s->ops, scratch, layer_w(&e->m->w.layers[l], i), n * sizeof(float), err)) return -1;
    if (s->route == 0) {   /* fp16: the checkpoint's weights */
        if (dalloc(e, s, n * 2, (void **)&ln->w16, what, err)) return -1;
        return ak_ops_to_f16(s->ops, AK_OPS_F32, scratch, n, ln->w16, what, err);
    }
    if (ak_ops_to_f16(s->ops, AK_OPS_F32, scratch, n, wtmp, what, err)) return -1;
    if (s->route == 1) {
        ln->quant = 1;
        if (ak_dqt_alloc(s->ctx, m, 1, N, K, &ln->qw, what, err)) { ln->quant = 0; return -1; }
        s->bytes += (size_t)N * (size_t)(K + 1) / 2 + (size_t)N * (size_t)((K + 15) / 16);  /* ~ codes + scales */
        if (s->bytes > e->peak_bytes) e->peak_bytes = s->bytes;
        return ak_quantize_w_dev(s->ctx, m, wtmp, N, K, perm, &ln->qw, what, err);
    }
    if (dalloc(e, s, n * 2, (void **)&ln->w16, what, err)) return -1;
    return ak_fakequant_w_dev(s->ctx, m, wtmp, N, K, perm, ln->w16, what, err);
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
    if (ak_ops_new(0, &s->ops, err)) return -1;
    if (ak_ctx_new(0, &s->ctx, err)) return -1;
    ak_ctx_set_stream(s->ctx, ak_ops_stream(s->ops));   /* one stream: ops and kernels in order */
    ak_ctx_set_sync_checks(s->ctx, 0);                  /* findings checked once per forward     */
    ak_ops_rope_cfg rc = {c->head_dim, c->rope_theta, c->rope_llama3, c->rope_factor, c->rope_low_freq_factor,
                          c->rope_high_freq_factor, c->rope_orig_max_pos};
    if (ak_ops_rope_init(s->ops, &rc, s->max_seq, err)) return -1;
    /* scratch: the largest tensor in fp32 (upload) and in fp16 (weights before quantization) */
    size_t big = (size_t)s->V * s->dim, lin_big = (size_t)s->hid * s->dim;
    if ((size_t)s->q_dim * s->dim > lin_big) lin_big = (size_t)s->q_dim * s->dim;
    if (lin_big > big) big = lin_big;
    float *scratch = NULL;
    uint16_t *wtmp = NULL;
    int rc2 = -1;
    if (ak_ops_alloc(s->ops, big * 4, (void **)&scratch, "weight upload scratch", err)) goto out;
    if (ak_ops_alloc(s->ops, lin_big * 2, (void **)&wtmp, "weight quantization scratch", err)) goto out;
    if (upload_f16(e, s, e->m->w.tok_emb, (size_t)s->V * s->dim, scratch, &s->emb, "model.embed_tokens.weight", err))
        goto out;
    if (e->m->w.lm_head == e->m->w.tok_emb) s->lm_head = s->emb;
    else if (upload_f16(e, s, e->m->w.lm_head, (size_t)s->V * s->dim, scratch, &s->lm_head, "lm_head.weight", err))
        goto out;
    if (upload_f16(e, s, e->m->w.final_norm, (size_t)s->dim, scratch, &s->final_norm, "model.norm.weight", err))
        goto out;
    s->L = calloc((size_t)c->n_layers, sizeof *s->L);
    if (!s->L) { SETERR("cuda engine: out of memory"); goto out; }
    for (int l = 0; l < c->n_layers; l++) {
        cu_layer *L = &s->L[l];
        const ae_layer *W = &e->m->w.layers[l];
        char what[96];
        snprintf(what, sizeof what, "model.layers.%d.input_layernorm.weight", l);
        if (upload_f16(e, s, W->attn_norm, (size_t)s->dim, scratch, &L->attn_norm, what, err)) goto out;
        snprintf(what, sizeof what, "model.layers.%d.post_attention_layernorm.weight", l);
        if (upload_f16(e, s, W->ffn_norm, (size_t)s->dim, scratch, &L->ffn_norm, what, err)) goto out;
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
        for (int i = 0; i < L_N; i++)
            if (build_lin(e, s, l, i, scratch, wtmp, err)) goto out;
        size_t kvb = (size_t)s->max_seq * s->kv_dim * 2;
        snprintf(what, sizeof what, "layer %d KV cache", l);
        if (dalloc(e, s, kvb, (void **)&L->kc, what, err) || dalloc(e, s, kvb, (void **)&L->vc, what, err)) goto out;
    }
    /* activations */
    size_t T = (size_t)s->max_seq;
    int wmax = s->hid > s->q_dim ? s->hid : s->q_dim;
    if (wmax < s->dim) wmax = s->dim;
    if (dalloc(e, s, T * s->dim * 2, (void **)&s->x, "hidden state", err) ||
        dalloc(e, s, T * s->dim * 2, (void **)&s->xb, "normed hidden state", err) ||
        dalloc(e, s, T * s->q_dim * 2, (void **)&s->q, "q", err) ||
        dalloc(e, s, T * s->kv_dim * 2, (void **)&s->k, "k", err) ||
        dalloc(e, s, T * s->kv_dim * 2, (void **)&s->v, "v", err) ||
        dalloc(e, s, T * s->q_dim * 2, (void **)&s->att, "attention output", err) ||
        dalloc(e, s, T * s->dim * 2, (void **)&s->t1, "residual branch", err) ||
        dalloc(e, s, T * s->hid * 2, (void **)&s->hb, "gate", err) ||
        dalloc(e, s, T * s->hid * 2, (void **)&s->hb2, "up", err) ||
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
    rc2 = 0;
out:
    ak_ops_dfree(s->ops, scratch);
    ak_ops_dfree(s->ops, wtmp);
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

/* Integer GEMMs run with k_splits = 1: the contract's result depends on the split for multi-group
 * modes, and the CPU exact path (eval/forward.c) uses 1, so the two backends agree byte for byte. */
static int lin_run(cu_state *s, const cu_lin *ln, const uint16_t *xin, const ak_dqt *qx, int T, uint16_t *y,
                   char *err) {
    if (ln->quant) {
        ak_plan pl;
        if (ak_gemm_plan(&ln->qw.mode, T, ln->N, ln->K, ak_ctx_info(s->ctx)->sms, 1, &pl)) {
            SETERR("gemm plan for M %d N %d K %d failed", T, ln->N, ln->K);
            return -1;
        }
        return ak_gemm_dev_ex(s->ctx, qx, &ln->qw, pl.path, 1, y, err);
    }
    return ak_ops_linear(s->ops, xin, T, ln->K, ln->w16, ln->N, y, err);
}

/* Forward into s->logits rows 0 .. T-logits_from-1 (device), or no logits when logits_from == T. */
static int forward_dev(ae_engine *e, const int *tokens, int T, int pos, int logits_from, char *err) {
    cu_state *s = e->dev;
    const ae_config *c = &e->m->cfg;
    const aq_mode *m = &e->o.mode;
    if (T < 1 || pos < 0 || pos + T > s->max_seq) {
        SETERR("forward: %d tokens at position %d exceed the engine's %d positions", T, pos, s->max_seq);
        return -1;
    }
    if (ak_ops_embed(s->ops, tokens, T, s->emb, s->V, s->dim, s->x, err)) return -1;
    const uint16_t *xin;
    ak_dqt *qx;
    for (int l = 0; l < c->n_layers; l++) {
        cu_layer *L = &s->L[l];
        if (l == 0) {
            if (ak_ops_rmsnorm(s->ops, s->x, L->attn_norm, T, s->dim, c->rms_eps, s->xb, err)) return -1;
        } else if (ak_ops_add_rmsnorm(s->ops, s->x, s->t1, L->attn_norm, T, s->dim, c->rms_eps, s->xb, err)) {
            return -1;
        }
        if (site_in(s, l, AE_SITE_ATTN_IN, s->xb, T, s->dim, &xin, &qx, m, err) ||
            lin_run(s, &L->lin[L_Q], xin, qx, T, s->q, err) || lin_run(s, &L->lin[L_K], xin, qx, T, s->k, err) ||
            lin_run(s, &L->lin[L_V], xin, qx, T, s->v, err))
            return -1;
        if (ak_ops_rope(s->ops, s->q, s->q_dim, s->nh, s->k, s->kv_dim, s->nkv, T, pos, err)) return -1;
        if (ak_ops_kv_store(s->ops, s->k, s->v, s->kv_dim, T, pos, s->nkv, s->hd, e->o.kv4, L->kc, L->vc, s->max_seq,
                            err))
            return -1;
        if (ak_ops_attention(s->ops, AK_ATTN_AUTO, s->q, s->q_dim, L->kc, L->vc, s->max_seq, T, pos, s->nh, s->nkv,
                             s->hd, s->att, err))
            return -1;
        if (site_in(s, l, AE_SITE_ATTN_OUT, s->att, T, s->q_dim, &xin, &qx, m, err) ||
            lin_run(s, &L->lin[L_O], xin, qx, T, s->t1, err))
            return -1;
        if (ak_ops_add_rmsnorm(s->ops, s->x, s->t1, L->ffn_norm, T, s->dim, c->rms_eps, s->xb, err)) return -1;
        if (site_in(s, l, AE_SITE_MLP_IN, s->xb, T, s->dim, &xin, &qx, m, err) ||
            lin_run(s, &L->lin[L_GATE], xin, qx, T, s->hb, err) || lin_run(s, &L->lin[L_UP], xin, qx, T, s->hb2, err))
            return -1;
        if (ak_ops_swiglu(s->ops, s->hb, s->hb2, s->hid, T, s->hid, s->hb, err)) return -1;
        if (site_in(s, l, AE_SITE_MLP_OUT, s->hb, T, s->hid, &xin, &qx, m, err) ||
            lin_run(s, &L->lin[L_DOWN], xin, qx, T, s->t1, err))
            return -1;
    }
    if (logits_from < T) {
        if (ak_ops_add_rmsnorm(s->ops, s->x, s->t1, s->final_norm, T, s->dim, c->rms_eps, s->xb, err)) return -1;
        if (ak_ops_linear_f32(s->ops, s->xb + (size_t)logits_from * s->dim, T - logits_from, s->dim, s->lm_head, s->V,
                              s->logits, err))
            return -1;
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
    if (forward_dev(e, tokens, T, pos, logits_from, err)) return -1;
    if (logits_from < T)
        return ak_ops_download(s->ops, logits, s->logits, (size_t)(T - logits_from) * s->V * sizeof(float), err);
    return 0;
}

static void cu_truncate(ae_engine *e, int pos) { (void)e; (void)pos; /* the cache is overwritten in order */ }

/* The reference store: device log-probs owned by a context of its own, so that it outlives the
 * engine that filled it; the reference argmax per position on the host. */
typedef struct { ak_ops *ops; float *logp; } cu_store;

static int cu_rs_alloc(ae_engine *e, ae_refstore *rs, char *err) {
    size_t n;
    if (ax_mul3_size((size_t)rs->n_windows, (size_t)(rs->seqlen - 1), (size_t)rs->vocab, &n,
                     "reference log-probs", err))
        return -1;
    cu_store *cs = calloc(1, sizeof *cs);
    rs->argmax = malloc((size_t)rs->n_windows * (size_t)(rs->seqlen - 1) * sizeof(int));
    if (!cs || !rs->argmax) { free(cs); SETERR("reference store: out of memory"); return -1; }
    rs->dev = cs;
    if (ak_ops_new(0, &cs->ops, err)) return -1;
    char what[160];
    snprintf(what, sizeof what, "reference log-probs (%d windows x %d positions x vocab %d, fp32)", rs->n_windows,
             rs->seqlen - 1, rs->vocab);
    if (ak_ops_alloc(cs->ops, n * sizeof(float), (void **)&cs->logp, what, err)) return -1;
    (void)e;
    return 0;
}

static void cu_rs_release(ae_refstore *rs) {
    cu_store *cs = rs->dev;
    if (cs) {
        if (cs->ops) {
            ak_ops_dfree(cs->ops, cs->logp);
            ak_ops_free(cs->ops);
        }
        free(cs);
    }
    free(rs->argmax);
    rs->dev = NULL;
    rs->argmax = NULL;
}

static int cu_score(ae_engine *e, const int *tokens, int T, ae_refstore *rs, long window, int store, double *nll,
                    double *kld, int *same, char *err) {
    cu_state *s = e->dev;
    e->pos = 0;
    if (forward_dev(e, tokens, T, 0, 0, err)) return -1;
    int32_t *am = malloc((size_t)T * sizeof(int32_t));
    if (!am) { SETERR("out of memory"); return -1; }
    int rc = -1;
    const int32_t *targets = (const int32_t *)tokens + 1;
    if (!rs) {
        rc = ak_ops_score(s->ops, s->logits, s->V, T - 1, s->V, targets, NULL, 0, AK_OPS_REF_LOGP, nll, am, NULL,
                          NULL, err);
    } else {
        cu_store *cs = rs->dev;
        float *slot = cs->logp + (size_t)window * (size_t)(T - 1) * (size_t)s->V;
        int *ram = rs->argmax + (size_t)window * (size_t)(T - 1);
        if (store) {
            rc = ak_ops_score(s->ops, s->logits, s->V, T - 1, s->V, targets, NULL, 0, AK_OPS_REF_LOGP, nll, am, NULL,
                              NULL, err);
            if (!rc) rc = ak_ops_logprobs(s->ops, s->logits, s->V, T - 1, s->V, slot, s->V, NULL, err);
            if (!rc) for (int t = 0; t < T - 1; t++) ram[t] = am[t];
        } else {
            rc = ak_ops_score(s->ops, s->logits, s->V, T - 1, s->V, targets, slot, s->V, AK_OPS_REF_LOGP, nll, am, kld,
                              NULL, err);
            if (!rc && same) for (int t = 0; t < T - 1; t++) same[t] = am[t] == ram[t];
        }
    }
    free(am);
    if (rc) return -1;
    e->pos = T;
    return 0;
}

/* Sequence by sequence with the shared prefix's KV cache kept (as the cpu backend), logits scored on
 * the device (ak_ops_score) for the rows from the first scored position on. */
static int cu_loglik(ae_engine *e, const int *tokens, const int *offsets, int n_seqs, const int *targets,
                     double *logp, int *greedy, char *err) {
    cu_state *s = e->dev;
    int maxlen = 0;
    for (int i = 0; i < n_seqs; i++)
        if (offsets[i + 1] - offsets[i] > maxlen) maxlen = offsets[i + 1] - offsets[i];
    double *nll = malloc((size_t)maxlen * sizeof(double));
    int32_t *am = malloc((size_t)maxlen * sizeof(int32_t)), *tg = malloc((size_t)maxlen * sizeof(int32_t));
    if (!nll || !am || !tg) { free(nll); free(am); free(tg); SETERR("out of memory"); return -1; }
    if (e->last_cap < maxlen) {
        int *p = realloc(e->last_seq, (size_t)maxlen * sizeof(int));
        if (!p) { free(nll); free(am); free(tg); SETERR("out of memory"); return -1; }
        e->last_seq = p;
        e->last_cap = maxlen;
    }
    int rc = -1;
    for (int i = 0; i < n_seqs; i++) {
        const int *sq = tokens + offsets[i], *tq = targets + offsets[i];
        int L = offsets[i + 1] - offsets[i];
        int first = -1;
        for (int j = 0; j < L; j++) if (tq[j] >= 0) { first = j; break; }
        int p = 0;
        int cached = e->pos < e->last_len ? e->pos : e->last_len;
        while (p < cached && p < L - 1 && e->last_seq[p] == sq[p]) p++;
        if (first >= 0 && first < p) p = first;
        int from = first < 0 ? L : first;     /* logits rows from `from` (relative to the call: from - p) */
        e->pos = p;
        if (forward_dev(e, sq + p, L - p, p, from - p, err)) { e->last_len = 0; e->pos = 0; goto out; }
        e->pos = L;
        memcpy(e->last_seq, sq, (size_t)L * sizeof(int));
        e->last_len = L;
        if (first < 0) continue;
        int nrow = L - from;
        for (int j = 0; j < nrow; j++) tg[j] = tq[from + j] >= 0 ? tq[from + j] : 0;
        char e2[AX_ERR_LEN];
        if (ak_ops_score(s->ops, s->logits, s->V, nrow, s->V, tg, NULL, 0, AK_OPS_REF_LOGP, nll, am, NULL, NULL, e2)) {
            SETERR("sequence %d (mode %s): %s", i, e->o.mode.name, e2);
            goto out;
        }
        for (int j = 0; j < nrow; j++) {
            if (tq[from + j] < 0) continue;
            logp[offsets[i] + from + j] = -nll[j];
            greedy[offsets[i] + from + j] = am[j] == tq[from + j];
        }
    }
    rc = 0;
out:
    free(nll); free(am); free(tg);
    return rc;
}

static int cu_probe(ae_engine *e, int layer, int proj, const uint16_t *x, int T, uint16_t *y, char *err) {
    cu_state *s = e->dev;
    const cu_lin *ln = &s->L[layer].lin[proj];
    const uint16_t *xin;
    ak_dqt *qx;
    uint16_t *dx = proj == L_DOWN ? s->hb : proj == L_O ? s->att : s->xb;   /* the site's input buffer */
    uint16_t *dy = (uint16_t *)s->logits;   /* [T, vocab] fp32 holds any [T, N] fp16 output of a projection */
    if ((size_t)ln->N * 2 > (size_t)s->V * 4) { SETERR("probe: output wider than the logits buffer"); return -1; }
    if (ak_ops_upload(s->ops, dx, x, (size_t)T * ln->K * 2, err)) return -1;
    if (site_in(s, layer, lin_site[proj], dx, T, ln->K, &xin, &qx, &e->o.mode, err) ||
        lin_run(s, ln, xin, qx, T, dy, err))
        return -1;
    if (ak_ctx_check(s->ctx, err) || ak_ops_sync(s->ops, err)) return -1;
    return ak_ops_download(s->ops, y, dy, (size_t)T * ln->N * 2, err);
}

static void cu_describe(const ae_engine *e, char *buf, size_t len) {
    (void)e;
    ak_device_describe(buf, len);
}

const ae_backend ae_backend_cuda = {"cuda", cu_build, cu_destroy, cu_forward, cu_truncate, cu_rs_alloc,
                                    cu_rs_release, cu_score, cu_describe, cu_loglik, cu_probe};
