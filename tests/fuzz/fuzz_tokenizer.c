/* fuzz_tokenizer.c — libFuzzer harness: tokenizer.json (HF tokenizers BPE).
 *
 * Calls:   ae_tokenizer_load(path) (eval/tokenizer.h); when it loads, a fixed text goes through
 *          ae_tokenize / ae_token_piece / ae_detokenize (what ppl and zeroshot do next).
 *          The call lives in fuzz_targets.h (fz_tokenizer), shared with tests/test_fuzz_replay.c.
 * Input:   the bytes of tokenizer.json.
 * Seeds:   stories260K's tokenizer.json (20 KB) and hand-minimised tokenizers in
 *          tests/fuzz-corpus/tokenizer/ (written by tests/fuzz/seeds.c into
 *          build-fuzz/corpus/tokenizer/ at `make fuzz`
 *          time), plus the saved inputs of tests/fuzz-corpus/tokenizer/.
 * Fails:   any crash or sanitizer report (ASan, UBSan with -fno-sanitize-recover=all, LSan leaks), a
 *          malloc above -rss_limit_mb, a run over -timeout, or an error returned with an empty message.
 * Build:   make fuzz (build-fuzz/fuzz/fuzz_tokenizer; -max_len=32768 there).
 * Run:     build-fuzz/fuzz/fuzz_tokenizer -runs=N -max_len=32768 build-fuzz/corpus/tokenizer
 *          tests/fuzz-corpus/tokenizer
 * A crash is saved under build-fuzz/crashes/tokenizer/; copy it to tests/fuzz-corpus/tokenizer/ so that
 * `make test` replays it from then on. */
#include "fuzz_targets.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (!fz_env_get()) fz_libfuzzer(-1, "tokenizer");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    return fz_libfuzzer(fz_tokenizer(data, size), "tokenizer");
}
