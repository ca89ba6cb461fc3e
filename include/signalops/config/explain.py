"""Settings of the explanations per prediction (``signalops.explanations``): the outcomes
DAG's ``explain`` task stores the largest TreeSHAP contributions of each logged prediction."""

from __future__ import annotations

from pydantic import Field

from signalops.config.base import Section


class ExplainSettings(Section):
    top_k: int = Field(
        5,
        ge=1,
        le=50,
        description="contributions stored per prediction, the largest by absolute value "
        "(log-odds); the others are stored as their sum",
    )
    batch_rows: int = Field(
        20_000,
        gt=0,
        description="most predictions explained per run, oldest first; the rest wait for "
        "the next run",
    )
    lookback_days: float = Field(
        7.0, gt=0, description="predictions older than this are never explained"
    )
