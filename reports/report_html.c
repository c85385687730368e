/* report_html.c — the report page (reports/report.h ar_report_write_html): one self-contained XHTML
 * file (no network: inline CSS, inline SVG) with plots drawn by PLplot's SVG driver into temporary
 * files whose text is embedded. */
#include "report.h"
#include "report_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <plplot.h>
#include "ax_util.h"

typedef struct { char *s; size_t n, cap; int oom; } sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 65536;
        while (c < b->n + n + 1) c *= 2;
        char *t = realloc(b->s, c);
        if (!t) { b->oom = 1; return; }
        b->s = t;
        b->cap = c;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}
__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) { sb_put(b, tmp, (size_t)n); return; }
    char *big = malloc((size_t)n + 1);
    if (!big) { b->oom = 1; return; }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_put(b, big, (size_t)n);
    free(big);
}
/* XML-escaped text */
static void sb_esc(sbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': sb_put(b, "&lt;", 4); break;
        case '>': sb_put(b, "&gt;", 4); break;
        case '&': sb_put(b, "&amp;", 5); break;
        case '"': sb_put(b, "&quot;", 6); break;
        default: sb_put(b, s, 1);
        }
    }
}
static void sb_num(sbuf *b, double v, const char *fmt) {
    if (!isfinite(v)) sb_put(b, "<span class=\"miss\">missing</span>", 33);
    else sb_printf(b, fmt, v);
}

/* ---- PLplot SVG ------------------------------------------------------------------------------ */

/* Colours of cmap0: 0 background white, 1 black, 2 grey, 3.. series. */
static const int pal[][3] = {{255, 255, 255}, {0, 0, 0}, {150, 150, 150}, {31, 119, 180}, {214, 39, 40},
                             {44, 160, 44}, {255, 127, 14}, {148, 103, 189}, {140, 86, 75}, {227, 119, 194},
                             {23, 190, 207}, {188, 189, 34}};
#define NPAL (int)(sizeof pal / sizeof pal[0])

