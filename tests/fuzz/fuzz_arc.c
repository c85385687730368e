/* fuzz_arc.c — libFuzzer harness: ARC jsonl (original and HF schema).
 *
 * Calls:   ad_zs_load(arc_easy, tmp data root) (datasets/zeroshot.h); arc_challenge uses the same
 *          loader.
 *          The call lives in fuzz_targets.h (fz_arc), shared with tests/test_fuzz_replay.c.
 * Input:   ARC-Easy-Test.jsonl.
 * Seeds:   the first 12 records of ARC-Easy-Test.jsonl and ARC-Challenge-Test.jsonl (written by
 *          tests/fuzz/seeds.c into build-fuzz/corpus/arc/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/arc/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_arc; -max_len=8192 there).
 * Run:     build-fuzz/fuzz/fuzz_arc -runs=N -max_len=8192 build-fuzz/corpus/arc tests/fuzz-corpus/arc
 * A crash is saved under build-fuzz/crashes/arc/; copy it to tests/fuzz-corpus/arc/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "arc");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_arc(data, size), "arc");
}
