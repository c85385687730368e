// ak_plan.cu — the one launch planner of the integer GEMM: (mode, M, N, K, the GPU's SM count and
// compute capability) -> tile configuration, split-K count and split kind, path (the wgmma path of
// ak_gemm_sm90.cu on compute capability 9.x for the modes it serves and M >= AK_WGMMA_MIN_M).
// ak_gemm_dev (the context's facts), the host wrappers ak_gemm_ex / ak_gemm_splits (the current
// device's) and the benchmark all call it, so a shape maps to one launch everywhere. The split count never changes Y beyond what the contract's
// k_splits says (NUMERICS.md clarification 3; apex4 check compares aq_gemm at the same k_splits).
// Policy and measurements: kernels/NOTES.md ("M <= 16: gemv_kernel", "Decode GEMV", "Design").
#include "ak_internal.cuh"

#include <cstring>

// INT: the integer sum over K is one exact sum (the MIXED epilogue; or a group epilogue with one
// group per row for both operands and no outlier part: w4a4-pc, w8a8). GROUP otherwise.
int ak_split_mode(const aq_mode *m) {
    if (m->epilogue == AQ_EPI_MIXED ||
        (m->w.gran == AQ_GRAN_ROW && m->x.gran == AQ_GRAN_ROW && m->outliers == 0))
        return AK_SPLIT_INT;
    return AK_SPLIT_GROUP;
}

// gemv_ms_kernel's split policy (kernels/ak_gemm.cu; its declaration belongs in ak_internal.cuh).
int ak_gemv_ms_splits(const aq_mode *m, int N, int K, int sms);

namespace {

// Main-part groups of the weights (the GEMM's G) and the outlier count of a mode at K.
void mode_groups(const aq_mode *m, int K, int *G, int *o) {
    *o = m->outliers;
    const int g = aq_operand_group(&m->w, K - *o);
    *G = (K - *o + g - 1) / g;
}

// Split count the kernels pick for a configuration (k_splits = 0). hopper: compute capability 9.x,
// where AK_CFG_GEMV runs gemv_ms_kernel (ak_gemm.cu ms_serves) with its own policy.
int auto_splits(const aq_mode *m, int cfg, int M, int N, int K, int sms, bool hopper) {
    int G, o;
    mode_groups(m, K, &G, &o);
    int S;
    if (cfg == AK_CFG_GEMV && hopper) {   // gemv_ms_kernel (0: compiled out, gemv_kernel's policy below)
        S = ak_gemv_ms_splits(m, N, K, sms);
        if (S > 0) return S;
    }
    if (cfg == AK_CFG_GEMV) {   // gemv_kernel: warps of AK_GEMV_NCOLS columns stream the weights
        const long long warps = (N + AK_GEMV_NCOLS - 1) / AK_GEMV_NCOLS, want = (long long)sms * AK_GEMV_WARPS_PER_SM;
        if (warps >= want) return 1;
        S = (int)((want + warps - 1) / warps);
        const int spans = ((K - o) * m->x.bits / 8 + 63) / 64;
        if (S > spans / AK_GEMV_MIN_SPANS) S = spans / AK_GEMV_MIN_SPANS;
    } else if (cfg == AK_CFG_BIG) {
        return 1;
    } else {                    // split the two smaller tile configurations up to ~2 blocks per SM
        const long long blocks = cfg == AK_CFG_SMALL ? (long long)((N + AK_SMALL_BN - 1) / AK_SMALL_BN)
                                                     : (long long)((M + 63) / 64) * ((N + 127) / 128);
        const long long want = 2LL * sms;
        if (blocks >= want) return 1;
        S = (int)((want + blocks - 1) / blocks);
        const int tile_bytes = cfg == AK_CFG_SMALL ? AK_SMALL_BKB : 128;   // the configuration's BKB
        const int tiles = ((K - o) * m->x.bits / 8 + tile_bytes - 1) / tile_bytes;
        if (S > tiles / 2) S = tiles / 2;
    }
    if (ak_split_mode(m) == AK_SPLIT_GROUP && S > G) S = G;
    return S < 1 ? 1 : S;
}

}  // namespace

