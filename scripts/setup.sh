#!/usr/bin/env bash
# Create .venv (if missing) and install the node with its dev extras.
# torch==2.13.0 is pinned first so pip takes the local CPU wheel instead of a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -e ".[dev]"
# Headless Chromium for the explorer's browser test (tests/test_explorer_browser.py), only when missing and
# apt-get is there (as root, or with password-less sudo); the test skips with a reason where it cannot be.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if ! ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium) >/dev/null 2>&1; then
    echo "setup: could not install chromium; the explorer's browser test will be skipped" >&2
  fi
fi
# promtool (Debian's prometheus package: ~19 MB download, --no-install-recommends) for the /metrics lint in
# tests/test_observability.py, only when missing and apt-get is there; the test skips with a reason otherwise.
if ! command -v promtool >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if ! ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1; then
    echo "setup: could not install promtool (prometheus); the metrics lint test will be skipped" >&2
  fi
fi
# The aarch64 cross compiler and user-mode emulator for tests/test_native_neon.py (the NEON kernel, built for
# aarch64 and run under qemu-aarch64 on an x86-64 machine), only when missing and apt-get is there; the test skips
# with a reason otherwise. An aarch64 machine builds and runs that kernel natively and needs neither.
if [ "$(uname -m)" = x86_64 ] && command -v apt-get >/dev/null 2>&1 \
    && ! { command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 \
           && { command -v qemu-aarch64 >/dev/null 2>&1 || command -v qemu-aarch64-static >/dev/null 2>&1; }; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  if ! ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user) >/dev/null 2>&1; then
    echo "setup: could not install the aarch64 cross tools (gcc-aarch64-linux-gnu, qemu-user); the NEON kernel's test will be skipped" >&2
  fi
fi
