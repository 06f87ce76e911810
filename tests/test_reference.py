"""docs/reference.md is generated from the code; it must say what the code does."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_reference_page_matches_the_code():
    out = subprocess.run([sys.executable, "-m", "syncwatch.reference"], capture_output=True, text=True, check=True)
    committed = (ROOT / "docs" / "reference.md").read_text()
    assert out.stdout == committed, (
        "docs/reference.md is stale: run `python -m syncwatch.reference > docs/reference.md`"
    )


def test_the_reference_names_every_metric_the_alert_rules_use():
    import re

    page = (ROOT / "docs" / "reference.md").read_text()
    listed = set(re.findall(r"\| `(syncwatch_\w+)` \|", page))
    rules = (ROOT / "alerts" / "syncwatch-rules.yml").read_text()
    used = set(re.findall(r"\b(syncwatch_[a-z_]+)", rules))
    assert "syncwatch_transactions_overdue" in used  # the rule file was read
    bases = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}
    assert bases <= listed | {m + "_total" for m in listed} | {m.removesuffix("_total") for m in listed}, bases - listed


def test_readme_names_every_metric():
    import re

    page = (ROOT / "docs" / "reference.md").read_text()
    readme = (ROOT / "README.md").read_text()
    missing = sorted(m for m in re.findall(r"\| `(syncwatch_\w+)` \|", page) if f"`{m}`" not in readme)
    assert not missing, f"README.md's metric list lacks {missing}"