static int svg_begin(char *tmp, size_t len, int w, int h, char *err) {
    const char *dir = getenv("TMPDIR");
    snprintf(tmp, len, "%s/apex4-report-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(tmp);
    if (fd < 0) { ax_seterr(err, "cannot create a temporary file for a plot in %s", dir && *dir ? dir : "/tmp"); return -1; }
    close(fd);
    plsdev("svg");
    plsfnam(tmp);
    plspage(72.0, 72.0, w, h, 0, 0);
    plscolbg(255, 255, 255);
    plinit();
    pladv(0);
    for (int i = 0; i < NPAL; i++) plscol0(i, pal[i][0], pal[i][1], pal[i][2]);
    plfont(1);
    plschr(0, 0.9);
    return 0;
}

/* Finish the plot, embed the <svg> element (prolog stripped) into b, remove the file. */
static int svg_end(const char *tmp, sbuf *b, char *err) {
    plend();
    char *text = NULL;
    size_t len = 0;
    int rc = ax_read_file(tmp, &text, &len, err);
    unlink(tmp);
    if (rc) return -1;
    const char *s = strstr(text, "<svg");
    if (!s) { free(text); ax_seterr(err, "PLplot wrote no <svg> element"); return -1; }
    sb_put(b, "<div class=\"plot\">", 18);
    sb_put(b, s, len - (size_t)(s - text));
    sb_put(b, "</div>\n", 7);
    free(text);
    return 0;
}

static void frame(double x0, double x1, double y0, double y1, int logx, const char *xl, const char *yl, const char *title) {
    plcol0(1);
    plvpor(0.10, 0.95, 0.13, 0.90);
    plwind(x0, x1, y0, y1);
    plcol0(2);
    plbox(logx ? "ghlnst" : "ghnst", 0, 0, "ghnstv", 0, 0);
    plcol0(1);
    plbox(logx ? "bclnst" : "bcnst", 0, 0, "bcnstv", 0, 0);
    pllab(xl, yl, title);
}

/* A legend entry at the top-left in viewport-relative rows. */
static void legend_item(int row, int col, const char *sym, const char *text, int line) {
    PLFLT x0, x1, y0, y1;
    plgvpw(&x0, &x1, &y0, &y1);
    const double lx = x0 + 0.03 * (x1 - x0), ly = y1 - (0.06 + 0.055 * row) * (y1 - y0);
    plcol0(col);
    if (line) {
        PLFLT xs[2] = {lx - 0.01 * (x1 - x0), lx + 0.03 * (x1 - x0)}, ys[2] = {ly, ly};
        pljoin(xs[0], ys[0], xs[1], ys[1]);
    }
    if (sym) { PLFLT px = lx + 0.01 * (x1 - x0), py = ly; plstring(1, &px, &py, sym); }
    plcol0(1);
    plptex(lx + 0.045 * (x1 - x0), ly, 1, 0, 0, text);
}

/* log10 axes: x values are passed as log10 */
static int plot_rho(const ar_report *r, sbuf *b, char *err) {
    char tmp[AX_PATH_LEN];
    if (svg_begin(tmp, sizeof tmp, 760, 440, err)) return -1;
    ar_mode_cost c;
    ar_mode_cost_of("w4a4-g128", &c, NULL);
    const ar_gpu *ref = &r->gpus.g[r->ref_gpu];
    double ymax = 2.8;
    for (int s = 0; s < r->nsel; s++) {
        const double sp = ar_pred_speedup(r, &r->gpus.g[r->sel[s]], &c, r->prefill_m, 0);
        if (sp * 1.15 > ymax) ymax = sp * 1.15;
    }
    frame(log10(3.0), log10(400.0), 0, ymax, 1, "rho = dense INT4 (else INT8) tensor-core peak / FP32 peak",
          "speedup over FP16", "w4a4-g128 vs FP16, prefill (LLaMA-2-7B + 70B layers)");
    /* model curve: the reference GPU's row with its FP32 rate varied */
    enum { NC = 60 };
    PLFLT xs[NC], ys[NC];
    for (int i = 0; i < NC; i++) {
        ar_gpu g = *ref;
        const double rho = pow(10, log10(3.0) + i * (log10(400.0) - log10(3.0)) / (NC - 1));
        g.fp32_tflops.v = (g.rho_int4 ? g.tc_int4_tops.v : g.tc_int8_tops.v) / rho;
        if (isfinite(g.i2f_tops.v)) g.i2f_tops.v = ref->i2f_tops.v * ref->rho / rho;
        xs[i] = log10(rho);
        ys[i] = ar_pred_speedup(r, &g, &c, r->prefill_m, 0);
    }
    plcol0(3);
    plwidth(2);
    plline(NC, xs, ys);
    plwidth(1);
    plcol0(2);
    pllsty(2);
    pljoin(log10(3.0), 1.0, log10(400.0), 1.0);
    pllsty(1);
    /* paper ranges */
    for (int i = 0; i < AR_NPAPER; i++) {
        const ar_gpu *g = ar_gpus_find(&r->gpus, ar_paper_points[i].gpu);
        if (!g) continue;
        plcol0(4);
        plwidth(3);
        pljoin(log10(g->rho) + 0.012, ar_paper_points[i].lo, log10(g->rho) + 0.012, ar_paper_points[i].hi);
        plwidth(1);
    }
    /* GPUs */
    for (int s = 0; s < r->nsel; s++) {
        const ar_gpu *g = &r->gpus.g[r->sel[s]];
        PLFLT x = log10(g->rho), y = ar_pred_speedup(r, g, &c, r->prefill_m, 0);
        plcol0(r->gpu_fitted[r->sel[s]] ? 5 : 1);
        plstring(1, &x, &y, r->gpu_fitted[r->sel[s]] ? "#(850)" : "#(840)");
        plcol0(1);
        plschr(0, 0.7);
        plptex(x, y + 0.03 * ymax + (s % 2) * 0.035 * ymax, 1, 0, 0.5, g->name);
        plschr(0, 0.9);
    }
    legend_item(0, 3, NULL, "model: reference GPU row, FP32 rate varied", 1);
    legend_item(1, 1, "#(840)", "GPU from the table (predicted)", 0);
    legend_item(2, 5, "#(850)", "GPU with bench measurements (fitted)", 0);
    legend_item(3, 4, NULL, "APEX4 paper, measured range", 1);
    return svg_end(tmp, b, err);
}

static int plot_emulation(const ar_report *r, sbuf *b, char *err) {
    char tmp[AX_PATH_LEN];
    if (svg_begin(tmp, sizeof tmp, 760, 440, err)) return -1;
    const ar_gpu *g = &r->gpus.g[r->emul.n ? r->emul.gpu : r->ref_gpu];
    const ar_params *p = &r->gpu_params[r->emul.n ? r->emul.gpu : r->ref_gpu];
    const int M = r->emul.n ? r->emul.M : 2048, N = r->emul.n ? r->emul.N : 4096, K = r->emul.n ? r->emul.K : 4096;
    static const char *const em[] = {"w4a4-g128", "w4a4-g64", "w4a4-pc", "w4a4-mixed-g128"};
    ar_mode_cost f16;
    ar_mode_cost_of("fp16", &f16, NULL);
    double ymax = 0.5;
    for (int i = 0; i < r->emul.n; i++) if (r->emul.p[i].t16 / r->emul.p[i].t * 1.2 > ymax) ymax = r->emul.p[i].t16 / r->emul.p[i].t * 1.2;
    for (int m = 0; m < 4; m++) {
        ar_mode_cost c;
        ar_mode_cost_of(em[m], &c, NULL);
        const double sp = ar_predict(p, g, &f16, M, N, K, 0) / ar_predict(p, g, &c, M, N, K, 0);
        if (sp * 1.2 > ymax) ymax = sp * 1.2;
    }
    char title[160];
    snprintf(title, sizeof title, "rho emulation on %s, M=%d N=%d K=%d%s", g->name, M, N, K, r->emul.n ? "" : " (not measured: model only)");
    frame(log10(g->rho * 0.8), log10(g->rho * 6.0), 0, ymax, 1, "emulated rho' = rho (1 + k c)", "speedup over FP16", title);
    for (int m = 0; m < 4; m++) {
        ar_mode_cost c;
        ar_mode_cost_of(em[m], &c, NULL);
        const double cc = ar_emul_c(g, &c);
        enum { NC = 40 };
        PLFLT xs[NC], ys[NC];
        for (int i = 0; i < NC; i++) {
            const double k = 16.0 * i / (NC - 1);
            xs[i] = log10(g->rho * (1 + k * cc));
            ys[i] = ar_predict(p, g, &f16, M, N, K, 0) / ar_predict(p, g, &c, M, N, K, k);
        }
        plcol0(3 + m);
        pllsty(m == 2 ? 2 : 1);
        plline(NC, xs, ys);
        pllsty(1);
        for (int i = 0; i < r->emul.n; i++) {
            if (strcmp(r->emul.p[i].mode, em[m])) continue;
            PLFLT x = log10(g->rho * (1 + r->emul.p[i].k * cc)), y = r->emul.p[i].t16 / r->emul.p[i].t;
            plstring(1, &x, &y, "#(850)");
        }
        char lab[96];
        snprintf(lab, sizeof lab, "%s (c = %.2f)", em[m], cc);
        legend_item(m, 3 + m, r->emul.n ? "#(850)" : NULL, lab, 1);
    }
    plcol0(1);
    legend_item(4, 1, NULL, r->emul.n ? "lines: model; dots: measured" : "lines: model (no bench rho file)", 0);
    return svg_end(tmp, b, err);
}

static int plot_pareto(const ar_report *r, int s, sbuf *b, char *err) {
    char tmp[AX_PATH_LEN];
    if (svg_begin(tmp, sizeof tmp, 600, 400, err)) return -1;
    const ar_gpu_result *gr = &r->res[s];
    double xmax = 1.5, ymax = 0;
    for (int m = 0; m < r->nmodes; m++) {
        for (int ph = 0; ph < 2; ph++) if (gr->sp[ph][m][2] * 1.15 > xmax) xmax = gr->sp[ph][m][2] * 1.15;
        for (int i = 0; i < r->nacc; i++)
            if (r->acc[i].model == r->acc_model && !strcmp(r->acc[i].mode, r->modes[m].mode)) {
                const double a = r->use_dppl ? r->acc[i].dppl : r->acc[i].kld;
                if (isfinite(a) && a * 1.15 > ymax) ymax = a * 1.15;
            }
    }
    if (r->budget * 1.15 > ymax) ymax = r->budget * 1.15;
    if (ymax <= 0) ymax = 1;
    ymax *= 1.3;   /* room for the legend */
    char title[160];
    snprintf(title, sizeof title, "%s (rho %.0f): %s of %s", r->gpus.g[r->sel[s]].name, r->gpus.g[r->sel[s]].rho,
             r->use_dppl ? "dppl" : "KLD", r->acc_model >= 0 ? r->models[r->acc_model] : "(no results)");
    frame(0, xmax, 0, ymax, 0, "speedup over FP16 (LLaMA-2-7B + 70B layers)", r->use_dppl ? "ppl - ppl(FP16)" : "KL divergence vs FP16", title);
    plcol0(4);
    pllsty(2);
    pljoin(0, r->budget, xmax, r->budget);
    pllsty(1);
    /* front (prefill) as a step line, sorted by speedup */
    int idx[AR_MAX_MODES + 1], n = 0;
    for (int m = 0; m < r->nmodes; m++) if (gr->front[0][m]) idx[n++] = m;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && gr->sp[0][idx[j]][2] < gr->sp[0][idx[j - 1]][2]; j--) { int t = idx[j]; idx[j] = idx[j - 1]; idx[j - 1] = t; }
    PLFLT fx[AR_MAX_MODES + 1], fy[AR_MAX_MODES + 1];
    fx[0] = 1; fy[0] = 0;
    int nf = 1;
    for (int i = 0; i < n; i++) {
        for (int a = 0; a < r->nacc; a++)
            if (r->acc[a].model == r->acc_model && !strcmp(r->acc[a].mode, r->modes[idx[i]].mode)) {
                fx[nf] = gr->sp[0][idx[i]][2];
                fy[nf] = r->use_dppl ? r->acc[a].dppl : r->acc[a].kld;
                if (fx[nf] > fx[nf - 1]) nf++;
            }
    }
    plcol0(3);
    plwidth(2);
    plline(nf, fx, fy);
    plwidth(1);
    PLFLT x = 1, y = 0;
    plcol0(1);
    plstring(1, &x, &y, "#(850)");
    plptex(x, y + 0.03 * ymax, 1, 0, 0.5, "fp16");
    for (int m = 0; m < r->nmodes; m++) {
        double a = NAN;
        for (int i = 0; i < r->nacc; i++)
            if (r->acc[i].model == r->acc_model && !strcmp(r->acc[i].mode, r->modes[m].mode)) a = r->use_dppl ? r->acc[i].dppl : r->acc[i].kld;
        if (!isfinite(a)) continue;
        for (int ph = 0; ph < 2; ph++) {
            PLFLT px = gr->sp[ph][m][2], py = a;
            plcol0(ph ? 6 : (gr->front[0][m] ? 3 : 1));
            plstring(1, &px, &py, ph ? (gr->meas[ph][m] ? "#(851)" : "#(841)") : (gr->meas[ph][m] ? "#(850)" : "#(840)"));
        }
        PLFLT px = gr->sp[0][m][2], py = a;
        plcol0(1);
        plschr(0, 0.75);
        plptex(px, py + 0.025 * ymax, 1, 0, 0.5, r->modes[m].mode);
        plschr(0, 0.9);
    }
    const int meas = r->gpu_fitted[r->sel[s]];
    legend_item(0, 1, meas ? "#(850)" : "#(840)", meas ? "prefill (measured)" : "prefill (predicted)", 0);
    legend_item(1, 6, meas ? "#(851)" : "#(841)", meas ? "decode (measured)" : "decode (predicted)", 0);
    legend_item(2, 3, NULL, "Pareto front (prefill)", 1);
    legend_item(3, 4, NULL, "budget", 1);
    return svg_end(tmp, b, err);
}

