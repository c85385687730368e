/* test_gpu.c — the CUDA kernels (kernels/ak.h) against hand-derived values and, byte for byte, the
 * CPU reference (quant/aq.h) over a small sweep of modes, shapes and inputs. Every test skips visibly
 * ("skipped: no CUDA device") when no device is present (CI has none). Shapes are small so that the
 * binary stays fast under ASan+UBSan; the full sweep is `apex4 check --device cuda`. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "aq.h"
#include "ak.h"
#include "testutil.h"

#define NEED_DEVICE()                                                              \
    do {                                                                           \
        if (ak_device_count() < 1) cr_skip_test("skipped: no CUDA device");        \
    } while (0)

static aq_mode mode_of(const char *name) {
    aq_mode m;
    char err[AX_ERR_LEN];
    cr_assert_eq(aq_mode_parse(name, &m, err), 0, "%s", err);
    return m;
}

/* Hand-derived: w4a4-pc, K = 32. X row 0 = 7 everywhere -> amax 7, s = 7/7 = 1, codes 7.
 * X row 1 = 3.5 everywhere except x[0] = 7 -> s = 1, 3.5/1 = 3.5 is a tie -> rne gives 4; codes
 * {7, 4 x 31}. W row 0 = 7 everywhere (codes 7, s = 1); W row 1 = -7 (codes -7, s = 1).
 * Y[0,0] = 32·7·7 = 1568, Y[0,1] = -1568, Y[1,0] = 7·(7 + 31·4) = 7·131 = 917, Y[1,1] = -917;
 * all integers below 2048, exact in fp16: 1568 = 0x6620, 917 = 0x632A (917 = 1.791015625·2^9,
 * mantissa 0.791015625·1024 = 810 = 0x32A, exponent 9+15 = 24 -> 0x6000 | 0x32A). */
Test(gpu, hand_derived_w4a4_pc_with_ties) {
    NEED_DEVICE();
    aq_mode m = mode_of("w4a4-pc");
    uint16_t x[2 * 32], w[2 * 32], y[4];
    for (int k = 0; k < 32; k++) {
        x[k] = aq_f32_to_f16(7.0f);
        x[32 + k] = aq_f32_to_f16(k ? 3.5f : 7.0f);
        w[k] = aq_f32_to_f16(7.0f);
        w[32 + k] = aq_f32_to_f16(-7.0f);
    }
    char err[AX_ERR_LEN];
    aq_qtensor qx, qw;
    cr_assert_eq(ak_quantize_x(&m, x, 2, 32, NULL, &qx, err), 0, "%s", err);
    cr_assert_eq(qx.main.scales[0], 0x3c00);                   /* s = 1.0 */
    cr_assert_eq(qx.main.scales[1], 0x3c00);
    cr_assert_eq(qx.main.codes[0], 0x77);                      /* 7 | 7 << 4 */
    cr_assert_eq(qx.main.codes[16], 0x47);                     /* row 1: x0 = 7 (low), x1 = 4 (high) */
    cr_assert_eq(qx.main.codes[17], 0x44);
    cr_assert_eq(aq_quantize_w(&m, w, 2, 32, NULL, &qw, err), 0, "%s", err);
    for (int p = 0; p < 2; p++) {
        memset(y, 0xff, sizeof y);
        cr_assert_eq(ak_gemm(&qx, &qw, p ? AK_PATH_INT4 : AK_PATH_INT8, y, err), 0, "%s", err);
        cr_assert_eq(y[0], 0x6620, "path %d: y[0,0] = 0x%04x", p, y[0]);
        cr_assert_eq(y[1], 0xe620, "path %d: y[0,1] = 0x%04x", p, y[1]);
        cr_assert_eq(y[2], 0x632a, "path %d: y[1,0] = 0x%04x", p, y[2]);
        cr_assert_eq(y[3], 0xe32a, "path %d: y[1,1] = 0x%04x", p, y[3]);
    }
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
}

/* Hand-derived: a group whose scale underflows. x = 2^-24 (fp16 min subnormal) in every channel:
 * amax/7 = 2^-24/7 < 2^-25 -> fp16 rounds to 0 -> s = 0 and every code 0 (NUMERICS.md step 4). */
Test(gpu, scale_underflow_gives_zero_codes) {
    NEED_DEVICE();
    aq_mode m = mode_of("w4a4-g32");
    uint16_t x[64];
    for (int k = 0; k < 64; k++) x[k] = 0x0001;
    char err[AX_ERR_LEN];
    aq_qtensor q;
    cr_assert_eq(ak_quantize_x(&m, x, 1, 64, NULL, &q, err), 0, "%s", err);
    cr_assert_eq(q.main.ngroups, 2);
    cr_assert_eq(q.main.scales[0], 0);
    cr_assert_eq(q.main.scales[1], 0);
    for (int i = 0; i < 32; i++) cr_assert_eq(q.main.codes[i], 0);
    aq_qtensor_free(&q);
}

