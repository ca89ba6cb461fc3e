from __future__ import annotations

from pathlib import Path

import pytest

from signalops.config import ConfigError, load_settings


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.state_dir == Path(".signalops")
    assert settings.market.source == "synthetic"
    assert len(settings.market.symbols) >= 3
    assert settings.warehouse_url == f"sqlite:///{(tmp_path / '.signalops' / 'warehouse.db')}"
    assert settings.online_store.redis_url is None
    assert not list(tmp_path.iterdir()), "loading settings must not create anything"


def test_yaml_over_defaults_and_env_over_yaml(tmp_path: Path) -> None:
    config = tmp_path / "signalops.yaml"
    config.write_text(
        "market:\n  bar_minutes: 15\n  symbols: [X, Y]\nfeatures:\n  horizon_bars: 4\n"
    )
    settings = load_settings(
        env={
            "SIGNALOPS_CONFIG": str(config),
            "SIGNALOPS_FEATURES__HORIZON_BARS": "6",
            "SIGNALOPS_MARKET__SYNTHETIC__SEED": "99",
        }
    )
    assert settings.market.bar_minutes == 15  # from the file
    assert settings.market.symbols == ("X", "Y")
    assert settings.features.horizon_bars == 6  # env wins over the file
    assert settings.market.synthetic.seed == 99  # nested env
    assert settings.features.feature_set_version == "v1"  # default kept


def test_env_list_is_comma_separated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={"SIGNALOPS_MARKET__SYMBOLS": "AAA, BBB"})
    assert settings.market.symbols == ("AAA", "BBB")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SIGNALOPS_MARKET__BAR_MINUTES": "five"},
            ["market.bar_minutes", "SIGNALOPS_MARKET__BAR_MINUTES", "'five'"],
        ),
        ({"SIGNALOPS_MARKET__BAR_MINUTES": "0"}, ["market.bar_minutes", "greater than 0"]),
        ({"SIGNALOPS_MARKET__SOURCE": "ftp"}, ["market.source", "'synthetic'"]),
        ({"SIGNALOPS_MARKET__SOURCE": "csv"}, ["market.path is required"]),
        ({"SIGNALOPS_WAREHOUSE__URLL": "x"}, ["warehouse.urll", "Extra inputs"]),
        ({"SIGNALOPS_MARKET__SYMBOLS": "A,A"}, ["market.symbols", "repeat"]),
        (
            {"SIGNALOPS_NOPE__X": "1"},
            ["nope: Extra inputs", "environment variable SIGNALOPS_NOPE__X"],
        ),
        (
            {
                "SIGNALOPS_MARKET__SOURCE": "postgres",
                "SIGNALOPS_MARKET__POSTGRES_URL": "postgresql://x/y",
            },
            ["exactly one of market.postgres_table or market.postgres_query"],
        ),
    ],
)
def test_bad_setting_names_it(
    env: dict[str, str], expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_settings(env=env)
    for text in expected:
        assert text in str(err.value)


def test_bad_yaml_key_names_the_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("features:\n  horizon: 3\n")
    with pytest.raises(ConfigError) as err:
        load_settings(env={"SIGNALOPS_CONFIG": str(config)})
    assert "features.horizon" in str(err.value)
    assert str(config) in str(err.value)


def test_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"SIGNALOPS_CONFIG": str(tmp_path / "nope.yaml")})
    broken = tmp_path / "broken.yaml"
    broken.write_text("market: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(env={"SIGNALOPS_CONFIG": str(broken)})


BAR_TABLE = {
    # bar minutes: (horizon, feature set, calendar, training window days / min rows,
    #               drift window bars / min rows / min outcomes, max gap bars)
    5: (12, "v1", "always", 30, 5000, 288, 200, 100, 864, 3600 + 900),
    60: (6, "v1", "always", 365, 2000, 120, 60, 60, 96, 3 * 86400),
    1440: (5, "d1", "weekdays", 3650, 500, 63, 40, 40, 10, 4 * 86400),
}


@pytest.mark.parametrize("minutes", sorted(BAR_TABLE))
def test_bar_size_defaults_come_from_one_table(minutes: int) -> None:
    s = load_settings(env={"SIGNALOPS_MARKET__BAR_MINUTES": str(minutes)})
    got = (
        s.features.horizon_bars,
        s.features.feature_set_version,
        s.market.calendar,
        s.training.window_days,
        s.training.min_rows,
        s.drift.window_bars,
        s.drift.min_rows,
        s.drift.min_outcomes,
        s.validation.max_gap_bars,
        s.serving.max_feature_age_s,
    )
    assert got == BAR_TABLE[minutes]


def test_explicit_settings_win_over_bar_size_defaults(tmp_path: Path) -> None:
    config = tmp_path / "signalops.yaml"
    config.write_text("market:\n  bar_minutes: 1440\ndrift:\n  window_bars: 250\n")
    s = load_settings(env={"SIGNALOPS_CONFIG": str(config), "SIGNALOPS_TRAINING__MIN_ROWS": "100"})
    assert (s.drift.window_bars, s.training.min_rows) == (250, 100)
    assert s.drift.min_rows == 40 and s.features.horizon_bars == 5  # the rest: daily row


def test_a_feature_set_for_other_bars_is_refused_naming_the_fitting_ones() -> None:
    with pytest.raises(ConfigError, match=r"'v1' is for 1- to 1439-minute bars.*\['d1'\]"):
        load_settings(
            env={
                "SIGNALOPS_MARKET__BAR_MINUTES": "1440",
                "SIGNALOPS_FEATURES__FEATURE_SET_VERSION": "v1",
            }
        )


def test_market_calendar_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"market\.calendar"):
        load_settings(env={"SIGNALOPS_MARKET__CALENDAR": "lunar"})
    with pytest.raises(ConfigError, match="unknown time zone"):
        load_settings(env={"SIGNALOPS_MARKET__TIMEZONE": "Mars/Olympus"})
    with pytest.raises(ConfigError, match="opens at 16:00, after it closes"):
        load_settings(env={"SIGNALOPS_MARKET__SESSION": "16:00,09:30"})
