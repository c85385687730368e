/* aq_mode.c — the table of quantization modes (STYLE.md "types and modes as data") and the parser of
 * mode names. Source: NUMERICS.md (granularities, mixed granularity, Atom-style W4Ax); Atom: Zhao et
 * al., "Atom: Low-bit Quantization for Efficient and Accurate LLM Serving" (MLSys 2024), §4 (outlier
 * reordering, 128 INT8 outlier channels, group 128, clip 0.9 activations / 0.85 weights). */
#include "aq.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

const char *const aq_standard_modes[] = {
    "fp16", "w4a16-g128", "w8a8", "w4a4-pc", "w4a4-g32", "w4a4-g64", "w4a4-g128", "w4a4-g256",
    "w4a4-mixed-g128", "atom-g128-o128", NULL,
};

/* Largest group size accepted: NUMERICS.md, (float)p is exact for g <= 262144 with 4-bit codes. */
#define AQ_MAX_GROUP 262144
#define AQ_MAX_OUTLIERS 65536

/* Parse a decimal integer without sign or leading zeros from *s into *v; advance *s. Returns 0, or
 * -1 when *s does not start with a digit or has a leading zero, -2 when the number exceeds
 * AQ_PARSE_MAX (digits are consumed up to the first non-digit either way, nothing overflows). */
#define AQ_PARSE_MAX 100000000L
static int parse_uint(const char **s, long *v) {
    const char *p = *s;
    if (*p < '0' || *p > '9') return -1;
    if (*p == '0' && p[1] >= '0' && p[1] <= '9') return -1;
    long x = 0;
    int big = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (!big) x = x * 10 + (*p - '0');
        if (x > AQ_PARSE_MAX) big = 1;
    }
    *s = p;
    *v = x;
    return big ? -2 : 0;
}

static void set(aq_mode *m, aq_kind kind, int wbits, int xbits, int group, float aw, float ax, int o) {
    memset(m, 0, sizeof *m);
    m->kind = kind; m->wbits = wbits; m->xbits = xbits; m->group = group;
    m->alpha_w = aw; m->alpha_x = ax; m->outliers = o;
    aq_operand *op[2] = {&m->w, &m->x};
    const int bits[2] = {wbits, xbits};
    const float clip[2] = {aw, ax};
    for (int i = 0; i < 2; i++) {
        aq_operand *d = op[i];
        d->bits = bits[i];
        d->clip = clip[i];
        if (bits[i] == 16) continue;   /* float operand: elem F16, gran/scale NONE, group 0 */
        d->elem = bits[i] == 4 ? AQ_ELEM_INT4 : AQ_ELEM_INT8;
        d->scale = AQ_SCALE_F16;
        d->gran = group ? AQ_GRAN_GROUP : AQ_GRAN_ROW;
        d->group = group;
    }
    if (kind == AQ_KIND_MIXED) {   /* per-token X; W: fp16 S per channel times u4 sub-scales per group */
        m->x.gran = AQ_GRAN_ROW;
        m->x.group = 0;
        m->w.scale = AQ_SCALE_F16_U4SUB;
    }
    m->epilogue = kind == AQ_KIND_MIXED ? AQ_EPI_MIXED : (kind == AQ_KIND_GROUP || kind == AQ_KIND_ATOM) ? AQ_EPI_GROUP
                                                                                                      : AQ_EPI_NONE;
    m->needs_calib = kind == AQ_KIND_ATOM;
}

/* The error for mode string s: the string is echoed with at most 40 characters, non-printable bytes
 * as '?' (it comes from the command line or a results file), then the reason and the valid forms. */
static int bad(const char *s, const char *why, char *err) {
    if (err) {
        char shown[48];
        size_t len = strlen(s), k = 0;
        for (; k < len && k < 40; k++) shown[k] = (s[k] >= 0x20 && s[k] < 0x7f) ? s[k] : '?';
        shown[k] = 0;
        int n = snprintf(err, AX_ERR_LEN, "unknown quantization mode '%s%s'%s%s%s; valid: ", shown,
                         len > 40 ? "..." : "", why ? " (" : "", why ? why : "", why ? ")" : "");
        for (int i = 0; aq_standard_modes[i] && n > 0 && n < AX_ERR_LEN; i++)
            n += snprintf(err + n, (size_t)(AX_ERR_LEN - n), "%s, ", aq_standard_modes[i]);
        if (n > 0 && n < AX_ERR_LEN)
            snprintf(err + n, (size_t)(AX_ERR_LEN - n),
                     "or the forms w4a16-gN, w4a4-gN, w4a4-mixed-gN, atom-gN-oO "
                     "(N even, 2..%d; O 0..%d)", AQ_MAX_GROUP, AQ_MAX_OUTLIERS);
    }
    return -1;
}

