#!/usr/bin/env bash
# Lint and type checks (run by scripts/test.sh and by .pre-commit-config.yaml): ruff's rules, ruff's formatting
# (format --check) and mypy's per-module strictness, as configured in pyproject.toml.
# `scripts/lint.sh --fix` applies ruff's safe fixes and the formatter first.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
[ -x "$BIN/ruff" ] || BIN=$(dirname "$(command -v ruff)")
if [ "${1:-}" = "--fix" ]; then "$BIN/ruff" check --fix --quiet . || true; "$BIN/ruff" format --quiet .; fi
"$BIN/ruff" check .
"$BIN/ruff" format --check --quiet . || { echo "ruff format: run scripts/lint.sh --fix (or ruff format .)"; exit 1; }
"$BIN/mypy"
