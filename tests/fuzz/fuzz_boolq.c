/* fuzz_boolq.c — libFuzzer harness: BoolQ dev.jsonl.
 *
 * Calls:   ad_zs_load(boolq, tmp data root) (datasets/zeroshot.h).
 *          The call lives in fuzz_targets.h (fz_boolq), shared with tests/test_fuzz_replay.c.
 * Input:   dev.jsonl.
 * Seeds:   the first 4 records of the real file (written by tests/fuzz/seeds.c into
 *          build-fuzz/corpus/boolq/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/boolq/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_boolq; -max_len=8192 there).
 * Run:     build-fuzz/fuzz/fuzz_boolq -runs=N -max_len=8192 build-fuzz/corpus/boolq
 *          tests/fuzz-corpus/boolq
 * A crash is saved under build-fuzz/crashes/boolq/; copy it to tests/fuzz-corpus/boolq/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "boolq");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_boolq(data, size), "boolq");
}
