"""scripts/supply_chain.py, imported for the tests (it is a script, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "supply_chain.py"

_spec = importlib.util.spec_from_file_location("supply_chain", SCRIPT)
assert _spec is not None and _spec.loader is not None
supply_chain = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("supply_chain", supply_chain)
_spec.loader.exec_module(supply_chain)
