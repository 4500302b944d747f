#!/usr/bin/env bash
# Set up (if needed), then run the real detector locally on the bundled sample EmailEvents, through Azurite,
# the HTTPS Log Analytics stand-in and a local Teams receiver, and show the cards it would post.
set -euo pipefail
cd "$(dirname "$0")/.."
KQLWATCH_SETUP_INFRA=0 KQLWATCH_SETUP_CHROMIUM=0 bash scripts/setup.sh
exec .venv/bin/kqlwatch demo "$@"
