"""The Signals page's HTML: the overview of every signal and one signal's page.

``render_overview`` and ``render_signal`` turn the state (``signalops.cockpit.state``) into
a self-contained page: inline CSS, the drift timeline as an inline SVG
(``signalops.cockpit.plot``), no JavaScript, nothing fetched from elsewhere. Every value is
HTML-escaped. Links carry no target: the Airflow UI frames the page in a sandbox where
new-window and top-level links do nothing.
"""

from __future__ import annotations

import re
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from signalops.cockpit.plot import drift_svg
from signalops.cockpit.state import SignalState
from signalops.cockpit.state_registry import VersionView
from signalops.cockpit.state_warehouse import LIVE_WINDOW
from signalops.config import Settings
from signalops.registry.contracts import ALIASES

ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2rem;color:#222}
h1{font-size:1.4rem}h2{font-size:1.15rem;margin-top:1.6rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin-bottom:.3rem}
table{border-collapse:collapse;margin:.4rem 0;font-size:.88rem}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}.pass{color:#2e7d32;font-weight:600}.fail{color:#c62828;font-weight:600}
.na{color:#777}.note{color:#8a6d3b;background:#fcf8e3;padding:.4rem .6rem;margin:.4rem 0}
.empty{color:#666;font-style:italic}.sev-high{color:#c62828}.sev-medium{color:#e07b00}
.versions{display:flex;flex-wrap:wrap;gap:1rem}.card{border:1px solid #ddd;padding:.6rem;
border-radius:4px;min-width:24rem;flex:1 1 0;overflow-x:auto}.scroll{overflow-x:auto}
.rules{width:100%}.rules td:nth-child(3){max-width:30rem}summary{cursor:pointer;margin:.4rem 0}
code{font-size:.85rem}
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
        f"</title><style>{CSS}</style></head><body>{body}</body></html>"
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and ISO_TIME.match(value):  # the state's UTC timestamps
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    return escape(str(value))


def _link(url: str, label: str) -> str:
    # No target: the Airflow UI frames the page in a sandbox without allow-popups or
    # allow-top-navigation, where target=_blank or _top links do nothing at all.
    return f'<a href="{escape(url)}">{escape(label)}</a>'


def _links(links: dict[str, str]) -> str:
    return " · ".join(_link(u, k) for k, u in links.items())


def _table(
    rows: list[dict[str, Any]], columns: list[str], empty: str, table_id: str | None = None
) -> str:
    if not rows:
        return f'<p class="empty">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return f'<div class="scroll"><table{ident}><tr>{head}</tr>{body}</table></div>'


HOLDOUT_METRICS = ("roc_auc", "log_loss", "accuracy", "brier", "sharpe", "cumulative_return",
                   "max_drawdown", "hit_rate")  # fmt: skip
MISSING_ALIAS = {
    "champion": "no champion yet: the first retrain run that passes the gate registers it",
    "challenger": "no challenger: the next retrain that passes the gate registers one",
    "previous-champion": "none yet: set when a challenger is promoted (rollback restores it)",
}


def _holdout(v: VersionView, models: dict[str, dict[str, Any]]) -> str:
    """Each model's holdout figures, one column per model (this version first)."""
    roles = [r for r in ("challenger", "champion", "baseline") if r in models]
    labels = {
        "challenger": f"v{v.version} (this)",
        "champion": f"champion v{models.get('champion', {}).get('version') or '?'}",
        "baseline": "baseline",
    }
    head = "".join(f"<th>{escape(labels[r])}</th>" for r in roles)
    body = "".join(
        f"<tr><td>{name}</td>" + "".join(f"<td>{_fmt(models[r].get(name))}</td>" for r in roles)
        for name in HOLDOUT_METRICS
    )
    return f'<div class="scroll"><table><tr><th>holdout</th>{head}</tr>{body}</table></div>'


def _version_card(v: VersionView) -> str:
    ev = v.evaluation
    parts = [
        f'<div class="card" id="version-{escape(v.alias)}"><h3>{escape(v.alias)}: '
        f'<span class="version">v{escape(v.version)}</span></h3>',
        f"<div>registered {_fmt(v.created)}; feature set "
        f"{_fmt(v.tags.get('signalops.feature_set_version'))}; parity error "
        f"{_fmt(v.tags.get('signalops.parity_max_abs_error'))}</div>",
        f"<div>{_links(v.links)}</div>",
    ]
    if ev is None:
        parts.append('<p class="empty">no evaluation report found for this version</p>')
    else:
        verdict = "passed" if ev["passed"] else "rejected"
        hold = ev.get("holdout") or {}
        parts.append(
            f'<p>gate <span class="{"pass" if ev["passed"] else "fail"}">{verdict}</span> '
            f"(primary metric {_fmt(ev['primary_metric'])}, action {_fmt(ev['action'])}; "
            f"holdout {_fmt(hold.get('rows'))} rows, {_fmt(hold.get('start'))} .. "
            f"{_fmt(hold.get('end'))})</p>"
        )
        rows = "".join(
            f"<tr><td>{escape(r['name'])}</td><td class="
            f'"{"pass" if r["passed"] else "fail" if r["passed"] is False else "na"}">'
            f"{escape(str(r['status']))}</td><td>{escape(str(r['detail']))}</td>"
            f"<td>{_fmt(r['threshold'])}</td></tr>"
            for r in ev["rules"]
        )
        parts.append(
            '<div class="scroll"><table class="rules"><tr><th>rule</th><th>result</th>'
            f"<th>numbers</th><th>limit</th></tr>{rows}</table></div>"
        )
        parts.append(_holdout(v, ev["models"]))
    parts.append("</div>")
    return "".join(parts)


def _missing(alias: str) -> str:
    return (
        f'<p class="empty" id="version-{escape(alias)}">{escape(alias)}: '
        f"{escape(MISSING_ALIAS.get(alias, 'none'))}</p>"
    )


LIVE_COLUMNS = ["version", "role", "predictions", "outcomes", "accuracy", "log_loss", "hit_rate",
                "net_return", "latency_p95_ms"]  # fmt: skip
STATUS_CLASS = {"ok": "pass", "breach": "fail", "waiting": "na", "not judged": "na"}
EXPLANATION_COLUMNS = ["ts", "symbol", "model_version", "probability", "base_value",
                       "top contributions (log-odds)", "rest", "request_id"]  # fmt: skip


def _explanations(rows: list[dict[str, Any]]) -> str:
    """The champion's newest predictions, each with its largest TreeSHAP contributions."""
    shown = [
        {
            **r,
            "top contributions (log-odds)": ", ".join(
                f"{c['feature']} {float(c['contribution']):+.3f}" for c in r["contributions"]
            ),
        }
        for r in rows
    ]
    return _table(
        shown,
        EXPLANATION_COLUMNS,
        "no explained predictions yet: the outcomes DAG's explain task explains the logged "
        "predictions every hour",
        table_id="explanations",
    )


def _guards(rollout: dict[str, Any]) -> str:
    """Each guard's value next to its limit, then both versions' figures at the step."""
    numbers = rollout.get("guards") or {}
    if not numbers:
        return '<p class="empty">not judged yet</p>'
    rows = "".join(
        f"<tr><td>{escape(g['guard'])}</td><td>{_fmt(g['value'])}</td><td>{_fmt(g['limit'])}"
        f'</td><td class="{STATUS_CLASS.get(g["status"], "na")}">{escape(g["status"])}</td></tr>'
        for g in rollout.get("guard_checks") or []
    )
    at_step = [numbers[k] for k in ("champion", "challenger") if isinstance(numbers.get(k), dict)]
    return (
        '<div class="scroll"><table id="guards"><tr><th>guard</th><th>value</th><th>limit</th>'
        f"<th>status</th></tr>{rows}</table></div>"
        + _table(at_step, LIVE_COLUMNS, "no figures at the step")
    )


def _rollout(rollout: dict[str, Any] | None, steps: tuple[float, ...]) -> str:
    if rollout is None:
        return '<p class="empty">no rollout yet</p>'
    step, weight = int(rollout["step"]), float(rollout["weight"])
    ladder = " → ".join(f"<b>{w:.0%}</b>" if i == step else f"{w:.0%}" for i, w in enumerate(steps))
    history = [
        {k: h.get(k) for k in ("at", "event", "status", "step", "weight", "reason")}
        for h in reversed(rollout.get("history") or [])
    ]
    return (
        f'<p id="rollout-step">challenger v{escape(str(rollout["challenger_version"]))} vs '
        f"champion v{_fmt(rollout['champion_version'])}: <b>step {step}</b> "
        f"(weight {weight:.0%}{', shadow' if weight == 0 else ''}), status "
        f"<b>{escape(str(rollout['status']))}</b> since {_fmt(rollout['step_started_at'])}</p>"
        f"<p>steps: {ladder}</p><p>{escape(str(rollout['reason']))}</p>"
        + "<h3>guards (as last judged)</h3>"
        + _guards(rollout)
        + "<h3>transitions</h3>"
        + _table(history, ["at", "event", "status", "step", "weight", "reason"], "none")
    )


def render_signal(settings: Settings, s: SignalState) -> str:
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in s.notes)
    by_alias = {v.alias: v for v in s.versions}
    versions = (
        '<div class="versions">'
        + "".join(_version_card(by_alias[a]) for a in ALIASES if a in by_alias)
        + "</div>"
        + "".join(_missing(a) for a in ALIASES if a not in by_alias)
        if s.versions
        else '<p class="empty">no model yet: the first retrain run registers the champion</p>'
    )
    drift_rows = [
        {**d, "drifted_features": ", ".join(d["drifted_features"]) or "-"}
        for d in reversed(s.drift[-20:])
    ]
    drifted = sum(bool(f["drifted"]) for f in s.drifted_features)
    drift_table = _table(
        drift_rows,
        ["window_end", "model_version", "severity", "share_drifted", "prediction_psi",
         "accuracy", "drifted_features"],
        "no drift checks yet",
    )  # fmt: skip
    reports = "".join(
        "<li>"
        + _link(d["report_url"], f"Evidently report, window ending {_fmt(d['window_end'])}")
        + "</li>"
        for d in reversed(s.drift[-5:])
        if d["report_url"]
    )
    body = (
        f'<p><a href="{escape(settings.signals_url)}">all signals</a></p>'
        f"<h1>Signal <code>{escape(s.name)}</code></h1>{notes}"
        f"<p>{_links({k: u for k, u in s.links.items() if k != 'Signals page'})}</p>"
        f"<h2>Models</h2>{versions}"
        f"<h2>Rollout</h2>{_rollout(s.rollout, settings.rollout.steps)}"
        + "<h3>recent rollouts</h3>"
        + _table(
            s.rollouts,
            ["started_at", "challenger_version", "champion_version", "status", "step", "reason"],
            "no rollouts",
        )
        + f"<h2>Drift</h2>{drift_svg(s.drift)}"
        + (f"<ul>{reports}</ul>" if reports else "")
        + drift_table
        + f"<details><summary>the {len(s.drifted_features)} features of the newest check "
        f"({drifted} drifted)</summary>"
        + _table(
            s.drifted_features,
            [
                "feature",
                "drifted",
                "severity",
                "psi",
                "psi_critical",
                "ks_statistic",
                "wasserstein",
            ],
            "none",
        )
        + "</details>"
        + f"<h2>Live metrics (last {LIVE_WINDOW.days} days)</h2>"
        + _table(
            s.live,
            [c for c in LIVE_COLUMNS if c != "role"],
            "no predictions logged yet",
            table_id="live",
        )
        + "<h2>Why the champion said what it said</h2>"
        + "<p>TreeSHAP contributions of its newest logged predictions, in log-odds (base value "
        "+ contributions + rest = the margin; P(up) is its sigmoid).</p>"
        + _explanations(s.explanations)
        + "<h2>Recent alerts</h2>"
        + _table(
            s.alerts,
            ["last_seen", "severity", "kind", "title", "status", "occurrences", "channel"],
            "no alerts",
        )
        + f'<p class="na">generated {_fmt(s.generated_at)} UTC; <a href="'
        f'{escape(settings.signals_url)}api/signals/{quote(s.name, safe="")}">JSON</a></p>'
    )
    return _page(f"signalops: {s.name}", body)


def render_overview(settings: Settings, signals: list[SignalState]) -> str:
    rows = []
    for s in signals:
        by_alias = {v.alias: v.version for v in s.versions}
        newest = s.drift[-1] if s.drift else None
        rows.append(
            "<tr>"
            f'<td><a href="{escape(settings.signal_page_url(s.name))}">{escape(s.name)}</a></td>'
            f"<td>{_fmt(by_alias.get('champion'))}</td><td>{_fmt(by_alias.get('challenger'))}"
            f"</td><td>{_fmt(by_alias.get('previous-champion'))}</td>"
            + (
                f"<td>step {s.rollout['step']} ({float(s.rollout['weight']):.0%}), "
                f"{escape(str(s.rollout['status']))}</td>"
                if s.rollout
                else "<td>-</td>"
            )
            + (
                f'<td class="sev-{escape(str(newest["severity"]))}">{escape(newest["severity"])}'
                f" ({_fmt(newest['window_end'])})</td>"
                if newest
                else "<td>-</td>"
            )
            + f"<td>{len(s.alerts)}</td></tr>"
        )
    nothing = all(s.empty for s in signals)
    notes = {n for s in signals for n in s.notes}
    body = (
        "<h1>Signals</h1>"
        + "".join(f'<p class="note">{escape(n)}</p>' for n in sorted(notes))
        + (
            '<p class="empty" id="nothing-yet">Nothing yet: no model, rollout or drift check. '
            "Run the pipeline (<code>make run</code>, or the <code>retrain</code> DAG) and "
            "this page fills in.</p>"
            if nothing
            else ""
        )
        + "<table><tr><th>signal</th><th>champion</th><th>challenger</th>"
        "<th>previous champion</th><th>rollout</th><th>newest drift</th><th>alerts</th></tr>"
        + "".join(rows)
        + "</table>"
        + f"<p>{_link(settings.mlflow_ui_url, 'MLflow')} · "
        f'<a href="{escape(settings.signals_url)}api/signals">JSON</a></p>'
    )
    return _page("signalops: Signals", body)
