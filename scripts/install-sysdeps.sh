#!/usr/bin/env bash
# Installs the optional run-time libraries peertune loads with dlopen, when it
# can (root on Debian/Ubuntu). Never fails the build: without them peertune
# uses its pure-Go fallbacks and says so.
set -u
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
if have_lib 'libopenblas.so.0'; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing libopenblas0-pthread (fast CPU GEMMs)..."
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 \
      || echo "warning: could not install libopenblas0-pthread; peertune will use its pure-Go GEMM"
  fi
else
  echo "note: libopenblas.so.0 not found; install libopenblas0-pthread for ~10x faster CPU GEMMs (peertune falls back to pure Go)"
fi
exit 0
