/* test_quant.c — the CPU reference quantizer (quant/aq.h) against NUMERICS.md.
 *
 * Expected values are derived by hand in the comments and were cross-checked with Python's struct
 * module (format 'e' = IEEE binary16 with round-half-even, 'f' = fp32: one fp32 op = the double
 * result rounded once), never with the code under test. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "aq.h"
#include "testutil.h"

/* ---- fp16 ------------------------------------------------------------------------------------ */

Test(fp16, known_values_and_ties) {
    cr_assert_eq(aq_f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(aq_f32_to_f16(-2.0f), 0xc000);
    cr_assert_eq(aq_f32_to_f16(-0.0f), 0x8000);
    cr_assert_eq(aq_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(aq_f32_to_f16(65519.0f), 0x7bff);           /* below the half-way point 65520 */
    cr_assert_eq(aq_f32_to_f16(65520.0f), 0x7c00);           /* tie: 0x7bff is odd -> rounds to inf */
    cr_assert_eq(aq_f32_to_f16(0x1p-24f), 0x0001);           /* smallest subnormal */
    cr_assert_eq(aq_f32_to_f16(0x1p-25f), 0x0000);           /* tie between 0 and 2^-24 -> even 0 */
    cr_assert_eq(aq_f32_to_f16(0x1.8p-24f), 0x0002);         /* 1.5·2^-24: tie between 1 and 2 -> 2 */
    cr_assert_eq(aq_f32_to_f16(0x1.000002p-25f), 0x0001);    /* just above the tie */
    cr_assert_eq(aq_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);    /* tie 1 / 1+2^-10 -> even 1 */
    cr_assert_eq(aq_f32_to_f16(1.0f + 0x3p-11f), 0x3c02);    /* tie 1+2^-10 / 1+2^-9 -> even */
    cr_assert_eq(aq_f32_to_f16(0x1.ffcp-15f), 0x0400);     /* 2^-14·(1-2^-11): tie, rounds up to the even min normal */
    cr_assert_eq(aq_f32_to_f16(INFINITY), 0x7c00);
    uint16_t n = aq_f32_to_f16(NAN);
    cr_assert((n & 0x7c00) == 0x7c00 && (n & 0x03ff) != 0, "NaN stays NaN: 0x%04x", n);
    cr_assert_eq(aq_bf16_to_f32(0x3f80), 1.0f);
    cr_assert_eq(aq_bf16_to_f32(0xc0a0), -5.0f);
}

Test(fp16, all_patterns_round_trip) {
    /* Every finite fp16 value is exact in fp32, so f16 -> f32 -> f16 must be the identity; the
     * value must also equal the definition sign·2^(e-15)·(1+m/1024) (subnormal: m·2^-24). */
    for (uint32_t b = 0; b < 0x10000; b++) {
        uint16_t h = (uint16_t)b;
        float f = aq_f16_to_f32(h);
        int e = (h >> 10) & 31, m = h & 1023;
        if (e == 31) { cr_assert(m ? isnan(f) : isinf(f)); continue; }
        double want = e ? ldexp(1.0 + m / 1024.0, e - 15) : ldexp((double)m, -24);
        if (h & 0x8000) want = -want;
        cr_assert_eq((double)f, want, "0x%04x", h);
        cr_assert_eq(aq_f32_to_f16(f), h, "0x%04x", h);
    }
}

#if defined(__F16C__)
Test(fp16, matches_f16c_hardware_on_random_floats) {
    /* Independent tool: the x86 F16C instruction vcvtps2ph with round-to-nearest-even. */
    uint64_t st = 1;
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)tu_rand_u64(&st);
        if (i & 1) u = (u & 0x807fffffu) | ((uint32_t)(96 + tu_rand_u64(&st) % 50) << 23); /* near fp16 range */
        float f;
        memcpy(&f, &u, sizeof f);
        if (isnan(f)) continue;
        uint16_t hw = _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
        cr_assert_eq(aq_f32_to_f16(f), hw, "f = %a: ours 0x%04x, F16C 0x%04x", (double)f, aq_f32_to_f16(f), hw);
    }
}
#endif

Test(fp16, checked_conversion_errors_name_the_tensor) {
    char err[AX_ERR_LEN] = "";
    uint16_t d[3];
    float ok[3] = {1.0f, -65504.0f, 0.5f};
    cr_assert_eq(aq_f32_to_f16_checked(ok, d, 3, "W", err), 0);
    cr_assert_eq(d[1], 0xfbff);
    float big[3] = {1.0f, 2.0f, 70000.0f};
    cr_assert_neq(aq_f32_to_f16_checked(big, d, 3, "layers.0.w", err), 0);
    cr_assert(strstr(err, "layers.0.w") && strstr(err, "index 2"), "%s", err);
    float nan[2] = {NAN, 1.0f};
    cr_assert_neq(aq_f32_to_f16_checked(nan, d, 2, "X", err), 0);
    cr_assert(strstr(err, "X") && strstr(err, "non-finite"), "%s", err);
}

/* ---- modes ----------------------------------------------------------------------------------- */

Test(mode, standard_names_parse) {
    char err[AX_ERR_LEN];
    aq_mode m;
    for (int i = 0; aq_standard_modes[i]; i++) {
        cr_assert_eq(aq_mode_parse(aq_standard_modes[i], &m, err), 0, "%s: %s", aq_standard_modes[i], err);
        cr_assert_str_eq(m.name, aq_standard_modes[i]);
    }
    cr_assert_eq(aq_mode_parse("w8a8", &m, err), 0);
    cr_assert(m.kind == AQ_KIND_GROUP && m.w.bits == 8 && m.x.bits == 8 && m.w.group == 0 && m.x.group == 0);
    cr_assert_eq(aq_mode_parse("w4a4-pc", &m, err), 0);
    cr_assert(m.kind == AQ_KIND_GROUP && m.w.bits == 4 && m.w.group == 0 && m.w.clip == 1.0f && m.x.clip == 1.0f);
    cr_assert_eq(aq_mode_parse("w4a16-g128", &m, err), 0);
    cr_assert(m.kind == AQ_KIND_WONLY && m.w.bits == 4 && m.x.bits == 16 && m.w.group == 128);
    cr_assert_eq(aq_mode_parse("w4a4-mixed-g128", &m, err), 0);
    cr_assert(m.kind == AQ_KIND_MIXED && m.w.group == 128);
    cr_assert_eq(aq_mode_parse("atom-g128-o128", &m, err), 0);
    cr_assert(m.kind == AQ_KIND_ATOM && m.w.group == 128 && m.x.group == 128 && m.outliers == 128);
    cr_assert(m.x.clip == 0.9f && m.w.clip == 0.85f);     /* Atom §4: 0.9 activations, 0.85 weights */
    cr_assert(aq_mode_is_integer(&m));
    aq_mode_parse("fp16", &m, err);
    cr_assert(!aq_mode_is_integer(&m));
}

