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

/* Parse a decimal integer without sign or leading zeros from *s; advance *s. -1 on failure. */
static long parse_uint(const char **s) {
    const char *p = *s;
    if (*p < '0' || *p > '9') return -1;
    if (*p == '0' && p[1] >= '0' && p[1] <= '9') return -1;
    long v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (*p - '0');
        if (v > 100000000L) return -1;
        p++;
    }
    *s = p;
    return v;
}

static void set(aq_mode *m, aq_kind kind, int wbits, int xbits, int group, float aw, float ax, int o) {
    memset(m, 0, sizeof *m);
    m->kind = kind; m->wbits = wbits; m->xbits = xbits; m->group = group;
    m->alpha_w = aw; m->alpha_x = ax; m->outliers = o;
}

static int bad(const char *s, const char *why, char *err) {
    if (err) {
        int n = snprintf(err, AX_ERR_LEN, "unknown quantization mode '%s'%s%s%s; valid: ", s,
                         why ? " (" : "", why ? why : "", why ? ")" : "");
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

int aq_mode_parse(const char *s, aq_mode *out, char *err) {
    aq_mode m;
    if (!s) return bad("(null)", NULL, err);
    if (strlen(s) >= sizeof m.name) return bad(s, "name too long", err);
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
        if ((g = parse_uint(&p)) < 0 || *p) return bad(s, NULL, err);
        if (!group_ok(g)) return bad(s, "group size must be even, 2..262144", err);
        set(&m, AQ_KIND_WONLY, 4, 16, (int)g, 1.0f, 1.0f, 0);
    } else if (!strncmp(s, "w4a4-mixed-g", 12)) {
        p = s + 12;
        if ((g = parse_uint(&p)) < 0 || *p) return bad(s, NULL, err);
        if (!group_ok(g)) return bad(s, "group size must be even, 2..262144", err);
        set(&m, AQ_KIND_MIXED, 4, 4, (int)g, 1.0f, 1.0f, 0);
    } else if (!strncmp(s, "w4a4-g", 6)) {
        p = s + 6;
        if ((g = parse_uint(&p)) < 0 || *p) return bad(s, NULL, err);
        if (!group_ok(g)) return bad(s, "group size must be even, 2..262144", err);
        set(&m, AQ_KIND_GROUP, 4, 4, (int)g, 1.0f, 1.0f, 0);
    } else if (!strncmp(s, "atom-g", 6)) {
        p = s + 6;
        if ((g = parse_uint(&p)) < 0 || strncmp(p, "-o", 2)) return bad(s, NULL, err);
        p += 2;
        if ((o = parse_uint(&p)) < 0 || *p) return bad(s, NULL, err);
        if (!group_ok(g)) return bad(s, "group size must be even, 2..262144", err);
        if (o > AQ_MAX_OUTLIERS) return bad(s, "outlier count must be 0..65536", err);
        set(&m, AQ_KIND_ATOM, 4, 4, (int)g, 0.85f, 0.9f, (int)o);
    } else {
        return bad(s, NULL, err);
    }
    snprintf(m.name, sizeof m.name, "%s", s);
    *out = m;
    return 0;
}

int aq_mode_is_integer(const aq_mode *m) {
    return m && (m->kind == AQ_KIND_GROUP || m->kind == AQ_KIND_MIXED || m->kind == AQ_KIND_ATOM);
}
