"""No SQL on the warehouse outside ``signalops.warehouse``: the other modules call its
named query functions (``rollouts.active(conn, signal)``, ...) on a connection from
``Warehouse.connect()`` / ``Warehouse.begin()``; they never build statements or open the
engine themselves. ``signalops.serving`` is exempt for now (being rewritten)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "include" / "signalops"
EXEMPT_DIRS = ("warehouse", "serving")

# name -> what raw SQL on the warehouse looks like
PATTERNS = {
    "engine connection": re.compile(r"\.engine\.(begin|connect|execute|raw_connection)\("),
    "raw connection": re.compile(r"\.(raw_connection|exec_driver_sql)\("),
    "SQL text": re.compile(r"\bsa\.text\("),
    "statement": re.compile(r"\bsa\.(select|insert|update|delete)\("),
    "statement import": re.compile(
        r"^\s*from sqlalchemy(\.\w+)* import .*\b(select|insert|update|delete|text)\b"
    ),
    "table statement": re.compile(r"(_table|\bt|\btable)\.(insert|delete|update|select)\("),
    "bare table statement": re.compile(r"\.(insert|delete|update)\(\)"),
    "upsert by hand": re.compile(r"\.on_conflict_do_(update|nothing)\(|\bwarehouse\.insert\("),
}

# (path under include/signalops, pattern name) -> why it is not SQL on the warehouse
ALLOWED = {
    ("data/sources.py", "SQL text"): "PostgresSource reads the market-data vendor's database",
    ("stack/provision.py", "SQL text"): "create_databases provisions the stack's PostgreSQL server",
}


def violations(relative: str, text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        for name, pattern in PATTERNS.items():
            if pattern.search(line) and (relative, name) not in ALLOWED:
                found.append(f"include/signalops/{relative}:{number}: {name}: {line.strip()}")
    return found


def test_no_sql_outside_the_warehouse_package() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.split("/")[0] in EXEMPT_DIRS:
            continue
        found += violations(relative, path.read_text())
    assert not found, (
        "SQL on the warehouse outside signalops.warehouse: move it into the table's module "
        "there and call it by name:\n" + "\n".join(found)
    )


def test_allowed_exceptions_are_still_needed() -> None:
    """An exemption whose file no longer matches is stale: remove it."""
    for relative, name in ALLOWED:
        text = (PACKAGE / relative).read_text()
        assert PATTERNS[name].search(text), f"stale exemption: {relative} ({name})"


@pytest.mark.parametrize(
    "line",
    [
        "    with warehouse.engine.begin() as conn:",
        "    with self.warehouse.engine.connect() as conn:",
        "        rows = conn.execute(sa.select(t).where(t.c.id == 1))",
        "        conn.execute(sa.update(t).values(alerted=True))",
        '        conn.execute(sa.text("SELECT 1"))',
        "from sqlalchemy import select, update",
        "            conn.execute(t.delete().where(t.c.id == row['id']))",
        "            conn.execute(rollouts_table.insert(), [row])",
        "    stmt = warehouse.insert(t).on_conflict_do_nothing(index_elements=KEY)",
    ],
)
def test_the_check_catches_raw_sql(line: str) -> None:
    assert violations("rollout/example.py", line)


@pytest.mark.parametrize(
    "line",
    [
        "    with warehouse.connect() as conn:",
        "        row = rollouts.active(conn, self.signal)",
        '    frame.insert(0, "symbol", default_symbol)',
        "    values.update(status='sent')",
        "    # with warehouse.engine.begin() as conn: (no longer)",
    ],
)
def test_the_check_leaves_other_code_alone(line: str) -> None:
    assert not violations("rollout/example.py", line)