/* Every standard integer mode, odd M/N, K a multiple of 32 but not of 128, each input kind, both
 * paths: codes, scales and Y must equal the CPU reference's bytes. */
Test(gpu, sweep_matches_reference_byte_for_byte) {
    NEED_DEVICE();
    static const char *modes[] = {"w8a8", "w4a4-pc", "w4a4-g32", "w4a4-g64", "w4a4-g128", "w4a4-g256",
                                  "w4a4-mixed-g128", "atom-g128-o128"};
    static const int shapes[][3] = {{1, 33, 160}, {7, 131, 352}, {130, 67, 416}};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        aq_mode m = mode_of(modes[i]);
        for (int s = 0; s < 3; s++)
            for (int in = 0; in < 3; in++) {
                ak_check_result r;
                char err[AX_ERR_LEN];
                int rc = ak_check_case(&m, shapes[s][0], shapes[s][1], shapes[s][2], (ak_input)in, 11u + (unsigned)s, 3, 2,
                                       &r, err);
                cr_assert_eq(rc, 0, "%s M=%d N=%d K=%d: %s", modes[i], shapes[s][0], shapes[s][1], shapes[s][2], err);
                cr_expect(r.ok, "%s M=%d N=%d K=%d %s: %s", modes[i], shapes[s][0], shapes[s][1], shapes[s][2],
                          ak_input_name((ak_input)in), r.msg);
                cr_assert_gt(r.quant_bytes, 0);
            }
    }
}

/* Shapes the kernels do not take are rejected with a message naming the constraint. */
Test(gpu, rejects_unsupported_shapes) {
    NEED_DEVICE();
    aq_mode m = mode_of("w4a4-g128");
    char err[AX_ERR_LEN] = "";
    uint16_t x[100] = {0};
    aq_qtensor q;
    cr_assert_neq(ak_quantize_x(&m, x, 1, 100, NULL, &q, err), 0);
    cr_assert(strstr(err, "multiple of 32"), "%s", err);
    aq_mode g48 = mode_of("w4a4-g48");
    cr_assert_neq(ak_supports(&g48, 96, err), 0);
    cr_assert(strstr(err, "group size"), "%s", err);
    aq_mode fp = mode_of("fp16");
    cr_assert_neq(ak_supports(&fp, 64, err), 0);
    cr_assert_eq(ak_supports(&m, 160, err), 0, "%s", err);
}

/* A non-finite activation is an error naming X and the position, not a silently wrong code. */
Test(gpu, rejects_non_finite_input) {
    NEED_DEVICE();
    aq_mode m = mode_of("w4a4-g32");
    uint16_t x[2 * 64];
    for (int i = 0; i < 128; i++) x[i] = 0x3c00;
    x[64 + 5] = 0x7e00;   /* NaN at [1, 5] */
    char err[AX_ERR_LEN] = "";
    aq_qtensor q;
    cr_assert_neq(ak_quantize_x(&m, x, 2, 64, NULL, &q, err), 0);
    cr_assert(strstr(err, "[1, 5]"), "%s", err);
}

/* GEMM operands from different modes are refused. */
Test(gpu, rejects_mismatched_operands) {
    NEED_DEVICE();
    aq_mode a = mode_of("w4a4-g32"), b = mode_of("w4a4-g64");
    uint16_t x[64], y[1];
    for (int i = 0; i < 64; i++) x[i] = aq_f32_to_f16((float)(i % 5) - 2.0f);
    char err[AX_ERR_LEN] = "";
    aq_qtensor qx, qw;
    cr_assert_eq(aq_quantize_x(&a, x, 1, 64, NULL, &qx, err), 0, "%s", err);
    cr_assert_eq(aq_quantize_w(&b, x, 1, 64, NULL, &qw, err), 0, "%s", err);
    cr_assert_neq(ak_gemm(&qx, &qw, AK_PATH_INT8, y, err), 0);
    cr_assert(strstr(err, "modes differ"), "%s", err);
    aq_qtensor_free(&qx);
    aq_qtensor_free(&qw);
}

/* The quantizer's division-free rounding equals clamp(__float2int_rn(__fdiv_rn(v, s))) (the
 * contract's CUDA spelling, computed on the device by the IEEE intrinsics) for ALL fp16 pairs. */
Test(gpu, fast_rounding_matches_ieee_division_for_all_fp16_pairs) {
    NEED_DEVICE();
    long long pairs = 0, bad = -1;
    char err[AX_ERR_LEN] = "";
    cr_assert_eq(ak_selftest_rounding(&pairs, &bad, err), 0, "%s", err);
    cr_assert_eq(pairs, 31743LL * 63488LL);   /* s: 0x0001..0x7bff; v: 65536 - 2048 inf/NaN patterns */
    cr_assert_eq(bad, 0, "%s", err);
}
