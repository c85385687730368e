/* fuzz_hellaswag_txt.c — libFuzzer harness: HellaSwag in llama.cpp's text format (6 lines per task).
 *
 * Calls:   ad_zs_load(hellaswag, tmp data root) (datasets/zeroshot.h) with no hellaswag_val.jsonl
 *          present, so the text loader runs.
 *          The call lives in fuzz_targets.h (fz_hellaswag_txt), shared with tests/test_fuzz_replay.c.
 * Input:   hellaswag_val_full.txt.
 * Seeds:   the first 5 tasks (30 lines) of the real file (written by tests/fuzz/seeds.c into
 *          build-fuzz/corpus/hellaswag_txt/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/hellaswag_txt/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_hellaswag_txt; -max_len=8192 there).
 * Run:     build-fuzz/fuzz/fuzz_hellaswag_txt -runs=N -max_len=8192 build-fuzz/corpus/hellaswag_txt
 *          tests/fuzz-corpus/hellaswag_txt
 * A crash is saved under build-fuzz/crashes/hellaswag_txt/; copy it to tests/fuzz-corpus/hellaswag_txt/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "hellaswag_txt");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_hellaswag_txt(data, size), "hellaswag_txt");
}