static const char *css =
    "body{font-family:DejaVu Sans,Arial,sans-serif;margin:24px;max-width:1300px;color:#222}"
    "h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
    "th{background:#f0f0f0}td.l,th.l{text-align:left}.miss{color:#b00}.pred{color:#666;font-style:italic}"
    ".plot{display:inline-block;margin:4px}.plot svg{width:600px;height:auto}.small{font-size:12px;color:#555}"
    ".rec{font-weight:bold}";

static void gpu_table(const ar_report *r, sbuf *b) {
    sb_printf(b, "<table><tr><th class=\"l\">GPU</th><th>arch</th><th>SMs</th><th>boost MHz</th><th>L2 MB</th><th>DRAM GB/s</th>"
                 "<th>FP32 TFLOPS</th><th>FP16 TC TFLOPS</th><th>INT8 TC TOPS</th><th>INT4 TC TOPS</th><th>FP8 TC TFLOPS</th>"
                 "<th>I2F 10^12/s</th><th>rho</th><th class=\"l\">note</th></tr>\n");
    for (int s = 0; s < r->nsel; s++) {
        const ar_gpu *g = &r->gpus.g[r->sel[s]];
        sb_printf(b, "<tr><td class=\"l\">");
        sb_esc(b, g->name);
        sb_printf(b, "</td><td>");
        sb_esc(b, g->arch);
        sb_printf(b, "</td>");
        const ar_fig *f[] = {&g->sms, &g->boost_mhz, &g->l2_mb, &g->dram_gbs, &g->fp32_tflops, &g->tc_fp16_tflops,
                             &g->tc_int8_tops, &g->tc_int4_tops, &g->tc_fp8_tflops, &g->i2f_tops};
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
            sb_printf(b, "<td>");
            if (isfinite(f[i]->v)) sb_printf(b, "%g <sup>[%s]</sup>", f[i]->v, f[i]->src);
            else sb_printf(b, "&#8211; <sup>[%s]</sup>", f[i]->src);
            sb_printf(b, "</td>");
        }
        sb_printf(b, "<td><b>%.1f</b> (%s)</td><td class=\"l small\">", g->rho, g->rho_int4 ? "INT4" : "INT8");
        sb_esc(b, g->note);
        sb_printf(b, "</td></tr>\n");
    }
    sb_printf(b, "</table>\n<p class=\"small\">Sources: ");
    for (int i = 0; i < r->gpus.nsrc; i++) {
        sb_printf(b, "[%s] ", r->gpus.src_key[i]);
        sb_esc(b, r->gpus.src_text[i]);
        sb_printf(b, "%s", i + 1 < r->gpus.nsrc ? "; " : ".");
    }
    sb_printf(b, "</p>\n");
}

