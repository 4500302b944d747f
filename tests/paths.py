"""Where the tests' fixed inputs are: importable by every tier (the unit tier imports nothing else of tests/)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED_RULE = ROOT / "rules" / "accepted-domain-dmarc-temperror.yaml"
WORKSPACE = "11111111-2222-3333-4444-555555555555"
