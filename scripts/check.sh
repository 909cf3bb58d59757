#!/usr/bin/env bash
# Lint and type-check, as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
mypy
