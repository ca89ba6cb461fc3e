"""docs/configuration.md lists every setting as config.py declares it.

The table between its markers must be exactly what ``scripts/settings_table.py`` prints from
the pydantic models; regenerate it with ``.venv/bin/python scripts/settings_table.py --write``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    path = REPO / "scripts" / "settings_table.py"
    spec = importlib.util.spec_from_file_location("settings_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_lists_every_setting_as_config_declares_it() -> None:
    script = _script()
    documented = script.documented((REPO / "docs" / "configuration.md").read_text())
    assert documented == script.table(), (
        "docs/configuration.md's settings table differs from config.py: "
        "run .venv/bin/python scripts/settings_table.py --write"
    )


def test_every_setting_has_a_row() -> None:
    script = _script()
    table = script.table()
    for path, _ in script._fields(script.Settings):
        dotted = ".".join(path)
        env = "SIGNALOPS_" + "__".join(path).upper()
        assert f"`{env}`" in table or f"`{dotted}` (YAML only)" in table, dotted
