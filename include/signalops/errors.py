"""Error types shared across signalops."""

from __future__ import annotations


class BadInputError(ValueError):
    """Input that a retry cannot fix: bad settings, parameters or data.

    Airflow tasks turn it into a failure without retries (see ``dag_defaults.task_errors``);
    its message says what is wrong and where.
    """
