#!/usr/bin/env bash
# Installs, with pip, the NVIDIA libraries peertune loads with dlopen when a
# GPU is present, so that their loaders are tested even on machines without
# one:
#   nvidia-nccl-cu12        -> <site-packages>/nvidia/nccl/lib/libnccl.so.2        (collective/nccl)
#   nvidia-cuda-nvrtc-cu12  -> <site-packages>/nvidia/cuda_nvrtc/lib/libnvrtc.so.12 (kernels/cuda)
# Idempotent and quiet: a library already present is left alone (whichever
# package put it there: nvidia-nccl-cu13 installs the same libnccl.so.2 path,
# and installing cu12 over it would break the PyTorch that brought it). Never
# fails the build: offline, or without Python/pip, it says what is missing and
# the tests that need it skip with a message.
set -u
PY="${PYTHON:-python3}"

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "note: $PY not found; not installing nvidia-nccl-cu12 / nvidia-cuda-nvrtc-cu12 (NCCL and NVRTC tests will skip)"
  exit 0
fi

# present REL: prints the first site-packages file REL that exists, if any.
present() {
  "$PY" - "$1" <<'EOF' 2>/dev/null
import os, site, sys
dirs = []
try:
    dirs += site.getsitepackages()
except Exception:
    pass
try:
    dirs.append(site.getusersitepackages())
except Exception:
    pass
dirs += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
for d in dirs:
    p = os.path.join(d, sys.argv[1])
    if os.path.isfile(p):
        print(p)
        break
EOF
}

missing=()
nccl="$(present nvidia/nccl/lib/libnccl.so.2)"
[ -n "$nccl" ] || missing+=(nvidia-nccl-cu12)
nvrtc="$(present nvidia/cuda_nvrtc/lib/libnvrtc.so.12)"
[ -n "$nvrtc" ] || missing+=(nvidia-cuda-nvrtc-cu12)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if ! "$PY" -m pip --version >/dev/null 2>&1; then
  echo "note: pip is not available for $PY; not installing ${missing[*]} (tests that need them will skip)"
  exit 0
fi

echo "installing ${missing[*]} with pip (libraries peertune loads at run time on GPU machines)..."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
pipi() { "$PY" -m pip install -q --timeout 30 --retries 1 "$@" >"$log" 2>&1; }
if ! pipi "${missing[@]}"; then
  if grep -q externally-managed-environment "$log"; then
    # A distribution's Python (PEP 668): install into the user site instead,
    # which peertune's library search also covers.
    pipi --user --break-system-packages "${missing[@]}" || true
  fi
fi
still=()
[ -n "$(present nvidia/nccl/lib/libnccl.so.2)" ] || still+=(nvidia-nccl-cu12)
[ -n "$(present nvidia/cuda_nvrtc/lib/libnvrtc.so.12)" ] || still+=(nvidia-cuda-nvrtc-cu12)
if [ ${#still[@]} -gt 0 ]; then
  echo "warning: could not install ${still[*]} (offline?); the tests that need them will skip. pip said:"
  tail -n 3 "$log" | sed 's/^/  /'
fi
exit 0
