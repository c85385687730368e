/* aq_case.h — GEMM test cases in HDF5 (used by `apex4 gemm`): inputs X, W (and perm), the reference's
 * quantized operands and Y, written and compared byte for byte. Layout: quant/CASE_FORMAT.md.
 *
 * File layout (format "apex4-gemm-case", version 1), all datasets row-major:
 *   X               fp16  [M, K]          activations (input)
 *   W               fp16  [N, K]          weights (input)
 *   perm            int32 [K]             atom modes: channel order (perm[i] = original channel of
 *                                         permuted channel i; the last o are the outliers)
 *   qx_codes        u8 [M, ceil(Kc/2)] (4-bit, packed, even column in the low nibble) or
 *                   i8 [M, Kc] (8-bit)    Kc = K (atom: K - o); attribute bits = 4 or 8
 *   qx_scales       fp16  [M, G]          G = ceil(Kc / g) (per-token: G = 1)
 *   qw_codes        as qx_codes, [N, ...]
 *   qw_scales       fp16  [N, G]          (mixed: [N, 1], the per-channel S)
 *   qw_sub          u8    [N, G]          mixed only: integer sub-scales u in 1..15
 *   qx_outl_codes   i8    [M, o]          atom with o > 0: INT8 outlier channels
 *   qx_outl_scales  fp16  [M, 1]
 *   qw_outl_codes   i8    [N, o]
 *   qw_outl_scales  fp16  [N, 1]
 *   Y               fp16  [M, N]          output
 * fp16 is an HDF5 IEEE float of 2 bytes (sign bit 15, exponent 10..14 with bias 15, mantissa 0..9),
 * the type h5py and numpy write for float16.
 * Root attributes: format (string "apex4-gemm-case"), version (int32 1), mode (string), M, N, K,
 * k_splits, group (int32: qx's group length along K), outliers (int32), source (string "reference"
 * or "cuda-int8" / "cuda-int4"), and for generated inputs seed (uint64) and dist (string).
 * Owners in pairs: aq_case_* fill an aq_case, aq_case_free releases it. Errors: 0 or -1 with err
 * (AX_ERR_LEN bytes) naming the file and the dataset. */
#ifndef APEX4_AQ_CASE_H
#define APEX4_AQ_CASE_H

#include <stdint.h>
#include <stdio.h>
#include "aq.h"

typedef struct {
    aq_mode    mode;
    int        M, N, K, k_splits;
    uint16_t  *x;          /* [M, K] fp16                                   */
    uint16_t  *w;          /* [N, K] fp16                                   */
    int32_t   *perm;       /* [K] int32, atom modes only (else NULL)        */
    aq_qtensor qx, qw;     /* quantized operands (after aq_case_run)       */
    uint16_t  *y;          /* [M, N] fp16 (after aq_case_run)              */
    int        have_q;     /* 1 once qx, qw, y are filled                  */
    uint64_t   seed;       /* generated inputs: seed, dist; else dist[0]=0 */
    char       dist[16];
    char       source[24]; /* "reference", "cuda-int8", ...                 */
} aq_case;

/* Read X, W and the optional perm from an HDF5 file (the datasets above; other datasets ignored).
 * Hostile input: before libhdf5 opens the file it must be a regular, non-empty file whose HDF5
 * metadata pass a structural pre-check (superblock, root group B-tree, symbol table nodes, local
 * heap, every member's object header: sizes and addresses inside the file, as in the HDF5 format
 * spec; libhdf5 1.10 would otherwise attempt absurd allocations or leak on such files). Before each
 * H5Dread: dtype class and size, rank, each dim 1..2^30, bytes = product * type size without
 * overflow and <= the file size, and contiguous storage of exactly that size inside the file.
 * Then: X and W present, rank 2, fp16, K equal, finite, perm int32 [K] and a permutation. For atom
 * modes without perm, perm comes from aq_case_perm_sumsq of X. Errors name the file and dataset.
 * This is the entry point for a fuzz harness reading a case file from a path. */
int aq_case_read_inputs(const char *path, const aq_mode *mode, int k_splits, aq_case *c, char *err);

/* Generate inputs: X [M,K] ~ N(0,1) (dist "normal") or Student-t with 3 degrees of freedom
 * ("heavy"), W [N,K] ~ N(0, 1/K) (or t3/sqrt(K)); values rounded to fp16, clamped to ±60000.
 * Normal draws: Box-Muller on splitmix64(seed). Atom: perm from Σx² of X (perm_random = 0) or a
 * seeded Fisher-Yates shuffle (perm_random = 1). */
int aq_case_random(const aq_mode *mode, int M, int N, int K, int k_splits, uint64_t seed,
                   const char *dist, int perm_random, aq_case *c, char *err);

/* Atom calibration on X itself (NUMERICS.md "Atom-style"): channels sorted ascending by Σ_m x[m,k]²
 * (fp64), ties by channel index. x [M,K] fp16 -> perm [K]. */
void aq_case_perm_sumsq(const uint16_t *x, int M, int K, int32_t *perm);

/* Quantize X and W with the reference and run aq_gemm (k_splits, nthreads). */
int aq_case_run(aq_case *c, int nthreads, char *err);

/* Write inputs, quantized operands and Y (if have_q) atomically (tmp name, then rename). */
int aq_case_write(const char *path, const aq_case *c, char *err);

/* Compare the result datasets (q* and Y; inputs too when present in both) of case c with those of
 * the HDF5 file `path` (or the in-memory case `other` when path is NULL): per dataset, the number
 * of differing bytes is printed to `out` as "  <name>: <n> of <total> bytes differ" (a dataset
 * missing on one side or with another shape or dtype counts as entirely different; inputs X, W, perm
 * absent on the other side are skipped, and so are qw_* for an in-memory `other`, which holds device
 * results: X's codes and scales and Y). *ndiff receives the total. Returns -1 (err naming the file,
 * and the dataset where one is at fault) when `path` is bad input: unreadable, failing the pre-check
 * of aq_case_read_inputs, or holding a dataset that cannot be looked up or read (corrupt metadata,
 * sizes beyond the file) — never counted as "bytes differ". A case whose x is NULL lists no inputs;
 * a qmat with NULL codes is not listed. */
int aq_case_compare(const aq_case *c, const char *path, const aq_case *other, FILE *out, long *ndiff,
                    char *err);

void aq_case_free(aq_case *c);

#endif
