"""The chain of ``test_real_markets.py`` on hourly FX bars (EURUSD 2017-2018)."""

from __future__ import annotations

import pytest

from tests.integration.test_real_markets import run_chain

pytestmark = pytest.mark.integration


def test_hourly_market_chain_with_four_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_chain("hourly", tmp_path_factory)
