#!/usr/bin/env bash
# Set up .venv and run everything CI checks: lint and types (scripts/lint.sh), the wheel as a user installs it
# (scripts/check_wheel.sh), then the whole test suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/lint.sh
bash scripts/check_wheel.sh
exec .venv/bin/python -m pytest -q "$@"
