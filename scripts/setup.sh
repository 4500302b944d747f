#!/usr/bin/env bash
# Installs everything kqlwatch's demo and tests need, into this checkout: .venv (Python 3.11, the project and
# its pinned dev tools), node_modules (Azurite, Kusto.Language, the Adaptive Cards renderer) and .venv-infra
# (checkov, which pins its own parser). Safe to run again: it only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"kqlwatch needs Python 3.11, found {sys.version}"'

stamp() { cat "$@" | sha256sum | cut -d' ' -f1; }

if [ ! -x .venv/bin/python ]; then "$PYTHON" -m venv .venv; fi
want=$(stamp requirements.txt requirements-dev.txt constraints.txt pyproject.toml)
if [ "$(cat .venv/.kqlwatch-installed 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
  echo "$want" > .venv/.kqlwatch-installed
fi

want=$(stamp package.json package-lock.json)
if [ "$(cat node_modules/.kqlwatch-installed 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > node_modules/.kqlwatch-installed
fi

# checkov (the infra checks) is only needed by the tests; the demo skips it with KQLWATCH_SETUP_INFRA=0.
if [ -f requirements-infra.txt ] && [ "${KQLWATCH_SETUP_INFRA:-1}" != 0 ]; then
  if [ ! -x .venv-infra/bin/python ]; then "$PYTHON" -m venv .venv-infra; fi
  want=$(stamp requirements-infra.txt)
  if [ "$(cat .venv-infra/.kqlwatch-installed 2>/dev/null)" != "$want" ]; then
    .venv-infra/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
    echo "$want" > .venv-infra/.kqlwatch-installed
  fi
fi

# Debian's chromium, unpacked into .cache/chromium for the headless-browser test of the backtest report
# (KQLWATCH_SETUP_CHROMIUM=0 skips it; the demo does not need it).
if [ "${KQLWATCH_SETUP_CHROMIUM:-1}" != 0 ]; then bash scripts/install-chromium.sh; fi
