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

/* ---- the table ------------------------------------------------------------------------------- */
/* Operand spellings of the rows. Group fields of parametric rows are 0 here and filled by the
 * parser (fill_params): every operand with gran AQ_GRAN_GROUP takes the name's N. */
#define OP_F16                      {AQ_ELEM_F16, 16, AQ_GRAN_NONE, 0, AQ_SCALE_NONE, 1.0f}
#define OP_INT(elem, bits, gran, scale, clip) {elem, bits, gran, 0, scale, clip}
#define OP_NONE                     {AQ_ELEM_F16, 0, AQ_GRAN_NONE, 0, AQ_SCALE_NONE, 0.0f}

/* How a row's names are spelled: exactly `spell`, `spell` + "N", or `spell` + "N-oO". */
typedef enum { FORM_EXACT = 0, FORM_G, FORM_G_O } form;

typedef struct {
    const char *spell;
    form        form;
    aq_mode     row;    /* name, group N and outliers O filled by the parser */
} mode_row;

/* One row per format family (parametric forms are templates). Sources: NUMERICS.md "Symmetric
 * quantizer", "Mixed granularity" (per-token X; W: fp16 S per channel times u4 sub-scales per
 * group), "Atom-style W4Ax" and clarification 5 (main part INT4 groups of N, clip 0.85f W / 0.9f X;
 * O INT8 outlier channels, one scale per row, clip 1; channels permuted by calibration). The
 * prefixes do not overlap, so the order of the rows does not change what a name parses to. */
static const mode_row mode_table[] = {
    {"fp16", FORM_EXACT,
     {.kind = AQ_KIND_FP16, .w = OP_F16, .x = OP_F16, .epilogue = AQ_EPI_NONE, .outl = OP_NONE}},
    {"w8a8", FORM_EXACT,
     {.kind = AQ_KIND_GROUP,
      .w = OP_INT(AQ_ELEM_INT8, 8, AQ_GRAN_ROW, AQ_SCALE_F16, 1.0f),
      .x = OP_INT(AQ_ELEM_INT8, 8, AQ_GRAN_ROW, AQ_SCALE_F16, 1.0f),
      .epilogue = AQ_EPI_GROUP, .outl = OP_NONE}},
    {"w4a4-pc", FORM_EXACT,
     {.kind = AQ_KIND_GROUP,
      .w = OP_INT(AQ_ELEM_INT4, 4, AQ_GRAN_ROW, AQ_SCALE_F16, 1.0f),
      .x = OP_INT(AQ_ELEM_INT4, 4, AQ_GRAN_ROW, AQ_SCALE_F16, 1.0f),
      .epilogue = AQ_EPI_GROUP, .outl = OP_NONE}},
    {"w4a16-g", FORM_G,
     {.kind = AQ_KIND_WONLY,
      .w = OP_INT(AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, AQ_SCALE_F16, 1.0f),
      .x = OP_F16,
      .epilogue = AQ_EPI_NONE, .outl = OP_NONE}},
    {"w4a4-mixed-g", FORM_G,
     {.kind = AQ_KIND_MIXED,
      .w = OP_INT(AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, AQ_SCALE_F16_U4SUB, 1.0f),
      .x = OP_INT(AQ_ELEM_INT4, 4, AQ_GRAN_ROW, AQ_SCALE_F16, 1.0f),
      .epilogue = AQ_EPI_MIXED, .outl = OP_NONE}},
    {"w4a4-g", FORM_G,
     {.kind = AQ_KIND_GROUP,
      .w = OP_INT(AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, AQ_SCALE_F16, 1.0f),
      .x = OP_INT(AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, AQ_SCALE_F16, 1.0f),
      .epilogue = AQ_EPI_GROUP, .outl = OP_NONE}},
    {"atom-g", FORM_G_O,
     {.kind = AQ_KIND_ATOM,
      .w = OP_INT(AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, AQ_SCALE_F16, 0.85f),
      .x = OP_INT(AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, AQ_SCALE_F16, 0.9f),
      .epilogue = AQ_EPI_GROUP,
      .outl = OP_INT(AQ_ELEM_INT8, 8, AQ_GRAN_ROW, AQ_SCALE_F16, 1.0f),
      .permuted = 1, .needs_calib = 1}},
};
#define N_ROWS ((int)(sizeof mode_table / sizeof *mode_table))

/* The parameters of a parametric name: every grouped operand takes the group N; outliers O. */
static void fill_params(aq_mode *m, int group, int outliers) {
    aq_operand *op[2] = {&m->w, &m->x};
    for (int i = 0; i < 2; i++)
        if (op[i]->gran == AQ_GRAN_GROUP) op[i]->group = group;
    m->outliers = outliers;
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
    const mode_row *r = NULL;
    for (int i = 0; i < N_ROWS && !r; i++) {
        const mode_row *t = &mode_table[i];
        if (t->form == FORM_EXACT ? !strcmp(s, t->spell) : !strncmp(s, t->spell, strlen(t->spell))) r = t;
    }
    if (!r) return bad(s, NULL, err);
    m = r->row;
    if (r->form != FORM_EXACT) {
        const char *p = s + strlen(r->spell);
        long g, o = 0;
        if (parse_group(s, &p, r->form == FORM_G_O ? "-o" : "", &g, err)) return -1;
        if (r->form == FORM_G_O) {
            p += 2;
            int rc = parse_uint(&p, &o);
            if (rc == -2 || (rc == 0 && o > AQ_MAX_OUTLIERS)) return bad(s, "outlier count O must be 0..65536", err);
            if (rc < 0) return bad(s, "expected a decimal outlier count O without sign or leading zeros", err);
            if (*p) return bad(s, "unexpected characters after the outlier count", err);
        }
        fill_params(&m, (int)g, (int)o);
    }
    snprintf(m.name, sizeof m.name, "%s", s);
    *out = m;
    return 0;
}

int aq_mode_is_fp16(const aq_mode *m) {
    return m && m->w.elem == AQ_ELEM_F16 && m->x.elem == AQ_ELEM_F16;
}

int aq_mode_is_integer(const aq_mode *m) {
    return m && m->epilogue != AQ_EPI_NONE;
}

static int same_operand(const aq_operand *a, const aq_operand *b) {
    return a->elem == b->elem && a->bits == b->bits && a->gran == b->gran && a->group == b->group &&
           a->scale == b->scale && a->clip == b->clip;
}

int aq_mode_same(const aq_mode *a, const aq_mode *b) {
    return a && b && a->kind == b->kind && same_operand(&a->w, &b->w) && same_operand(&a->x, &b->x) &&
           a->epilogue == b->epilogue && a->outliers == b->outliers && same_operand(&a->outl, &b->outl) &&
           a->permuted == b->permuted && a->needs_calib == b->needs_calib;
}
