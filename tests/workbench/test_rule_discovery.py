"""One rule-file discovery and one rules folder for the detector, `kqlwatch test` and `kqlwatch validate`.

A file the detector loads is the file `test` runs and `validate` checks (any letter case of .yaml / .yml), and
every command finds the rules folder the way a run does (KQLWATCH_RULES_DIR, else rules/).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from shared.rules.loader import load_rules
from shared.workbench.cli import main
from tests.conftest import SEED_RULE


def _seed_with_failing_case(folder: Path, name: str) -> Path:
    """The seed rule with one case that cannot pass: no rows in, one hit expected."""
    doc = yaml.safe_load(SEED_RULE.read_text(encoding="utf-8"))
    doc["kqlwatch"]["tests"] = [
        {"name": "expects a hit from nothing", "data": {"EmailEvents": []}, "expect": {"count": 1}}
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_an_upper_case_extension_is_loaded_tested_and_validated_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "rules"
    path = _seed_with_failing_case(folder, "Seed.YAML")
    assert [r.path for r in load_rules(folder).rules] == [str(path)]  # the detector runs it
    assert main(["test", str(folder)]) == 1  # so `test` runs its case (it fails), instead of skipping the file
    assert "expects a hit from nothing" in capsys.readouterr().out
    assert main(["validate", "--no-kql", str(folder)]) == 0  # and `validate` does not call it a file that won't run
    out = capsys.readouterr().out
    assert "will not run" not in out and "1 file, 1 valid" in out


def test_validate_checks_the_folder_kqlwatch_rules_dir_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "tenant-rules"
    elsewhere.mkdir()
    shutil.copy(SEED_RULE, elsewhere / "seed.yaml")
    (elsewhere / "broken.yaml").write_text("id: not-a-guid\nname: Broken\nquery: EmailEvents\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # no rules/ here: the default would be the app's own folder
    monkeypatch.setenv("KQLWATCH_RULES_DIR", str(elsewhere))
    assert main(["validate", "--no-kql"]) == 1
    out = capsys.readouterr().out
    assert f"{elsewhere / 'broken.yaml'}:1:5: error: id 'not-a-guid' is not a GUID" in out
    assert "2 files" in out
