/* fuzz_hellaswag_jsonl.c — libFuzzer harness: HellaSwag original hellaswag_val.jsonl.
 *
 * Calls:   ad_zs_load(hellaswag, tmp data root) (datasets/zeroshot.h) with hellaswag_val.jsonl present
 *          (preferred over the text file).
 *          The call lives in fuzz_targets.h (fz_hellaswag_jsonl), shared with tests/test_fuzz_replay.c.
 * Input:   hellaswag_val.jsonl.
 * Seeds:   hand-written records in tests/fuzz-corpus/hellaswag_jsonl/ (the data root has no original
 *          jsonl) (written by tests/fuzz/seeds.c into build-fuzz/corpus/hellaswag_jsonl/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/hellaswag_jsonl/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_hellaswag_jsonl; -max_len=8192 there).
 * Run:     build-fuzz/fuzz/fuzz_hellaswag_jsonl -runs=N -max_len=8192 build-fuzz/corpus/hellaswag_jsonl
 *          tests/fuzz-corpus/hellaswag_jsonl
 * A crash is saved under build-fuzz/crashes/hellaswag_jsonl/; copy it to tests/fuzz-corpus/hellaswag_jsonl/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "hellaswag_jsonl");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_hellaswag_jsonl(data, size), "hellaswag_jsonl");
}