static int group_ok(long g) { return g >= 2 && g <= AQ_MAX_GROUP && g % 2 == 0; }

/* Group size N of a parametric form at *p (advanced); must be followed by `next` ("" = end). */
static int parse_group(const char *s, const char **p, const char *next, long *g, char *err) {
    int r = parse_uint(p, g);
    if (r == -2) return bad(s, "group size N too large: must be even, 2..262144", err);
    if (r < 0) return bad(s, "expected a decimal group size N without sign or leading zeros", err);
    if (strncmp(*p, next, strlen(next)) || (!*next && **p))
        return bad(s, *next ? "expected '-o' after the group size" : "unexpected characters after the group size", err);
    if (!group_ok(*g)) return bad(s, "group size N must be even, 2..262144", err);
    return 0;
}

int aq_mode_parse(const char *s, aq_mode *out, char *err) {
    aq_mode m;
    if (!s) return bad("(null)", NULL, err);
    if (strnlen(s, sizeof m.name) >= sizeof m.name) return bad(s, "name too long: at most 31 characters", err);
    const char *p;
    long g, o;
    if (!strcmp(s, "fp16")) {
        set(&m, AQ_KIND_FP16, 16, 16, 0, 1.0f, 1.0f, 0);
    } else if (!strcmp(s, "w8a8")) {
        set(&m, AQ_KIND_GROUP, 8, 8, 0, 1.0f, 1.0f, 0);
    } else if (!strcmp(s, "w4a4-pc")) {
        set(&m, AQ_KIND_GROUP, 4, 4, 0, 1.0f, 1.0f, 0);
    } else if (!strncmp(s, "w4a16-g", 7)) {
        p = s + 7;
        if (parse_group(s, &p, "", &g, err)) return -1;
        set(&m, AQ_KIND_WONLY, 4, 16, (int)g, 1.0f, 1.0f, 0);
    } else if (!strncmp(s, "w4a4-mixed-g", 12)) {
        p = s + 12;
        if (parse_group(s, &p, "", &g, err)) return -1;
        set(&m, AQ_KIND_MIXED, 4, 4, (int)g, 1.0f, 1.0f, 0);
    } else if (!strncmp(s, "w4a4-g", 6)) {
        p = s + 6;
        if (parse_group(s, &p, "", &g, err)) return -1;
        set(&m, AQ_KIND_GROUP, 4, 4, (int)g, 1.0f, 1.0f, 0);
    } else if (!strncmp(s, "atom-g", 6)) {
        p = s + 6;
        if (parse_group(s, &p, "-o", &g, err)) return -1;
        p += 2;
        int r = parse_uint(&p, &o);
        if (r == -2 || (r == 0 && o > AQ_MAX_OUTLIERS)) return bad(s, "outlier count O must be 0..65536", err);
        if (r < 0) return bad(s, "expected a decimal outlier count O without sign or leading zeros", err);
        if (*p) return bad(s, "unexpected characters after the outlier count", err);
        set(&m, AQ_KIND_ATOM, 4, 4, (int)g, 0.85f, 0.9f, (int)o);
    } else {
        return bad(s, NULL, err);
    }
    snprintf(m.name, sizeof m.name, "%s", s);
    *out = m;
    return 0;
}

int aq_mode_is_fp16(const aq_mode *m) {
    return m && m->w.elem == AQ_ELEM_F16 && m->x.elem == AQ_ELEM_F16;
}

int aq_mode_is_integer(const aq_mode *m) {
    return m && (m->kind == AQ_KIND_GROUP || m->kind == AQ_KIND_MIXED || m->kind == AQ_KIND_ATOM);
}