int ar_report_write_html(const ar_report *r, const char *path, char *err) {
    sbuf b = {0};
    int rc = -1;
    sb_printf(&b, "<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head><meta charset=\"utf-8\"/>"
                  "<title>apex4 report: W4A4 granularity on your GPU</title><style>%s</style></head>\n<body>\n", css);
    sb_printf(&b, "<h1>apex4 report: which W4A4 granularity pays off on which GPU</h1>\n<p class=\"small\">apex4 %s (%s). "
                  "Accuracy from <b>", APEX4_VERSION, APEX4_GIT_REV);
    sb_esc(&b, r->acc_model >= 0 ? r->models[r->acc_model] : "(no results)");
    sb_printf(&b, "</b>; budget %s &#8804; %g%s; speed at prefill M=%d and decode M=%d over the LLaMA-2-7B and -70B linear layers "
                  "(time-weighted by how often each layer occurs per block). Filled markers: measured; open: predicted by the model.</p>\n",
              r->use_dppl ? "&#916;ppl" : "KLD", r->budget, r->budget_default ? " (default)" : "", r->prefill_m, r->decode_m);
    /* decision table */
    sb_printf(&b, "<h2>Recommendation per GPU</h2>\n<table><tr><th class=\"l\">GPU</th><th>rho</th><th class=\"l\">prefill: mode</th>"
                  "<th>speedup</th><th class=\"l\">decode: mode</th><th>speedup</th><th class=\"l\">Pareto front (prefill)</th></tr>\n");
    for (int s = 0; s < r->nsel; s++) {
        const ar_gpu_result *gr = &r->res[s];
        sb_printf(&b, "<tr><td class=\"l\">");
        sb_esc(&b, r->gpus.g[r->sel[s]].name);
        sb_printf(&b, "</td><td>%.1f</td>", r->gpus.g[r->sel[s]].rho);
        for (int ph = 0; ph < 2; ph++) {
            const int m = gr->rec[ph];
            sb_printf(&b, "<td class=\"l rec\">%s</td><td%s>%.2fx%s</td>", m >= 0 ? r->modes[m].mode : "fp16",
                      m >= 0 && !gr->meas[ph][m] ? " class=\"pred\"" : "", m >= 0 ? gr->sp[ph][m][2] : 1.0,
                      m >= 0 && !gr->meas[ph][m] ? " (pred.)" : "");
        }
        sb_printf(&b, "<td class=\"l\">");
        for (int m = 0, first = 1; m < r->nmodes; m++)
            if (gr->front[0][m]) { sb_printf(&b, "%s%s", first ? "" : ", ", r->modes[m].mode); first = 0; }
        sb_printf(&b, "</td></tr>\n");
    }
    sb_printf(&b, "</table>\n");
    /* Pareto plots */
    sb_printf(&b, "<h2>Pareto fronts: speed against accuracy</h2>\n");
    for (int s = 0; s < r->nsel; s++) if (plot_pareto(r, s, &b, err)) goto out;
    /* speed table */
    sb_printf(&b, "<h2>Speedup over FP16 per GPU and mode</h2>\n<table><tr><th class=\"l\">GPU</th><th class=\"l\">phase</th>");
    for (int m = 0; m < r->nmodes; m++) sb_printf(&b, "<th>%s</th>", r->modes[m].mode);
    sb_printf(&b, "</tr>\n");
    for (int s = 0; s < r->nsel; s++)
        for (int ph = 0; ph < 2; ph++) {
            sb_printf(&b, "<tr><td class=\"l\">");
            sb_esc(&b, r->gpus.g[r->sel[s]].name);
            sb_printf(&b, "</td><td class=\"l\">%s M=%d</td>", ph ? "decode" : "prefill", ph ? r->decode_m : r->prefill_m);
            for (int m = 0; m < r->nmodes; m++)
                sb_printf(&b, "<td%s>%.2f</td>", r->res[s].meas[ph][m] ? "" : " class=\"pred\"", r->res[s].sp[ph][m][2]);
            sb_printf(&b, "</tr>\n");
        }
    sb_printf(&b, "</table><p class=\"small\">Italic grey: predicted by the speed model; plain: measured (bench files).</p>\n");
    /* accuracy */
    sb_printf(&b, "<h2>Accuracy (results files)</h2>\n<table><tr><th class=\"l\">model</th><th class=\"l\">mode</th><th>ppl</th>"
                  "<th>&#916;ppl vs FP16</th><th>KLD</th><th>top-1 agreement</th><th>zero-shot average</th></tr>\n");
    for (int i = 0; i < r->nacc; i++) {
        const ar_acc *a = &r->acc[i];
        sb_printf(&b, "<tr><td class=\"l\">");
        sb_esc(&b, r->models[a->model]);
        sb_printf(&b, "</td><td class=\"l\">");
        sb_esc(&b, a->mode);
        sb_printf(&b, "</td><td>");
        sb_num(&b, a->ppl, "%.3f");
        sb_printf(&b, "</td><td>");
        sb_num(&b, a->dppl, "%+.3f");
        sb_printf(&b, "</td><td>");
        sb_num(&b, a->kld, "%.4f");
        sb_printf(&b, "</td><td>");
        sb_num(&b, a->top1, "%.4f");
        sb_printf(&b, "</td><td>");
        sb_num(&b, a->zs_avg, "%.4f");
        sb_printf(&b, "</td></tr>\n");
    }
    sb_printf(&b, "</table><p class=\"small\">Files: ");
    for (int i = 0; i < r->nresults_files; i++) { sb_esc(&b, r->results_files[i]); sb_printf(&b, "%s", i + 1 < r->nresults_files ? ", " : ""); }
    sb_printf(&b, ". &#916;ppl is against the FP16 row of the same file. A number a file does not have is shown as missing, never estimated.</p>\n");
    /* model */
    const ar_params *p = &r->params;
    sb_printf(&b, "<h2>Speed model and its validation</h2>\n"
                  "<p>Time of one GEMM Y[M,N] = X[M,K]&#183;W[N,K]<sup>T</sup> of a mode on a GPU: "
                  "<code>t = t<sub>launch</sub> + max(T<sub>tc</sub> + T<sub>core</sub>, T<sub>mem</sub>) + T<sub>split</sub></code>, with "
                  "T<sub>tc</sub> = 2&#183;M&#8242;&#183;N&#183;K / (P<sub>tc</sub>&#183;&#951;<sub>tc</sub>) (P<sub>tc</sub> the GPU's dense INT4 tensor-core "
                  "peak for 4-bit modes where it has INT4 tensor cores, else INT8; 8-bit codes &#215;1/&#951;<sub>tc8</sub>; M&#8242; = M rounded up "
                  "to the 16-row mma tile; the M &#8804; 16 kernel runs a 128-code span once per group it holds), "
                  "T<sub>core</sub> = M&#8242;&#183;N&#183;G&#183;(e<sub>core</sub>/F + e<sub>cvt</sub>/C) / &#951;<sub>core</sub> (G groups along K, "
                  "e<sub>core</sub> CUDA-core operations and e<sub>cvt</sub> int&#8594;float conversions per group and output from the mode row, "
                  "F = FP32 instruction rate, C = conversion rate), T<sub>mem</sub> = bytes / (BW&#183;&#951;<sub>mem</sub>) (codes, scales, fp16 output), "
                  "a factor for the 64&#215;128 tile configuration and the split-K combine of the launch planner. FP16 is cuBLAS: "
                  "<code>t<sub>0,f16</sub> + max(2MNK/(P<sub>fp16</sub>&#183;&#951;<sub>f16</sub>), bytes/(BW&#183;&#951;<sub>mem</sub>))</code>.</p>\n");
    sb_printf(&b, "<p>Fitted on %d measured points of ", r->bench[0].n);
    sb_esc(&b, r->gpus.g[r->ref_gpu].name);
    sb_printf(&b, " (");
    sb_esc(&b, r->bench[0].path);
    sb_printf(&b, ") by least squares in log time: &#951;<sub>tc</sub> = %.3f, &#951;<sub>tc8</sub> = %.3f, &#951;<sub>core</sub> = %.3f, "
                  "&#951;<sub>mem</sub> = %.3f, t<sub>launch</sub> = %.1f &#181;s (M &#8804; 16) / %.1f &#181;s (tiles), 64&#215;128 factor %.2f, "
                  "overlap %.3f, &#951;<sub>f16</sub> = %.3f, t<sub>0,f16</sub> = %.1f &#181;s; RMS log error %.3f.</p>\n",
              p->eta_tc, p->eta_tc8, p->eta_core, p->eta_mem, p->t0 * 1e6, p->t1 * 1e6, p->mid, p->overlap, p->eta_f16,
              p->t0_f16 * 1e6, r->rms);
    sb_printf(&b, "<p><b>Held-out validation</b>: fitted on one half of the (mode, shape) points (sorted by mode, N, K, M; even positions), "
                  "the median absolute error on the other half (%d points) is <b>%.1f%%</b> (max %.1f%%).</p>\n",
              r->val_nheld, 100 * r->val_median, 100 * r->val_max);
    sb_printf(&b, "<table><tr><th class=\"l\">APEX4 paper point</th><th class=\"l\">mode</th><th>rho</th><th>paper (measured)</th>"
                  "<th>predicted</th><th>predicted / paper midpoint</th></tr>\n");
    for (int i = 0; i < AR_NPAPER; i++) {
        const ar_paper_point *q = &ar_paper_points[i];
        const ar_gpu *g = ar_gpus_find(&r->gpus, q->gpu);
        const double pr = ar_paper_pred(r, q);
        sb_printf(&b, "<tr><td class=\"l\">%s</td><td class=\"l\">%s</td><td>%.0f</td><td>%.2f&#8211;%.2fx</td><td>%.2fx</td><td>%.2f</td></tr>\n",
                  q->gpu, q->mode, g ? g->rho : NAN, q->lo, q->hi, pr, pr / (0.5 * (q->lo + q->hi)));
    }
    sb_printf(&b, "</table>\n");
    if (plot_rho(r, &b, err)) goto out;
    sb_printf(&b, "<h2>rho emulation (measured curve)</h2>\n");
    if (r->emul.n) {
        sb_printf(&b, "<p>From ");
        sb_esc(&b, r->emul.path);
        sb_printf(&b, ": the kernel with k extra dependent FP32 operations per group in the epilogue (benchmark only), which a GPU with "
                      "rho&#8242; = rho&#183;(1 + k&#183;c) would see; c = 1 / (the mode's epilogue operations per group, conversions at their FP32 cost).</p>\n");
    } else
        sb_printf(&b, "<p><b>Not measured</b>: no <code>bench rho</code> file among --bench (run <code>apex4 bench rho --out "
                      "reports/bench/rho-emulation-h200.json</code> on the GPU). The plot shows the model's curves only.</p>\n");
    if (plot_emulation(r, &b, err)) goto out;
    sb_printf(&b, "<h2>GPU table</h2>\n");
    gpu_table(r, &b);
    sb_printf(&b, "<h2>Limits of the model</h2>\n<ul>"
                  "<li>The efficiencies are fitted on one GPU (the bench files' device) and reused for every other row: a GPU whose "
                  "kernels reach a different fraction of its peaks (another architecture, the native INT4 path, another compiler) is "
                  "predicted with the reference GPU's efficiencies; the paper points above show how far that lands.</li>"
                  "<li>It models the apex4 kernels (mma.sync, the magic int&#8594;float conversion on 4-bit codes); the paper's kernels "
                  "(e.g. I2F at 16/clk/SM on Ampere) have a costlier epilogue, so predictions for high-rho GPUs are optimistic for them.</li>"
                  "<li>Decode (M &#8804; 16) times are launch- and latency-bound (errors up to ~25%% there); the held-out median mixes all M.</li>"
                  "<li>Datasheet peaks: GeForce FP32 counts dual-issue lanes; L40S's INT4 = INT8 row gives rho 8 (a measured INT4 rate would likely give 16).</li>"
                  "<li>Accuracy comes from the models in the results files (small models here), not from LLaMA-2-7B/70B whose shapes set the speed.</li></ul>\n");
    sb_printf(&b, "</body>\n</html>\n");
    if (b.oom) { ax_seterr(err, "out of memory building the page"); goto out; }
    {
        char tmp[AX_PATH_LEN];
        FILE *f = ax_atomic_open(path, tmp, err);
        if (!f) goto out;
        if (fwrite(b.s, 1, b.n, f) != b.n) {
            ax_atomic_abort(f, tmp);
            ax_seterr(err, "%s: write failed", path);
            goto out;
        }
        if (ax_atomic_commit(f, tmp, path, err)) goto out;
    }
    rc = 0;
out:
    free(b.s);
    return rc;
}
