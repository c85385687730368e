/* testutil.h — tiny helpers shared by the Criterion tests (add only; keep it small). */
#ifndef APEX4_TESTUTIL_H
#define APEX4_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64 (Steele, Lea, Flood 2014): deterministic test inputs, state in the caller. */
static inline uint64_t tu_rand_u64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
/* Uniform in [0, 1) with 53 random bits. */
static inline double tu_rand_unit(uint64_t *state) { return (double)(tu_rand_u64(state) >> 11) * 0x1p-53; }

/* A fresh temporary directory "/tmp/apex4-test-XXXXXX" written into buf (>= 32 bytes); 0 or -1. */
static inline int tu_mkdtemp(char *buf, size_t len) {
    if (len < 32) return -1;
    snprintf(buf, len, "/tmp/apex4-test-XXXXXX");
    return mkdtemp(buf) ? 0 : -1;
}

#endif