/* The row fields of every standard mode and of parametric instances, written by hand from
 * quant/NUMERICS.md ("Symmetric quantizer", "Mixed granularity": per-token X, W with a per-channel
 * fp16 S and 4-bit sub-scales u per group; "Atom-style W4Ax" and clarification 5: INT4 groups of 128,
 * clip 0.9f X / 0.85f W, 128 INT8 outlier channels with one scale per row and α = 1, channels
 * permuted by calibration) and Atom (Zhao et al., MLSys 2024, §4). Not derived from aq_mode.c. */
typedef struct { aq_elem e; int bits; aq_gran gran; int group; aq_scale_kind sc; float clip; } op_want;
typedef struct {
    const char *name;
    aq_kind kind;
    op_want w, x;
    aq_epilogue epi;
    int outliers, permuted, needs_calib, integer, fp16;
    op_want outl;   /* checked when outliers > 0 */
} row_want;
#define F16_  {AQ_ELEM_F16, 16, AQ_GRAN_NONE, 0, AQ_SCALE_NONE, 1.0f}
#define NOOUT {AQ_ELEM_F16, 0, AQ_GRAN_NONE, 0, AQ_SCALE_NONE, 0.0f}
static void check_row(const row_want *r) {
    char err[AX_ERR_LEN];
    aq_mode m;
    cr_assert_eq(aq_mode_parse(r->name, &m, err), 0, "%s: %s", r->name, err);
    cr_assert_str_eq(m.name, r->name);
    cr_assert_eq(m.kind, r->kind, "%s: kind", r->name);
    const op_want *want[2] = {&r->w, &r->x};
    const aq_operand *got[2] = {&m.w, &m.x};
    for (int i = 0; i < 2 + (r->outliers > 0); i++) {
        const op_want *e = i < 2 ? want[i] : &r->outl;
        const aq_operand *g = i < 2 ? got[i] : &m.outl;
        const char *which = i == 0 ? "w" : i == 1 ? "x" : "outl";
        cr_assert_eq(g->elem, e->e, "%s.%s.elem: %d, want %d", r->name, which, (int)g->elem, (int)e->e);
        cr_assert_eq(g->bits, e->bits, "%s.%s.bits: %d, want %d", r->name, which, g->bits, e->bits);
        cr_assert_eq(g->gran, e->gran, "%s.%s.gran: %d, want %d", r->name, which, (int)g->gran, (int)e->gran);
        cr_assert_eq(g->group, e->group, "%s.%s.group: %d, want %d", r->name, which, g->group, e->group);
        cr_assert_eq(g->scale, e->sc, "%s.%s.scale: %d, want %d", r->name, which, (int)g->scale, (int)e->sc);
        cr_assert(g->clip == e->clip, "%s.%s.clip: %.9g, want %.9g", r->name, which, (double)g->clip, (double)e->clip);
    }
    cr_assert_eq(m.epilogue, r->epi, "%s: epilogue", r->name);
    cr_assert_eq(m.outliers, r->outliers, "%s: outliers", r->name);
    cr_assert_eq(m.permuted, r->permuted, "%s: permuted", r->name);
    cr_assert_eq(m.needs_calib, r->needs_calib, "%s: needs_calib", r->name);
    cr_assert_eq(aq_mode_is_integer(&m), r->integer, "%s: aq_mode_is_integer", r->name);
    cr_assert_eq(aq_mode_is_fp16(&m), r->fp16, "%s: aq_mode_is_fp16", r->name);
    cr_assert(aq_mode_same(&m, &m), "%s: aq_mode_same with itself", r->name);
}

