/* fuzz_model_index.c — libFuzzer harness: model.safetensors.index.json of a sharded checkpoint.
 *
 * Calls:   ae_model_load(dir) (eval/model.h) on a tiny 2-shard checkpoint
 *          (model-0000{1,2}-of-00002.safetensors, made by ae_make_model at start-up) whose index is the
 *          input.
 *          The call lives in fuzz_targets.h (fz_model_index), shared with tests/test_fuzz_replay.c.
 * Input:   the bytes of model.safetensors.index.json.
 * Seeds:   the index ae_make_model writes for the same tiny config with --shards 2 (written by
 *          tests/fuzz/seeds.c into build-fuzz/corpus/model_index/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/model_index/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_model_index; -max_len=4096 there).
 * Run:     build-fuzz/fuzz/fuzz_model_index -runs=N -max_len=4096 build-fuzz/corpus/model_index
 *          tests/fuzz-corpus/model_index
 * A crash is saved under build-fuzz/crashes/model_index/; copy it to tests/fuzz-corpus/model_index/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "model_index");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_model_index(data, size), "model_index");
}
