# apex4 — build, test and bench.
#   make              build build/apex4 and build/libapex4.a (CUDA kernels too when nvcc is found)
#   make CUDA=0       CPU-only build (no nvcc needed)
#   make test         build and run the Criterion suite (tests/test_*.c, one binary per file)
#   make test SAN=1   the same under ASan+UBSan (into build-san/)
#   make test T=quant run only tests/test_quant.c
#   make bench        CPU reference GEMM throughput (and GPU benchmarks when a device is present)
# BUILD=dir puts the objects elsewhere (parallel builds in one tree).

SAN   ?= 0
ifeq ($(SAN),1)
BUILD ?= build-san
else
BUILD ?= build
endif

NVCC  ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
ifeq ($(NVCC),)
CUDA  ?= 0
else
CUDA  ?= 1
endif
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))

CC    ?= cc
ARCH  ?= -march=x86-64-v2 -mavx2 -mfma -mf16c
ifneq ($(shell uname -m),x86_64)
ARCH  :=
endif
OPT   ?= -O2
GIT_REV := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
PKGS  := libcjson hdf5-serial openblas libpcre2-8 libutf8proc
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))

CFLAGS  = -std=c11 $(OPT) -g $(ARCH) -Wall -Wextra -Werror -ffp-contract=off -fno-fast-math \
          -pthread -D_GNU_SOURCE -DAPEX4_GIT_REV=\"$(GIT_REV)\" \
          -Iquant -Ikernels -Ieval -Idatasets -Ireports $(PKG_CFLAGS)
LDLIBS  = $(PKG_LIBS) -lm -pthread
ifeq ($(SAN),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# Library sources: everything in the module folders except the CLI front ends (cmd_*.c).
LIB_SRC := $(filter-out $(wildcard */cmd_*.c),$(wildcard quant/*.c eval/*.c datasets/*.c reports/*.c))
CLI_SRC := apex4.c $(wildcard quant/cmd_*.c kernels/cmd_*.c eval/cmd_*.c datasets/cmd_*.c reports/cmd_*.c)
CU_SRC  := $(wildcard kernels/*.cu)

ifeq ($(CUDA),1)
# sm_90a (Hopper: INT8 tensor cores, wgmma) plus sm_80/86/89 (native INT4 mma); never --use_fast_math.
NVCC_GENCODE ?= -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80 \
                -gencode=arch=compute_86,code=sm_86 -gencode=arch=compute_89,code=sm_89
NVCCFLAGS ?= -O3 -std=c++17 $(NVCC_GENCODE) -Xcompiler -Wall,-Wextra,-Werror,-fPIC \
             -Iquant -Ikernels -lineinfo
KOBJ    := $(patsubst %.cu,$(BUILD)/%.o,$(CU_SRC)) \
           $(patsubst %.c,$(BUILD)/%.o,$(filter-out $(wildcard kernels/*_nocuda.c) kernels/cmd_%.c,$(wildcard kernels/*.c)))
CFLAGS  += -DAPEX4_CUDA=1 -I$(CUDA_HOME)/include
LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++
else
KOBJ    := $(patsubst %.c,$(BUILD)/%.o,$(wildcard kernels/*_nocuda.c))
endif

LIB_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(LIB_SRC))
CLI_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(CLI_SRC))
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))
HDRS    := $(wildcard quant/*.h kernels/*.h eval/*.h datasets/*.h reports/*.h)

all: $(BUILD)/apex4 $(BUILD)/libapex4.a

$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/kernels/%.o: kernels/%.cu $(HDRS) $(wildcard kernels/*.cuh) $(wildcard kernels/*.h)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

$(BUILD)/libapex4.a: $(LIB_OBJ) $(KOBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/apex4: $(CLI_OBJ) $(BUILD)/libapex4.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libapex4.a $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testutil.h $(BUILD)/libapex4.a $(BUILD)/apex4
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(BUILD)/libapex4.a $(LDLIBS) -lcriterion

# Criterion runs each test in its own process; ASAN needs protect_shadow_gap=0 next to the CUDA runtime.
TEST_ENV = APEX4_BIN=$(CURDIR)/$(BUILD)/apex4 ASAN_OPTIONS=protect_shadow_gap=0:detect_leaks=1 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
comma := ,
T ?=
ifneq ($(T),)
TEST_RUN := $(patsubst %,$(BUILD)/tests/test_%,$(subst $(comma), ,$(T)))
else
TEST_RUN := $(TEST_BIN)
endif

test: $(TEST_RUN)
	@fail=0; for t in $(TEST_RUN); do echo "== $$t"; $(TEST_ENV) $$t --jobs 2 --verbose || fail=1; done; \
	 if [ $$fail = 0 ]; then echo "ALL TEST BINARIES PASSED"; else echo "SOME TESTS FAILED"; exit 1; fi

bench: $(BUILD)/apex4
	$(BUILD)/apex4 bench ref --m 512 --n 4096 --k 4096 --mode w4a4-g128
	@if $(BUILD)/apex4 devices >/dev/null 2>&1; then $(BUILD)/apex4 bench gemm; \
	 else echo "GPU benchmark skipped: no CUDA device"; fi

clean:
	rm -rf build build-san build-*

.PHONY: all test bench clean
.SECONDARY:
.DELETE_ON_ERROR:
