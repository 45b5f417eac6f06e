# peertune — see README.md. `make run` and `make test` install what they need.
GO        ?= go
BIN       := bin/peertune
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PYTHON    ?= python3
# Tests run in well under CI's limit; the default go test timeout is too short
# for the slowest package on a 2-core machine.
TESTFLAGS ?= -timeout 40m

.PHONY: chaos pydeps tiny-base all build run test test-short bench golden deps sysdeps pydeps-golden fuzz vet fmt clean

all: build

deps:
	$(GO) mod download

# OpenBLAS makes the CPU GEMMs ~10x faster. It is loaded at run time, so the
# build never needs it; this installs it when we are root on Debian/Ubuntu and it
# is missing, and otherwise says how (peertune falls back to pure Go).
sysdeps:
	@scripts/install-sysdeps.sh

# NCCL and NVRTC from PyPI (nvidia-nccl-cu12, nvidia-cuda-nvrtc-cu12): the CPU-only
# tests load them (no GPU needed). Never fails: without them those tests skip.
pydeps:
	@scripts/install-pydeps.sh

build: deps
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/peertune

run: sysdeps build
	./$(BIN) train

vet:
	$(GO) vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

test: sysdeps pydeps deps vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) test $(TESTFLAGS) ./...

test-short: deps
	$(GO) test -short ./...

bench: sysdeps build
	./$(BIN) bench gemm --size 1024 --json
	./$(BIN) bench step --model smollm2-135m --method lora --seq-len 256 --micro-batch 1 --json
	./$(BIN) bench step --model smollm2-135m --method full --seq-len 256 --micro-batch 1 --json
	./$(BIN) bench allreduce --nodes 4 --size 32MiB --json

# Regenerates the golden vectors from Hugging Face transformers + peft.
# The output is committed, so tests never need torch.
pydeps-golden:
	$(PYTHON) -m pip install -q torch transformers peft safetensors

golden: pydeps-golden
	$(PYTHON) trainer/model/testdata/gen_golden.py trainer/model/testdata
	# PEFT interop: peertune writes an adapter, PEFT loads it and records its logits.
	-PEERTUNE_WRITE_INTEROP=1 $(GO) test ./trainer/model -run TestPEFTInteropGolden -count=1 >/dev/null
	cd trainer/model && $(PYTHON) testdata/peft_logits.py testdata/golden/llama_untied testdata/interop/adapter \
		testdata/golden/llama_untied/batch.json testdata/interop/peft_logits.safetensors

fuzz:
	$(GO) test ./trainer/model/safetensors -run '^$$' -fuzz FuzzParseHeader -fuzztime 60s

# Rebuilds the built-in base model from its recipe (about 20 minutes on 2 cores),
# then rebuild the binary to embed it.
tiny-base: build
	./$(BIN) train --config trainer/tinybase/recipe.yaml --out bin/tiny-base
	cp bin/tiny-base/config.json bin/tiny-base/model.safetensors trainer/tinybase/

# The long chaos run: 4 peer processes, 20 SIGKILLs with restarts; the job must
# complete with every sample of every completed step counted exactly once.
chaos: build
	PEERTUNE_CHAOS_KILLS=20 $(GO) test -run TestChaosKillRejoin -v -timeout 60m ./cmd/peertune

clean:
	rm -rf bin
