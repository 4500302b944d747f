#!/usr/bin/env bash
# Set up (if needed), then lint, type-check and run every test. The stand-ins (Azurite, the HTTPS Log Analytics
# API, the Teams receiver) are started by the tests themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
