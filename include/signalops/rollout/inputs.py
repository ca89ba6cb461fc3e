"""Whether two model versions take the same inputs, and the sentence that says how not (pure).

Compared from each version's ``feature_spec.json``: the feature set, feature names added
and removed, the same names in another order. The canary calls a difference out when a
rollout starts, when it is promoted and on a manual rollback: callers that send features
inline must send the other ones.
"""

from __future__ import annotations

from typing import Any


def input_difference(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """How ``new``'s feature spec differs from ``old``'s: feature set, names added and
    removed, same names in another order; None when they take the same inputs."""
    old_names, new_names = list(old.get("names", [])), list(new.get("names", []))
    old_set, new_set = (
        str(old.get("feature_set_version", "?")),
        str(new.get("feature_set_version", "?")),
    )
    if old_set == new_set and old_names == new_names:
        return None
    return {
        "feature_set": [old_set, new_set],
        "added": [n for n in new_names if n not in old_names],
        "removed": [n for n in old_names if n not in new_names],
        "reordered": sorted(old_names) == sorted(new_names) and old_names != new_names,
    }


def describe_input_change(diff: dict[str, Any], new: str, old: str) -> str:
    """One sentence, e.g. "challenger v5 takes other inputs than champion v4: feature set
    v1 -> v2; added [a], removed [b]"."""
    old_set, new_set = diff["feature_set"]
    parts = [
        f"feature set {old_set} -> {new_set}" if old_set != new_set else f"feature set {new_set}"
    ]
    if diff["added"]:
        parts.append(f"added {diff['added']}")
    if diff["removed"]:
        parts.append(f"removed {diff['removed']}")
    if diff["reordered"]:
        parts.append("the same features in another order")
    if not (diff["added"] or diff["removed"] or diff["reordered"]):
        parts.append("the same feature names")
    return f"{new} takes other inputs than {old}: " + "; ".join(parts)
