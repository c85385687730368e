#!/usr/bin/env bash
# kernels/device_pack.sh — build here what a GPU-machine call needs and pack it into .devpack/ (ignored
# by git via .git/info/exclude; name it in the device call's `carry`): the apex4 binary and GPU test
# binaries for sm_90a (BUILD=build-dev), the shared libraries the GPU image lacks, the data-root subset
# the runs read (small models, WikiText-2, the zero-shot sets), the transformers peer script's inputs,
# and libFuzzer binaries with their corpora, in parts (below). Unpacked there by eval/device_eval.sh.
# Usage: bash kernels/device_pack.sh [fuzz-harness,...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${APEX4_DATA:-../shared}
P=/tmp/apex4-pack
rm -rf "$P" && mkdir -p "$P/bin" "$P/libs" "$P/data/data" "$P/data/models" "$P/fuzz"
make BUILD=build-dev -j2 NVCC_GENCODE="-gencode=arch=compute_90a,code=sm_90a" build-dev/apex4 \
     build-dev/tests/test_gpu build-dev/tests/test_gpu_ops build-dev/tests/test_engine build-dev/tests/test_gpu_engine build-dev/tests/test_gpu_layer build-dev/tests/test_gpu_fused build-dev/tests/test_gpu_calib >/tmp/apex4-pack-build.log 2>&1 \
    || { tail -30 /tmp/apex4-pack-build.log; exit 1; }
cp build-dev/apex4 build-dev/tests/test_gpu build-dev/tests/test_gpu_ops build-dev/tests/test_engine build-dev/tests/test_gpu_engine build-dev/tests/test_gpu_layer build-dev/tests/test_gpu_fused build-dev/tests/test_gpu_calib "$P/bin/"
libs() { ldd "$@" | awk '/=> \//{print $3}' | sort -u | grep -v -E '/(libc|libm|libpthread|libdl|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*)\.so' || true; }
FZ=""
IFS=, read -ra HS <<< "${1:-}"
for h in "${HS[@]}"; do [ -n "$h" ] && FZ="$FZ build-fuzz/fuzz/fuzz_$h"; done
for l in $(libs "$P"/bin/* $FZ); do case "$l" in *libcuda*|*libcublas*|*libcudart*) ;; *) cp -L "$l" "$P/libs/";; esac; done
for f in data/wikitext-2-raw data/piqa data/arc_easy data/arc_challenge data/boolq data/hellaswag data/winogrande \
         data/lambada_openai models/stories260K models/llama2-tokenizer; do
    mkdir -p "$P/data/$(dirname $f)"; cp -r "$DATA/$f" "$P/data/$f"; done
mkdir -p "$P/data/models/wiki-gutenberg-13M"
cp "$DATA"/models/wiki-gutenberg-13M/{config.json,model.safetensors,tokenizer.json} "$P/data/models/wiki-gutenberg-13M/"
rm -f "$P"/data/models/stories260K/*.bin "$P"/data/models/*/tokenizer.model
for h in "${HS[@]}"; do
    [ -n "$h" ] || continue
    cp "build-fuzz/fuzz/fuzz_$h" "$P/fuzz/"
    mkdir -p "$P/fuzz/corpus/$h"
    cp -r build-fuzz/corpus/$h/. "$P/fuzz/corpus/$h/" 2>/dev/null || true
    [ -d tests/fuzz-corpus/$h ] && cp -r tests/fuzz-corpus/$h/. "$P/fuzz/corpus/$h/"
done
cp tests/fuzz/lsan.supp "$P/fuzz/" 2>/dev/null || true
# MPI_PACK=1: a relocatable Open MPI runtime (orterun/orted, the MCA and PMIx plugins, help files) for
# machines without one; eval/device_eval.sh's ranks step points OPAL_PREFIX at it
if [ -n "${MPI_PACK:-}" ]; then
    O=$P/ompi
    mkdir -p $O/bin $O/lib/x86_64-linux-gnu $O/share
    cp -a /usr/lib/x86_64-linux-gnu/openmpi /usr/lib/x86_64-linux-gnu/pmix2 $O/lib/x86_64-linux-gnu/
    rm -rf $O/lib/x86_64-linux-gnu/openmpi/lib/*java* $O/lib/x86_64-linux-gnu/openmpi/include
    cp -a /usr/share/openmpi $O/share/
    cp -L /usr/bin/orterun /usr/bin/orted $O/bin/ && ln -sf orterun $O/bin/mpirun
fi
strip --strip-debug "$P"/bin/* "$P"/fuzz/fuzz_* 2>/dev/null || true   # -g/-lineinfo sections: the pack must stay < 64 MiB
strip --strip-unneeded "$P"/libs/* 2>/dev/null || true
# Parts (each call carries the ones it needs; a call's carry is limited to 64 MiB, and a warm machine
# keeps what earlier calls unpacked): base.tar.xz (libraries, data without the 13M model, fuzzers,
# Open MPI), m13.tar.xz (wiki-gutenberg-13M), bin-<name>.tar.xz (one binary each).
mkdir -p .devpack
rm -f .devpack/*.tar.xz
tar -C "$P" --exclude=./bin --exclude=./data/models/wiki-gutenberg-13M -cf - . | xz -T2 -6 > .devpack/base.tar.xz
tar -C "$P" -cf - ./data/models/wiki-gutenberg-13M | xz -T2 -6 > .devpack/m13.tar.xz
for b in "$P"/bin/*; do tar -C "$P" -cf - ./bin/$(basename $b) | xz -T2 -6 > .devpack/bin-$(basename $b).tar.xz; done
ls -la .devpack/*.tar.xz
