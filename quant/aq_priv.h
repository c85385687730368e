/* aq_priv.h — helpers shared by the quant/ sources only (not a public contract). */
#ifndef APEX4_AQ_PRIV_H
#define APEX4_AQ_PRIV_H

#include "aq.h"

/* Code of row r, column c of a quantized matrix (int4 nibble sign-extended, or int8). */
static inline int aq_qmat_code(const aq_qmat *q, int r, int c) {
    if (q->bits == 4) {
        uint8_t b = q->codes[(size_t)r * (size_t)((q->cols + 1) / 2) + (size_t)(c >> 1)];
        int nib = (c & 1) ? (b >> 4) : (b & 0x0f);
        return nib >= 8 ? nib - 16 : nib;
    }
    return (int8_t)q->codes[(size_t)r * (size_t)q->cols + (size_t)c];
}

/* Bytes of one row of codes. */
static inline size_t aq_qmat_row_bytes(const aq_qmat *q) {
    return q->bits == 4 ? (size_t)((q->cols + 1) / 2) : (size_t)q->cols;
}

/* Number of scale columns: 1 for MIXED weights (per-channel S; sub holds the groups), else ngroups. */
static inline int aq_qmat_scale_cols(const aq_qmat *q) { return q->sub ? 1 : q->ngroups; }

/* Check that perm [K] is a permutation of 0..K-1; -1 with err naming `what` otherwise. */
int aq_check_perm(const int32_t *perm, int K, const char *what, char *err);

#endif
