/* fuzz_safetensors.c — libFuzzer harness: model.safetensors (header, offsets, dtypes, data).
 *
 * Calls:   ae_st_open + ae_st_find + ae_st_read_f32 of every tensor (eval/safetensors.h), then
 *          ae_model_load on a folder holding the file next to the fixed tiny config.json
 *          (eval/model.h), as every model command does.
 *          The call lives in fuzz_targets.h (fz_safetensors), shared with tests/test_fuzz_replay.c.
 * Input:   the bytes of model.safetensors.
 * Seeds:   tiny checkpoints written by ae_make_model in f16/bf16/f32 (they pass both calls) and the
 *          first 32 KB of stories260K's model.safetensors (a truncated file) (written by
 *          tests/fuzz/seeds.c into build-fuzz/corpus/safetensors/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/safetensors/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_safetensors; -max_len=32768 there).
 * Run:     build-fuzz/fuzz/fuzz_safetensors -runs=N -max_len=32768 build-fuzz/corpus/safetensors
 *          tests/fuzz-corpus/safetensors
 * A crash is saved under build-fuzz/crashes/safetensors/; copy it to tests/fuzz-corpus/safetensors/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "safetensors");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_safetensors(data, size), "safetensors");
}