Test(mode, rows_of_the_standard_modes) {
    const op_want i4pc = {AQ_ELEM_INT4, 4, AQ_GRAN_ROW, 0, AQ_SCALE_F16, 1.0f};
    const op_want i8pc = {AQ_ELEM_INT8, 8, AQ_GRAN_ROW, 0, AQ_SCALE_F16, 1.0f};
    const row_want rows[] = {
        {"fp16", AQ_KIND_FP16, F16_, F16_, AQ_EPI_NONE, 0, 0, 0, 0, 1, NOOUT},
        {"w4a16-g128", AQ_KIND_WONLY, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 128, AQ_SCALE_F16, 1.0f}, F16_,
         AQ_EPI_NONE, 0, 0, 0, 0, 0, NOOUT},
        {"w8a8", AQ_KIND_GROUP, i8pc, i8pc, AQ_EPI_GROUP, 0, 0, 0, 1, 0, NOOUT},
        {"w4a4-pc", AQ_KIND_GROUP, i4pc, i4pc, AQ_EPI_GROUP, 0, 0, 0, 1, 0, NOOUT},
        {"w4a4-g32", AQ_KIND_GROUP, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 32, AQ_SCALE_F16, 1.0f},
         {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 32, AQ_SCALE_F16, 1.0f}, AQ_EPI_GROUP, 0, 0, 0, 1, 0, NOOUT},
        {"w4a4-g64", AQ_KIND_GROUP, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 64, AQ_SCALE_F16, 1.0f},
         {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 64, AQ_SCALE_F16, 1.0f}, AQ_EPI_GROUP, 0, 0, 0, 1, 0, NOOUT},
        {"w4a4-g128", AQ_KIND_GROUP, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 128, AQ_SCALE_F16, 1.0f},
         {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 128, AQ_SCALE_F16, 1.0f}, AQ_EPI_GROUP, 0, 0, 0, 1, 0, NOOUT},
        {"w4a4-g256", AQ_KIND_GROUP, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 256, AQ_SCALE_F16, 1.0f},
         {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 256, AQ_SCALE_F16, 1.0f}, AQ_EPI_GROUP, 0, 0, 0, 1, 0, NOOUT},
        /* mixed: W per-channel S x u4 sub-scales per 128; X per token */
        {"w4a4-mixed-g128", AQ_KIND_MIXED, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 128, AQ_SCALE_F16_U4SUB, 1.0f}, i4pc,
         AQ_EPI_MIXED, 0, 0, 0, 1, 0, NOOUT},
        /* Atom: W clip 0.85, X clip 0.9, groups of 128, 128 INT8 outliers per row with clip 1 */
        {"atom-g128-o128", AQ_KIND_ATOM, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 128, AQ_SCALE_F16, 0.85f},
         {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 128, AQ_SCALE_F16, 0.9f}, AQ_EPI_GROUP, 128, 1, 1, 1, 0, i8pc},
    };
    size_t n = sizeof rows / sizeof *rows, nstd = 0;
    for (size_t i = 0; i < n; i++) check_row(&rows[i]);
    /* the list above is exactly aq_standard_modes, in order */
    for (; aq_standard_modes[nstd]; nstd++) {
        cr_assert(nstd < n, "more standard modes than rows written here");
        cr_assert_str_eq(aq_standard_modes[nstd], rows[nstd].name);
    }
    cr_assert_eq(nstd, n);
}

Test(mode, rows_of_parametric_instances) {
    const row_want rows[] = {
        {"w4a16-g32", AQ_KIND_WONLY, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 32, AQ_SCALE_F16, 1.0f}, F16_,
         AQ_EPI_NONE, 0, 0, 0, 0, 0, NOOUT},
        {"w4a4-g96", AQ_KIND_GROUP, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 96, AQ_SCALE_F16, 1.0f},
         {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 96, AQ_SCALE_F16, 1.0f}, AQ_EPI_GROUP, 0, 0, 0, 1, 0, NOOUT},
        {"w4a4-mixed-g2", AQ_KIND_MIXED, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 2, AQ_SCALE_F16_U4SUB, 1.0f},
         {AQ_ELEM_INT4, 4, AQ_GRAN_ROW, 0, AQ_SCALE_F16, 1.0f}, AQ_EPI_MIXED, 0, 0, 0, 1, 0, NOOUT},
        {"atom-g64-o32", AQ_KIND_ATOM, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 64, AQ_SCALE_F16, 0.85f},
         {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 64, AQ_SCALE_F16, 0.9f}, AQ_EPI_GROUP, 32, 1, 1, 1, 0,
         {AQ_ELEM_INT8, 8, AQ_GRAN_ROW, 0, AQ_SCALE_F16, 1.0f}},
        /* o = 0: no outlier part, but the channels are still permuted by calibration */
        {"atom-g128-o0", AQ_KIND_ATOM, {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 128, AQ_SCALE_F16, 0.85f},
         {AQ_ELEM_INT4, 4, AQ_GRAN_GROUP, 128, AQ_SCALE_F16, 0.9f}, AQ_EPI_GROUP, 0, 1, 1, 1, 0, NOOUT},
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) check_row(&rows[i]);
    /* aq_mode_same: equal rows under different parameters differ; the name is not compared */
    char err[AX_ERR_LEN];
    aq_mode a, b;
    cr_assert_eq(aq_mode_parse("w4a4-g128", &a, err), 0);
    cr_assert_eq(aq_mode_parse("w4a4-g64", &b, err), 0);
    cr_assert(!aq_mode_same(&a, &b));
    b = a;
    snprintf(b.name, sizeof b.name, "other");
    cr_assert(aq_mode_same(&a, &b));
    b.x.clip = 0.9f;
    cr_assert(!aq_mode_same(&a, &b), "a different X clip is a different row");
    cr_assert(!aq_mode_same(&a, NULL));
}

Test(mode, parametric_forms) {
    char err[AX_ERR_LEN];
    aq_mode m;
    cr_assert_eq(aq_mode_parse("w4a4-g96", &m, err), 0);
    cr_assert(m.kind == AQ_KIND_GROUP && m.w.group == 96 && m.x.group == 96);
    cr_assert_eq(aq_mode_parse("atom-g64-o32", &m, err), 0);
    cr_assert(m.w.group == 64 && m.x.group == 64 && m.outliers == 32);
    cr_assert_eq(aq_mode_parse("atom-g64-o0", &m, err), 0);
    cr_assert_eq(aq_mode_parse("w4a16-g2", &m, err), 0);
}

Test(mode, unknown_names_list_the_valid_ones) {
    const char *badnames[] = {"w4a4", "w4a4-g", "w4a4-g0", "w4a4-g7", "w4a4-g064", "w4a4-g128x", "W4A4-G128",
                              "atom-g128", "atom-g128-o", "atom-g128-o-1", "w3a3", "", "fp32",
                              "w4a4-g99999999999", "w4a4-mixed-g"};
    for (size_t i = 0; i < sizeof badnames / sizeof *badnames; i++) {
        char err[AX_ERR_LEN] = "";
        aq_mode m;
        cr_assert_neq(aq_mode_parse(badnames[i], &m, err), 0, "'%s' must not parse", badnames[i]);
        cr_assert(strstr(err, "w4a4-g128") && strstr(err, "atom-gN-oO"), "%s", err);
    }
}

