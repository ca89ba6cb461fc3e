"""The input difference of two versions' feature specs, and the sentence that says it."""

from __future__ import annotations

from typing import Any

import pytest

from signalops.rollout.inputs import describe_input_change, input_difference


def spec(names: list[str], feature_set: str = "v1") -> dict[str, Any]:
    return {"feature_set_version": feature_set, "names": names}


def test_same_inputs_are_no_difference() -> None:
    assert input_difference(spec(["a", "b"]), spec(["a", "b"])) is None


@pytest.mark.parametrize(
    ("old", "new", "diff", "says"),
    [
        (
            spec(["a", "b", "c"]),
            spec(["a", "c", "d", "e"], "v2"),
            {"feature_set": ["v1", "v2"], "added": ["d", "e"], "removed": ["b"]},
            "feature set v1 -> v2; added ['d', 'e']; removed ['b']",
        ),
        (
            spec(["a", "b"]),
            spec(["b", "a"]),
            {"feature_set": ["v1", "v1"], "added": [], "removed": [], "reordered": True},
            "feature set v1; the same features in another order",
        ),
        (
            spec(["a", "b"]),
            spec(["a", "b"], "v2"),
            {"feature_set": ["v1", "v2"], "added": [], "removed": []},
            "feature set v1 -> v2; the same feature names",
        ),
    ],
)
def test_differences_are_named(
    old: dict[str, Any], new: dict[str, Any], diff: dict[str, Any], says: str
) -> None:
    found = input_difference(old, new)
    assert found is not None
    assert found == {"reordered": False, **diff}
    text = describe_input_change(found, "challenger v5", "champion v4")
    assert text == f"challenger v5 takes other inputs than champion v4: {says}"
