"""The repository's own generator modules (alerts/, dashboards/), importable from tests: they sit
beside the package, not in it, so the repository root goes on sys.path once, here."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from alerts import generate as alerts_gen

__all__ = ["ROOT", "alerts_gen"]