Test(mode, absurd_numbers_and_garbage_are_rejected_with_a_reason) {
    /* Hostile mode strings (issue "hostile input"): every one must fail without overflow, with the
     * reason in the message. Expected outcomes from the documented grammar (aq.h, NUMERICS.md: N even
     * 2..262144, O 0..65536, decimal without sign or leading zeros, nothing after the number). */
    const struct { const char *s, *why; } cases[] = {
        {"w4a4-g99999999999999999999", "too large"},          /* > 2^64: must not wrap around       */
        {"w4a4-g18446744073709551744", "too large"},          /* 2^64 + 128 would wrap to 128       */
        {"w4a4-g4294967424", "too large"},                    /* 2^32 + 128 would wrap in an int    */
        {"atom-g128-o-1", "outlier count"},
        {"atom-g128-o99999999999999999999", "outlier count O must be 0..65536"},
        {"atom-g128-o65537", "outlier count O must be 0..65536"},
        {"atom-g128-o12x", "after the outlier count"},
        {"atom-g99999999999999999999-o8", "too large"},
        {"atom-g128o8", "expected '-o'"},
        {"w4a4-g0x10", "after the group size"},
        {"w4a4-g128 ", "after the group size"},
        {"w4a4-g+128", "without sign"},
        {"w4a4-g-128", "without sign"},
        {"w4a4-g0128", "leading zeros"},
        {"w4a4-g262146", "even, 2..262144"},
        {"w4a4-g100000000", "even, 2..262144"},               /* 1e8: parsed, then out of range       */
        {"w4a4-mixed-g1", "even, 2..262144"},
        {"w4a16-g128garbage", "after the group size"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char err[AX_ERR_LEN] = "";
        aq_mode m;
        memset(&m, 0x5a, sizeof m);
        cr_assert_neq(aq_mode_parse(cases[i].s, &m, err), 0, "'%s' must not parse", cases[i].s);
        cr_assert(strstr(err, cases[i].why), "'%s': reason '%s' not in: %s", cases[i].s, cases[i].why, err);
        cr_assert(strstr(err, "atom-gN-oO"), "%s", err);
        cr_assert_eq(((unsigned char *)&m)[0], 0x5a, "'%s': out must stay untouched on error", cases[i].s);
    }
    /* the limits themselves parse */
    aq_mode m;
    char err[AX_ERR_LEN];
    cr_assert_eq(aq_mode_parse("w4a4-g262144", &m, err), 0, "%s", err);
    cr_assert_eq(m.w.group, 262144);
    cr_assert_eq(aq_mode_parse("atom-g2-o65536", &m, err), 0, "%s", err);
    cr_assert(m.w.group == 2 && m.outliers == 65536);
}

Test(mode, over_long_and_control_characters_are_not_echoed_raw) {
    /* 1 MiB of 'w' and a terminal escape: the message stays within AX_ERR_LEN, names the problem and
     * shows the string shortened (40 characters, "...") with non-printable bytes as '?'. */
    size_t n = (size_t)1 << 20;
    char *big = malloc(n + 1);
    cr_assert_not_null(big);
    memset(big, 'w', n);
    big[n] = 0;
    char err[AX_ERR_LEN] = "";
    aq_mode m;
    cr_assert_neq(aq_mode_parse(big, &m, err), 0);
    free(big);
    cr_assert(strlen(err) < AX_ERR_LEN);
    cr_assert(strstr(err, "too long"), "%s", err);
    cr_assert(strstr(err, "'wwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwwww...'"), "%s", err);
    cr_assert_neq(aq_mode_parse("w4a4-g\x1b[2J", &m, err), 0);
    cr_assert(!strchr(err, 0x1b) && strstr(err, "'w4a4-g?[2J'"), "%s", err);
    /* exactly 31 characters is the longest name that fits aq_mode.name: it reaches the grammar */
    cr_assert_neq(aq_mode_parse("atom-g128-o128xxxxxxxxxxxxxxxxx", &m, err), 0);
    cr_assert(strstr(err, "after the outlier count"), "%s", err);
    cr_assert_neq(aq_mode_parse("atom-g128-o128xxxxxxxxxxxxxxxxxx", &m, err), 0);
    cr_assert(strstr(err, "too long"), "%s", err);
}

/* ---- symmetric quantizer --------------------------------------------------------------------- */

Test(quantizer, ties_round_half_to_even) {
    /* amax = 7 -> s32 = 7/7 = 1, s = 1 (0x3c00). v/s = ±0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2, 3.5 -> 4. */
    float v[8] = {7.0f, 0.5f, 1.5f, 2.5f, -2.5f, -0.5f, 3.5f, -3.5f};
    int8_t q[8];
    uint16_t s = aq_quant_group(v, 8, 4, 1.0f, q);
    cr_assert_eq(s, 0x3c00);
    int8_t want[8] = {7, 0, 2, 2, -2, 0, 4, -4};
    for (int i = 0; i < 8; i++) cr_assert_eq(q[i], want[i], "i = %d", i);
}

Test(quantizer, all_zero_group_has_zero_scale_and_codes) {
    float v[5] = {0.0f, -0.0f, 0.0f, 0.0f, 0.0f};
    int8_t q[5] = {1, 1, 1, 1, 1};
    cr_assert_eq(aq_quant_group(v, 5, 4, 1.0f, q), 0x0000);
    for (int i = 0; i < 5; i++) cr_assert_eq(q[i], 0);
    cr_assert_eq(aq_quant_group(v, 5, 8, 0.9f, q), 0x0000);
}

Test(quantizer, subnormal_scale) {
    /* amax = 7·2^-20 -> s = 2^-20 = 16·2^-24: fp16 subnormal 0x0010. 1.5·2^-20 / s = 1.5 -> 2. */
    float v[3] = {7.0f * 0x1p-20f, 0x1.8p-20f, -0x1p-21f};
    int8_t q[3];
    cr_assert_eq(aq_quant_group(v, 3, 4, 1.0f, q), 0x0010);
    cr_assert_eq(q[0], 7);
    cr_assert_eq(q[1], 2);
    cr_assert_eq(q[2], 0);      /* -0.5 -> -0 -> 0 (half to even) */
}

Test(quantizer, scale_underflowing_to_zero_gives_zero_codes) {
    /* amax = 2^-24 (smallest fp16 subnormal): s32 = 2^-24/7 < 2^-25 -> fp16 0, all codes 0. */
    float v[2] = {0x1p-24f, -0x1p-24f};
    int8_t q[2] = {5, 5};
    cr_assert_eq(aq_quant_group(v, 2, 4, 1.0f, q), 0x0000);
    cr_assert(q[0] == 0 && q[1] == 0);
}

Test(quantizer, max_fp16_magnitude) {
    /* 4-bit: 65504/7 = 9357.71; fp16 spacing 8 in [8192,16384) -> 9360 = 0x7092; 65504/9360 = 6.998 -> 7.
     * 8-bit: 65504/127 = 515.78; spacing 0.5 -> 516 = 0x6008; 65504/516 = 126.95 -> 127. */
    float v[2] = {65504.0f, -65504.0f};
    int8_t q[2];
    cr_assert_eq(aq_quant_group(v, 2, 4, 1.0f, q), 0x7092);
    cr_assert(q[0] == 7 && q[1] == -7);
    cr_assert_eq(aq_quant_group(v, 2, 8, 1.0f, q), 0x6008);
    cr_assert(q[0] == 127 && q[1] == -127);
}

Test(quantizer, clipping_saturates_asymmetrically) {
    /* α = 0.85f: t = fp32(10·0.85f) = 8.5; s32 = 8.5/7 = 1.2142857 -> fp16 1243/1024 = 1.2138671875
     * (0x3cdb). 10/s = 8.24 -> 8 -> clamp 7; -10/s = -8.24 -> -8 (in range); 1/s = 0.82 -> 1; 9/s = 7.41 -> 7. */
    float v[4] = {10.0f, -10.0f, 1.0f, 9.0f};
    int8_t q[4];
    cr_assert_eq(aq_quant_group(v, 4, 4, 0.85f, q), 0x3cdb);
    int8_t want[4] = {7, -8, 1, 7};
    for (int i = 0; i < 4; i++) cr_assert_eq(q[i], want[i], "i = %d", i);
}

Test(quantizer, dequant_error_within_half_scale_random) {
    /* Property: with α = 1 every value is inside the clip range, so |v - q·s| <= s/2. */
    uint64_t st = 7;
    float v[256];
    int8_t q[256];
    for (int it = 0; it < 2000; it++) {
        int L = 1 + (int)(tu_rand_u64(&st) % 256);
        int bits = (it & 1) ? 8 : 4;
        double mag = ldexp(1.0, (int)(tu_rand_u64(&st) % 30) - 20);
        for (int i = 0; i < L; i++)
            v[i] = aq_f16_to_f32(aq_f32_to_f16((float)((tu_rand_unit(&st) * 2 - 1) * mag)));
        float s = aq_f16_to_f32(aq_quant_group(v, L, bits, 1.0f, q));
        int qmax = (1 << (bits - 1)) - 1;
        for (int i = 0; i < L; i++) {
            double e = fabs((double)v[i] - (double)q[i] * (double)s);
            if (s == 0.0f) /* s32 = amax/qmax rounded to fp16 0 needs s32 <= 2^-25 */
                cr_assert(fabs(v[i]) <= 0x1p-25 * ((1 << (bits - 1)) - 1) && q[i] == 0);
            else if (fabs(v[i]) <= (qmax + 0.5) * s)  /* inside the clip range */
                cr_assert(e <= s / 2.0, "v = %a q = %d s = %a", (double)v[i], q[i], (double)s);
            else /* only a subnormal s (relative rounding up to 1/2) can leave amax outside; a normal
                  * s is within 2^-11 of amax/qmax, so amax/s <= qmax + 0.01 */
                cr_assert(s < 0x1p-14 && (q[i] == qmax || q[i] == -qmax - 1), "v = %a q = %d s = %a",
                          (double)v[i], q[i], (double)s);
        }
    }
}

/* ---- packing --------------------------------------------------------------------------------- */

Test(pack, low_nibble_first_and_round_trip) {
    /* {1, -1, 7, -8, 3}: bytes 0xF1 (low 1, high -1 = 0xF), 0x87 (low 7, high -8 = 0x8), 0x03 (pad 0). */
    int8_t q[5] = {1, -1, 7, -8, 3}, back[5];
    uint8_t b[3];
    cr_assert_eq(aq_pack_int4(q, 5, b), 0);
    cr_assert(b[0] == 0xf1 && b[1] == 0x87 && b[2] == 0x03, "%02x %02x %02x", b[0], b[1], b[2]);
    aq_unpack_int4(b, 5, back);
    cr_assert_eq(memcmp(q, back, 5), 0);
    int8_t bad[2] = {8, 0};
    cr_assert_neq(aq_pack_int4(bad, 2, b), 0);
    uint64_t st = 3;
    for (int it = 0; it < 200; it++) {
        int8_t r[101], r2[101];
        uint8_t p[51];
        size_t n = 1 + tu_rand_u64(&st) % 101;
        for (size_t i = 0; i < n; i++) r[i] = (int8_t)((int)(tu_rand_u64(&st) % 16) - 8);
        cr_assert_eq(aq_pack_int4(r, n, p), 0);
        aq_unpack_int4(p, n, r2);
        cr_assert_eq(memcmp(r, r2, n), 0);
    }
}

/* ---- quantized tensors ----------------------------------------------------------------------- */

static int code_at(const aq_qmat *q, int r, int c) {
    if (q->bits == 8) return (int8_t)q->codes[(size_t)r * q->cols + c];
    int8_t v[2];
    aq_unpack_int4(q->codes + (size_t)r * ((q->cols + 1) / 2) + c / 2, 2, v);
    return v[c & 1];
}

Test(qtensor, short_last_group) {
    /* w4a4-g2 on X [1,5] = {7, 1, -3.5, 0.5, 1.4}: groups {7,1}, {-3.5,0.5}, {1.4} (length 1).
     * g0: s = 1, codes 7, 1. g1: s = fp16(0.5) = 0x3800, codes -7, 1. g2: X is fp16, so 1.4 is
     * 0x3d9a = 1.400390625; s32 = 1.400390625/7 = 0.2000558 -> fp16 0x3267 (0.2000732421875);
     * 1.400390625/s = 6.9994 -> 7. */
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("w4a4-g2", &m, err);
    uint16_t x[5] = {aq_f32_to_f16(7.0f), aq_f32_to_f16(1.0f), aq_f32_to_f16(-3.5f), aq_f32_to_f16(0.5f),
                     aq_f32_to_f16(1.4f)};
    cr_assert_eq(x[4], 0x3d9a);
    aq_qtensor t;
    cr_assert_eq(aq_quantize_x(&m, x, 1, 5, NULL, &t, err), 0, "%s", err);
    cr_assert(t.main.ngroups == 3 && t.main.group == 2 && t.main.cols == 5 && t.outl.rows == 0);
    cr_assert(t.main.scales[0] == 0x3c00 && t.main.scales[1] == 0x3800 && t.main.scales[2] == 0x3267,
              "%04x %04x %04x", t.main.scales[0], t.main.scales[1], t.main.scales[2]);
    int want[5] = {7, 1, -7, 1, 7};
    for (int k = 0; k < 5; k++) cr_assert_eq(code_at(&t.main, 0, k), want[k], "k = %d", k);
    cr_assert_eq(t.main.codes[2] >> 4, 0, "padding nibble must be 0");
    aq_qtensor_free(&t);
}

Test(qtensor, per_channel_modes_use_one_group_per_row) {
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("w8a8", &m, err);
    uint16_t w[2 * 3] = {0x3c00, 0x4000, 0xc400, 0, 0, 0};   /* rows {1, 2, -4}, {0, 0, 0} */
    aq_qtensor t;
    cr_assert_eq(aq_quantize_w(&m, w, 2, 3, NULL, &t, err), 0, "%s", err);
    cr_assert(t.main.bits == 8 && t.main.ngroups == 1 && t.main.group == 3);
    /* s = fp16(4/127 = 0.0314961) = 0.031494140625 (0x2808); 1/s = 31.75 -> 32, 2/s = 63.504 -> 64,
     * -4/s = -127.007 -> -127. Row 2: s = 0, codes 0. */
    cr_assert_eq(t.main.scales[0], 0x2808, "%04x", t.main.scales[0]);
    cr_assert(code_at(&t.main, 0, 0) == 32 && code_at(&t.main, 0, 1) == 64 && code_at(&t.main, 0, 2) == -127);
    cr_assert(t.main.scales[1] == 0 && code_at(&t.main, 1, 1) == 0);
    aq_qtensor_free(&t);
}

Test(qtensor, mixed_subscales) {
    /* w4a4-mixed-g2, W row {7, -3.5, 0.7, 0.35} (fp16: 0.7 -> 0.7001953125, 0.35 -> 0.35009765625).
     * f0 = 7/7 = 1; f1 = 0.7001953125/7 = 0.100027901 (fp32). S = fp16(1/15 = 0.0666667) = 1092/16384 =
     * 0.066650390625 (0x2c44). u0 = rne(1/S = 15.0037) = 15; u1 = rne(0.100028/S = 1.5008) = 2.
     * S·u0 = 0.999755859375: 7/.. = 7.0017 -> 7; -3.5/.. = -3.5009 -> -4.
     * S·u1 = 0.13330078125: 0.7001953125/.. = 5.2527 -> 5; 0.35009765625/.. = 2.6264 -> 3. */
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("w4a4-mixed-g2", &m, err);
    float wf[4] = {7.0f, -3.5f, 0.7f, 0.35f};
    uint16_t w[4];
    for (int i = 0; i < 4; i++) w[i] = aq_f32_to_f16(wf[i]);
    aq_qtensor t;
    cr_assert_eq(aq_quantize_w(&m, w, 1, 4, NULL, &t, err), 0, "%s", err);
    cr_assert(t.main.sub != NULL && t.main.ngroups == 2);
    cr_assert_eq(t.main.scales[0], 0x2c44, "%04x", t.main.scales[0]);
    cr_assert(t.main.sub[0] == 15 && t.main.sub[1] == 2, "u = %d %d", t.main.sub[0], t.main.sub[1]);
    int want[4] = {7, -4, 5, 3};
    for (int k = 0; k < 4; k++) cr_assert_eq(code_at(&t.main, 0, k), want[k], "k = %d", k);
    /* dequantized: q·(S·u) */
    float d[4];
    cr_assert_eq(aq_dequantize(&t, d, err), 0);
    cr_assert(d[0] == 7.0f * 0.999755859375f && d[1] == -4.0f * 0.999755859375f && d[3] == 3.0f * 0.13330078125f);
    aq_qtensor_free(&t);
    /* X in the mixed mode is per-token: one group of K */
    cr_assert_eq(aq_quantize_x(&m, w, 1, 4, NULL, &t, err), 0);
    cr_assert(t.main.ngroups == 1 && t.main.group == 4 && t.main.sub == NULL);
    aq_qtensor_free(&t);
}

Test(qtensor, mixed_all_zero_row) {
    /* S = 0: every u = 1 and every code 0 (quant/NUMERICS.md clarification). */
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("w4a4-mixed-g2", &m, err);
    uint16_t w[4] = {0, 0x8000, 0, 0};
    aq_qtensor t;
    cr_assert_eq(aq_quantize_w(&m, w, 1, 4, NULL, &t, err), 0);
    cr_assert(t.main.scales[0] == 0 && t.main.sub[0] == 1 && t.main.sub[1] == 1 && t.main.codes[0] == 0);
    aq_qtensor_free(&t);
}

Test(qtensor, atom_outlier_group) {
    /* atom-g2-o2, K = 6, perm {5,3,1,0,2,4}: permuted X row = {x5, x3, x1, x0 | x2, x4} with
     * x = {0.5, 1, 100, 2, -50, 3}: main {3, 2 | 1, 0.5}, outliers {100, -50}.
     * main g0, α = 0.9f: t = fp32(3·0.9f) = 2.6999998; s = fp16(0.3857142) = 0.3857421875 (0x362c);
     *   3/s = 7.78 -> 8 -> clamp 7; 2/s = 5.18 -> 5.
     * main g1: t = 0.9f = 0.89999998; s = fp16(0.12857) = 0.1285400390625 (0x301d); 1/s = 7.78 -> 7;
     *   0.5/s = 3.89 -> 4.
     * outliers, 8-bit, α = 1: s = fp16(100/127 = 0.7874) = 1613/2048 = 0.78759765625 (0x3a4d);
     *   100/s = 126.97 -> 127; -50/s = -63.48 -> -63. */
    char err[AX_ERR_LEN];
    aq_mode m;
    cr_assert_eq(aq_mode_parse("atom-g2-o2", &m, err), 0);
    float xf[6] = {0.5f, 1.0f, 100.0f, 2.0f, -50.0f, 3.0f};
    uint16_t x[6];
    for (int i = 0; i < 6; i++) x[i] = aq_f32_to_f16(xf[i]);
    int32_t perm[6] = {5, 3, 1, 0, 2, 4};
    aq_qtensor t;
    cr_assert_eq(aq_quantize_x(&m, x, 1, 6, perm, &t, err), 0, "%s", err);
    cr_assert(t.main.cols == 4 && t.main.ngroups == 2 && t.main.bits == 4);
    cr_assert(t.outl.rows == 1 && t.outl.cols == 2 && t.outl.bits == 8 && t.outl.ngroups == 1);
    cr_assert(t.main.scales[0] == 0x362c && t.main.scales[1] == 0x301d, "%04x %04x", t.main.scales[0],
              t.main.scales[1]);
    cr_assert_eq(t.outl.scales[0], 0x3a4d, "%04x", t.outl.scales[0]);
    int wm[4] = {7, 5, 7, 4};
    for (int k = 0; k < 4; k++) cr_assert_eq(code_at(&t.main, 0, k), wm[k], "k = %d", k);
    cr_assert(code_at(&t.outl, 0, 0) == 127 && code_at(&t.outl, 0, 1) == -63);
    /* dequantize returns the original order: x2 -> 127·s_o, x5 -> 7·0.3857421875 */
    float d[6];
    cr_assert_eq(aq_dequantize(&t, d, err), 0, "%s", err);
    cr_assert_eq(d[2], 127.0f * 0.78759765625f);
    cr_assert_eq(d[4], -63.0f * 0.78759765625f);
    cr_assert_eq(d[5], 7.0f * 0.3857421875f);
    cr_assert_eq(d[0], 4.0f * 0.1285400390625f);
    aq_qtensor_free(&t);
    /* weights use α = 0.85 on the main part */
    cr_assert_eq(aq_quantize_w(&m, x, 1, 6, perm, &t, err), 0);
    /* main g0 W: t = fp32(3·0.85f) = 2.55; s = fp16(0.3642857) = 0.364257812 (0x35d4) */
    cr_assert_eq(t.main.scales[0], 0x35d4, "%04x", t.main.scales[0]);
    aq_qtensor_free(&t);
}

Test(qtensor, errors) {
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_qtensor t;
    uint16_t x[4] = {0x3c00, 0x7c00, 0, 0};   /* +inf */
    aq_mode_parse("w4a4-g2", &m, err);
    cr_assert_neq(aq_quantize_x(&m, x, 1, 4, NULL, &t, err), 0);
    cr_assert(strstr(err, "X") && strstr(err, "[0, 1]"), "%s", err);
    x[1] = 0;
    int32_t perm[4] = {0, 1, 2, 3};
    cr_assert_neq(aq_quantize_x(&m, x, 1, 4, perm, &t, err), 0, "perm for a non-atom mode");
    aq_mode_parse("atom-g2-o2", &m, err);
    cr_assert_neq(aq_quantize_w(&m, x, 1, 4, NULL, &t, err), 0);
    cr_assert(strstr(err, "W") && strstr(err, "perm"), "%s", err);
    int32_t dup[4] = {0, 1, 1, 3};
    cr_assert_neq(aq_quantize_w(&m, x, 1, 4, dup, &t, err), 0);
    cr_assert(strstr(err, "repeated"), "%s", err);
    aq_mode_parse("atom-g2-o4", &m, err);
    cr_assert_neq(aq_quantize_w(&m, x, 1, 4, perm, &t, err), 0);
    aq_mode_parse("fp16", &m, err);
    cr_assert_neq(aq_quantize_w(&m, x, 1, 4, NULL, &t, err), 0);
    aq_mode_parse("w4a16-g2", &m, err);
    cr_assert_neq(aq_quantize_w(&m, x, 1, 4, NULL, &t, err), 0);
}

/* ---- fake-quant ------------------------------------------------------------------------------ */

Test(fakequant, rounds_to_fp16_first_then_quantizes) {
    /* w4a4-g2 on {7.0001, 1}: fp16(7.0001) = 7 -> s = 1 -> {7, 1} exactly. */
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("w4a4-g2", &m, err);
    float s[2] = {7.0001f, 1.0f}, d[2];
    cr_assert_eq(aq_fakequant(&m, 0, s, 1, 2, NULL, d, "X", err), 0, "%s", err);
    cr_assert(d[0] == 7.0f && d[1] == 1.0f);
    /* in place works too */
    cr_assert_eq(aq_fakequant(&m, 1, s, 1, 2, NULL, s, "W", err), 0);
    cr_assert(s[0] == 7.0f && s[1] == 1.0f);
    float big[2] = {1e6f, 0.0f};
    cr_assert_neq(aq_fakequant(&m, 1, big, 1, 2, NULL, d, "layers.3.mlp.up_proj.weight", err), 0);
    cr_assert(strstr(err, "layers.3.mlp.up_proj.weight"), "%s", err);
}

Test(fakequant, fp16_and_weight_only_activations_copy) {
    char err[AX_ERR_LEN];
    aq_mode m;
    aq_mode_parse("fp16", &m, err);
    float s[3] = {0.1f, 1e5f, -3.0f}, d[3];
    cr_assert_eq(aq_fakequant(&m, 1, s, 1, 3, NULL, d, "W", err), 0);
    cr_assert_eq(memcmp(s, d, sizeof s), 0);
    aq_mode_parse("w4a16-g2", &m, err);
    cr_assert_eq(aq_fakequant(&m, 0, s, 1, 3, NULL, d, "X", err), 0);
    cr_assert_eq(memcmp(s, d, sizeof s), 0);
    /* weights: group {7, 3.5}: s = 1 -> {7, 4}; short group {-3}: s = fp16(3/7) = 0.428466796875 -> -7·s */
    float w[3] = {7.0f, 3.5f, -3.0f};
    cr_assert_eq(aq_fakequant(&m, 1, w, 1, 3, NULL, d, "W", err), 0);
    cr_assert(d[0] == 7.0f && d[1] == 4.0f && d[2] == -7.0f * 0.428466796875f, "%a %a %a", d[0], d[1], d[2]);
}

Test(fakequant, every_mode_matches_quantize_then_dequantize) {
    /* Consistency: fake-quant = dequantize(quantize(fp16(src))) for every integer mode, K odd. */
    char err[AX_ERR_LEN];
    const char *modes[] = {"w8a8", "w4a4-pc", "w4a4-g32", "w4a4-g64", "w4a4-mixed-g32", "atom-g32-o8"};
    int rows = 3, K = 77;
    uint64_t st = 11;
    float src[3 * 77], d[3 * 77], d2[3 * 77];
    uint16_t h[3 * 77];
    int32_t perm[77];
    for (int i = 0; i < K; i++) perm[i] = (i * 29) % K;   /* 29 is coprime with 77: a permutation */
    for (int i = 0; i < rows * K; i++) src[i] = (float)(tu_rand_unit(&st) * 4 - 2);
    cr_assert_eq(aq_f32_to_f16_checked(src, h, (size_t)rows * K, "src", err), 0);
    for (size_t mi = 0; mi < sizeof modes / sizeof *modes; mi++) {
        aq_mode m;
        cr_assert_eq(aq_mode_parse(modes[mi], &m, err), 0);
        const int32_t *p = m.permuted ? perm : NULL;
        for (int isw = 0; isw < 2; isw++) {
            aq_qtensor t;
            cr_assert_eq(aq_fakequant(&m, isw, src, rows, K, p, d, "T", err), 0, "%s: %s", modes[mi], err);
            cr_assert_eq((isw ? aq_quantize_w : aq_quantize_x)(&m, h, rows, K, p, &t, err), 0);
            cr_assert_eq(aq_dequantize(&t, d2, err), 0);
            cr_assert_eq(memcmp(d, d2, sizeof d), 0, "%s", modes[mi]);
            aq_qtensor_free(&t);
        }
    }
}

/* ---- KV cache 4-bit -------------------------------------------------------------------------- */

Test(kv4, hand_example) {
    /* {-1, 0.5, 2}: range 3, s = fp16(0.2) = 0.199951171875, z = rne(1/s = 5.0012) = 5.
     * -1/s = -5.0012 -> -5 + 5 = 0 -> (0-5)·s = -0.999755859375; 0.5/s = 2.5006 -> 3 + 5 = 8 -> 3·s;
     * 2/s = 10.0024 -> 10 + 5 = 15 -> 10·s = 1.99951171875. */
    float x[3] = {-1.0f, 0.5f, 2.0f};
    aq_kv4_fakequant(x, 3);
    cr_assert(x[0] == -0.999755859375f && x[1] == 0.599853515625f && x[2] == 1.99951171875f,
              "%a %a %a", x[0], x[1], x[2]);
    float y[16];
    for (int i = 0; i < 16; i++) y[i] = (float)i;          /* s = 1, z = 0: exact */
    aq_kv4_fakequant(y, 16);
    for (int i = 0; i < 16; i++) cr_assert_eq(y[i], (float)i);
}

Test(kv4, constant_vector_gives_fp16_value) {
    /* max == min -> s = 0 -> x̂ = fp16(x) = 0.300048828125 for 0.3. */
    float x[4] = {0.3f, 0.3f, 0.3f, 0.3f};
    aq_kv4_fakequant(x, 4);
    for (int i = 0; i < 4; i++) cr_assert_eq(x[i], 0.300048828125f);
    float n[2] = {NAN, 1.0f};
    aq_kv4_fakequant(n, 2);
    cr_assert(isnan(n[0]) && n[1] == 1.0f, "non-finite input leaves the vector unchanged");
}

Test(kv4, error_within_half_step_random) {
    /* Property: with x̂ = (q - z)·s, inside the range the error is at most s/2 plus the fp16 input
     * rounding and the grid offset -z·s vs min (|min - (-z·s)| <= s/2): bound s + 2^-10·|x|. */
    uint64_t st = 5;
    float x[128], orig[128];
    for (int it = 0; it < 500; it++) {
        int n = 1 + (int)(tu_rand_u64(&st) % 128);
        for (int i = 0; i < n; i++) orig[i] = x[i] = (float)(tu_rand_unit(&st) * 8 - 3);
        float mn = orig[0], mx = orig[0];
        for (int i = 0; i < n; i++) { mn = fminf(mn, orig[i]); mx = fmaxf(mx, orig[i]); }
        aq_kv4_fakequant(x, n);
        double s = (mx - mn) / 15.0 * 1.001 + 1e-7;
        for (int i = 0; i < n; i++)
            cr_assert(fabs(x[i] - orig[i]) <= s + 0x1p-10 * fabs(orig[i]), "%g vs %g", x[i], orig[i]);
    }
}