namespace {

// The wgmma path's group pattern for mode m at K (ak_wgmma_group_steps), 0 when it does not serve m:
// an outlier part (atom), unequal or other code widths, a group length it has no pattern for.
int wgmma_steps(const aq_mode *m, int K) {
    if (m->outliers > 0 || m->w.bits != m->x.bits || (m->w.bits != 4 && m->w.bits != 8)) return 0;
    int G, o;
    mode_groups(m, K, &G, &o);
    const int g = aq_operand_group(&m->w, K);   // the GEMM's groups (MIXED: the W sub-scale groups)
    return ak_wgmma_group_steps(m->epilogue == AQ_EPI_MIXED || g < K ? g : K, G);
}

// Split count of the wgmma path (k_splits = 0): one 128 x 128 block per SM (its shared memory allows
// one); split K until the SMs are covered, at most half the block's 128-code stages, and (group split)
// at most one split per group.
int wgmma_splits(const aq_mode *m, int M, int N, int K, int sms) {
    int G, o;
    mode_groups(m, K, &G, &o);
    const long long blocks = (long long)((M + 127) / 128) * ((N + 127) / 128);
    if (blocks >= sms) return 1;
    int S = (int)((sms + blocks - 1) / blocks);
    const int stages = ((K - o) / 32 + 3) / 4;
    if (S > stages / 2) S = stages / 2;
    if (ak_split_mode(m) == AK_SPLIT_GROUP && S > G) S = G;
    return S < 1 ? 1 : S;
}

}  // namespace

extern "C" int ak_gemm_plan_ex(const aq_mode *m, int M, int N, int K, int sms, int cc, int path, int k_splits,
                               ak_plan *out) {
    if (!out) return -1;
    memset(out, 0, sizeof *out);
    if (!m || !aq_mode_is_integer(m) || M < 1 || N < 1 || K < 32 || sms < 1 || k_splits < 0 || k_splits > 65535 ||
        path < AK_PATH_AUTO || path > AK_PATH_WGMMA_NOEPI)
        return -1;
    const bool hopper = cc >= 90 && cc <= 99;
    const bool serves = hopper && wgmma_steps(m, K) != 0;
    ak_path p;
    if (path == AK_PATH_AUTO) p = AK_WGMMA && serves && M >= AK_WGMMA_MIN_M ? AK_PATH_WGMMA : AK_PATH_INT8;
    else if (ak_path_is_wgmma(path) && !serves) return -1;
    else p = (ak_path)path;
    // mma.sync tile configuration: M <= 16 -> gemv_kernel (AK_GEMV) or 16 x 256 tiles; otherwise
    // 128 x 128 tiles unless they would give fewer than 2 blocks per SM, then 64 x 128.
    const long long big_tiles = (long long)((M + 127) / 128) * ((N + 127) / 128);
    if (M <= 16) out->cfg = AK_GEMV ? AK_CFG_GEMV : AK_CFG_SMALL;
    else out->cfg = big_tiles < 2LL * sms ? AK_CFG_MID : AK_CFG_BIG;
    out->splits = k_splits ? k_splits : ak_path_is_wgmma(p) ? wgmma_splits(m, M, N, K, sms)
                                                             : auto_splits(m, out->cfg, M, N, K, sms, hopper);
    int G, o;
    mode_groups(m, K, &G, &o);
    const int nparts = o > 0 ? 2 : 1;
    if (out->splits == 1) out->split_kind = AK_SPLIT_NONE;
    else if (nparts == 1 && (G == 1 || ak_split_mode(m) == AK_SPLIT_INT)) out->split_kind = AK_SPLIT_INT;
    else out->split_kind = AK_SPLIT_GROUP;
    // mma.sync: the INT8 widening path, the measured one on Hopper (kernels/NOTES.md); both bit-exact.
    out->path = p;
    return 0;
}

extern "C" int ak_gemm_plan(const aq_mode *m, int M, int N, int K, int sms, int k_splits, ak_plan *out) {
    int dev = 0, maj = 0, mnr = 0, cc = 0;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaDeviceGetAttribute(&maj, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&mnr, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess)
        cc = 10 * maj + mnr;
    else
        cudaGetLastError();   // no device: the mma.sync plans
    return ak_gemm_plan_ex(m, M, N, K, sms, cc, AK_PATH_AUTO, k_splits, out);
}

extern "C" int ak_gemm_splits(const aq_mode *m, int M, int N, int K) {
    int dev = 0, sms = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
        cudaGetLastError();
        return 1;   // no device: nothing to plan for
    }
    ak_plan p;
    if (ak_gemm_plan(m, M, N, K, sms, 0, &p)) return 1;
    return p.splits;
}
