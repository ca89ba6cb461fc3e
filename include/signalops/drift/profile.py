"""Reference profiles: what the training features (and scores) looked like, and what their
drift statistics look like on windows of the training data itself (the null).

Per column: quantile bin edges with the reference counts in each bin (for PSI), summary
statistics, and a bounded, evenly-spaced sorted sample (for KS and Wasserstein without
keeping the whole training set). Stored as JSON next to the model version.

**Null critical values** (``profile["null"]``, profile version 2). A drift statistic on n
rows is noisy: PSI over 10 bins on 60 independent rows averages 0.17 with no drift at all
(its 99th percentile: 0.8, one empty bin), and rows of a market are autocorrelated (and
symbols move together), so a window of n rows holds far fewer than n independent draws.
The profile therefore measures the statistics' null distribution directly, on the
reference itself:

* the reference rows are put in time order (``ts``, then ``symbol``), so that a run of
  contiguous rows is a stretch of time with all its symbols and carries the real
  autocorrelation (the effective size under autocorrelation);
* at each size n of a geometric grid (20, 28, 40, 57, ... rows: a factor sqrt 2, up to half
  the reference), ``blocks`` such runs start at random; each is scored against the profile
  as a live window would be: PSI, KS D and normalized Wasserstein per feature;
* per feature and size the critical values are the ``quantile`` (0.99) of each statistic,
  raised by one common factor so that *any* of the three exceeds them in only 1 % of the
  runs (the monitor flags a feature past any of them); the same runs give the null
  distribution of how many features are past at once (they move together), kept at level
  ``significance`` (its 0.99 quantile);
* the score's PSI and the accuracy drop (overall reference accuracy minus the run's, from
  ``labels``) are one statistic each, cheap per run: ten times the runs, kept at level
  ``significance``;
* a run drawn from the reference shares rows with it, which shrinks every statistic: the
  variance of its distance to the reference is ``1/n - 1/N``, against ``1/n + 1/N`` for a
  new window of the same process, so the kept values are scaled by ``(N + n) / (N - n)``
  (PSI, a variance) or its square root (D, Wasserstein, the accuracy drop).

Cost: one binary search of each reference value into ~170 points (128 reference quantiles,
the PSI edges and 32 evenly spaced values for the sparse tails), then each run's histogram
over those bins (runs of four lattice cells or more, the lattice having at most 4,096
cells, as differences of prefix sums: O(bins) a run, not O(rows)). A run's PSI follows
exactly from its histogram; its KS D and Wasserstein are lower bounds within ~0.008 of
the exact values (the statistic at the points; per bin, the integral of the difference).
One column per core: about 1.5 s of CPU per 10 columns of a 1M-row reference.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signalops.drift.stats import EMPTY_BIN_SHARE
from signalops.evaluation import metrics as ml

log = logging.getLogger(__name__)

PROFILE_VERSION = 2
NULL_MIN_ROWS = 20  # the smallest window size calibrated
NULL_GRID_FACTOR = math.sqrt(2)  # between two calibrated sizes
NULL_POINTS = 128  # reference quantiles a block's KS and Wasserstein are measured at
NULL_SPREAD_POINTS = 32  # ... and evenly spaced values, for the sparse tails
NULL_CELLS = 4096  # large blocks start and end on a lattice of at most this many cells
NULL_QUANTILE = 0.99
NULL_BLOCKS = 200
NULL_SINGLE_FACTOR = 10  # blocks for the score's PSI and the accuracy drop: ten times as many
SIGNIFICANCE = 0.005
STATISTICS = ("psi", "ks_statistic", "wasserstein")
# how each statistic scales with the variance of the window's distance to the reference
FPC_POWER = {"psi": 1.0, "ks_statistic": 0.5, "wasserstein": 0.5, "accuracy_drop": 0.5}


def column_profile(values: np.ndarray, bins: int, sample_size: int) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    values = np.sort(values[np.isfinite(values)])
    n = len(values)
    if n == 0:
        raise ValueError("cannot profile a column with no finite values")
    # The column is sorted once: quantiles (numpy's default "linear" method) by index,
    # bin counts by binary search (np.quantile and np.histogram would sort it again).
    position = np.linspace(0, 1, bins + 1)[1:-1] * (n - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n - 1)
    quantiles = values[low] + (values[high] - values[low]) * (position - low)
    inner = np.unique(quantiles)
    # Open outer bins: current data outside the training range still falls in a bin;
    # bins are [edge_i, edge_i+1), as np.histogram's.
    counts = np.diff(np.concatenate(([0], np.searchsorted(values, inner, side="left"), [n])))
    take = np.linspace(0, len(values) - 1, min(sample_size, len(values))).round().astype(int)
    return {
        "n": len(values),
        "edges": [float(e) for e in inner],  # inner edges; the outer ones are -inf and +inf
        "counts": counts.tolist(),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values[0]),
        "max": float(values[-1]),
        "sample": values[take].tolist(),
    }


def build_profile(
    frame: pd.DataFrame,
    columns: list[str],
    scores: np.ndarray | None = None,
    bins: int = 10,
    sample_size: int = 2000,
    labels: np.ndarray | None = None,
    quantile: float = NULL_QUANTILE,
    blocks: int = NULL_BLOCKS,
    significance: float = SIGNIFICANCE,
    calibrate: bool = True,
) -> dict[str, Any]:
    """The profile of ``frame`` (rows aligned with ``scores`` and ``labels``), with the
    null critical values unless ``calibrate`` is false or the frame is too short."""
    profile: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "rows": len(frame),
        "start": frame["ts"].min().isoformat() if "ts" in frame and len(frame) else None,
        "end": frame["ts"].max().isoformat() if "ts" in frame and len(frame) else None,
        "bins": bins,
        "features": {c: column_profile(frame[c].to_numpy(), bins, sample_size) for c in columns},
    }
    if scores is not None:
        profile["score"] = column_profile(scores, bins, sample_size)
    if calibrate:
        profile["null"] = null_critical_values(
            frame, columns, profile, scores, labels, quantile, blocks, significance
        )
    return profile


def save_profile(profile: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile))
    return path


# ---------------------------------------------------------------------------------------
# the null: contiguous blocks of the reference rows


def window_sizes(rows: int) -> list[int]:
    """The calibrated window sizes: 20, 28, 40, 57, 80, ... rows (a factor of sqrt(2)), up
    to half the reference."""
    sizes: list[int] = []
    k = 0
    while (size := round(NULL_MIN_ROWS * NULL_GRID_FACTOR**k)) <= rows // 2:
        sizes.append(size)
        k += 1
    if sizes and rows // 2 > sizes[-1] * math.sqrt(NULL_GRID_FACTOR):
        sizes.append(rows // 2)
    return sizes


@dataclass(frozen=True)
class _Blocks:
    """The null windows: per size, ``count`` random runs of contiguous rows.

    Runs shorter than a lattice cell are gathered row by row; longer ones start and end on
    the lattice (their size rounded to whole cells), so that a run's histogram is a
    difference of two prefix sums.
    """

    rows: int
    step: int
    sizes: list[int]
    starts: list[np.ndarray]  # first row (gathered) or first cell (lattice), per size
    lattice: list[bool]
    cell: np.ndarray  # each row's lattice cell (rows past the last whole cell: none)

    @classmethod
    def draw(cls, rows: int, count: int, rng: np.random.Generator) -> _Blocks:
        """``count`` random runs per calibrated size of a reference of ``rows`` rows."""
        step = max(1, math.ceil(rows / NULL_CELLS))
        cells = rows // step
        sizes: list[int] = []
        starts: list[np.ndarray] = []
        lattice: list[bool] = []
        for nominal in window_sizes(rows):
            on_lattice = nominal >= 4 * step
            size = round(nominal / step) * step if on_lattice else nominal
            if sizes and size == sizes[-1]:
                continue
            if on_lattice:
                first = rng.integers(0, cells - size // step + 1, count)
            else:
                first = rng.integers(0, rows - size + 1, count)
            sizes.append(size)
            starts.append(first)
            lattice.append(on_lattice)
        cell = np.repeat(np.arange(cells, dtype=np.int64), step)
        return cls(rows, step, sizes, starts, lattice, cell)

    def sums(
        self, category: np.ndarray, categories: int, weights: np.ndarray | None = None
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per size, the (blocks, categories) counts of ``category`` in each block, and the
        sums of ``weights`` by category (None without weights)."""
        out: list[tuple[np.ndarray, np.ndarray | None]] = []
        prefix: list[np.ndarray] = []
        for size, first, on_lattice in zip(self.sizes, self.starts, self.lattice, strict=True):
            if on_lattice:
                if not prefix:  # one pass over the rows: per cell and category
                    cells = self.rows // self.step
                    used = cells * self.step
                    # category-major, so that the running sums run along contiguous memory
                    index = category[:used] * cells + self.cell
                    tables = [np.bincount(index, minlength=cells * categories)]
                    if weights is not None:
                        tables.append(np.bincount(index, weights[:used], cells * categories))
                    for table in tables:
                        running = np.zeros((categories, cells + 1), dtype=table.dtype)
                        np.cumsum(table.reshape(categories, cells), axis=1, out=running[:, 1:])
                        prefix.append(np.ascontiguousarray(running.T))  # a block reads rows
                k = size // self.step
                count = prefix[0][first + k] - prefix[0][first]
                total = None if weights is None else prefix[1][first + k] - prefix[1][first]
            else:
                rows = (first[:, None] + np.arange(size)).ravel()
                index = category[rows] + np.repeat(np.arange(len(first)) * categories, size)
                shape = (len(first), categories)
                count = np.bincount(index, minlength=shape[0] * shape[1]).reshape(shape)
                total = (
                    None
                    if weights is None
                    else np.bincount(index, weights[rows], minlength=shape[0] * shape[1]).reshape(
                        shape
                    )
                )
            out.append((count, total))
        return out


def _column_null(values: np.ndarray, column: dict[str, Any], blocks: _Blocks) -> np.ndarray:
    """(statistics, sizes, blocks): PSI, KS D and normalized Wasserstein of every block of
    ``values`` (reference rows in time order) against the profiled ``column``."""
    sample = np.asarray(column["sample"], dtype=np.float64)
    psi_edges = np.asarray(column["edges"], dtype=np.float64)
    take = np.linspace(0, len(sample) - 1, min(NULL_POINTS, len(sample))).round().astype(int)
    # The points: reference quantiles, evenly spaced values (for the sparse tails) and the
    # PSI edges, so that each PSI bin is a union of bins [e_k-1, e_k) (bin 0: below e_0, the
    # reference minimum; bin K: from e_K-1, its maximum).
    spread = np.linspace(sample[0], sample[-1], NULL_SPREAD_POINTS)
    edges = np.unique(np.concatenate([sample[take], psi_edges, spread]))
    points = len(edges)
    k = np.searchsorted(edges, values, side="right")
    # Wasserstein inside a bin needs sum(e_k - x) over its values (above the top: x - max).
    weight = np.append(edges, edges[-1])[k]
    weight -= values
    np.abs(weight, out=weight)
    psi_first = np.concatenate(([0], np.searchsorted(edges, psi_edges, side="left") + 1))
    reference = np.asarray(column["counts"], dtype=np.float64)
    reference = np.maximum(reference / reference.sum(), EMPTY_BIN_SHARE)
    # The sample's CDF just below each point, and its integral G between points (G is
    # piecewise linear, as the CDF is a step function).
    m = len(sample)
    f_below = np.searchsorted(sample, edges, side="left") / m
    g_sample = np.concatenate(([0.0], np.cumsum(np.diff(sample) * np.arange(1, m) / m)))
    g_bins = np.diff(np.interp(edges, sample, g_sample))
    lengths = np.diff(edges)
    scale = column["std"] if column["std"] > 0 else 1.0
    sums = blocks.sums(k, points + 1, weight)
    out = np.empty((3, len(blocks.sizes), len(blocks.starts[0])))
    for i, (size, (count, wsum)) in enumerate(zip(blocks.sizes, sums, strict=True)):
        assert wsum is not None
        share = np.maximum(np.add.reduceat(count, psi_first, axis=1) / size, EMPTY_BIN_SHARE)
        out[0, i] = np.sum((share - reference) * np.log(share / reference), axis=1)
        below = np.cumsum(count, axis=1)[:, :points] / size  # F_block just below each point
        out[1, i] = np.max(np.abs(below - f_below), axis=1)
        # |integral of F_ref - F_block| per bin (a lower bound when they cross inside it),
        # plus the exact tails beyond the reference's extremes
        inside = below[:, :-1] * lengths + wsum[:, 1:points] / size
        tails = (wsum[:, 0] + wsum[:, points]) / size
        out[2, i] = (tails + np.sum(np.abs(g_bins - inside), axis=1)) / scale
    return out


def _psi_null(values: np.ndarray, column: dict[str, Any], blocks: _Blocks) -> np.ndarray:
    """(sizes, blocks): the PSI of every block of ``values`` against the profiled ``column``."""
    edges = np.asarray(column["edges"], dtype=np.float64)
    reference = np.asarray(column["counts"], dtype=np.float64)
    reference = np.maximum(reference / reference.sum(), EMPTY_BIN_SHARE)
    sums = blocks.sums(np.searchsorted(edges, values, side="right"), len(edges) + 1)
    out = np.empty((len(blocks.sizes), len(blocks.starts[0])))
    for i, (size, (count, _)) in enumerate(zip(blocks.sizes, sums, strict=True)):
        share = np.maximum(count / size, EMPTY_BIN_SHARE)
        out[i] = np.sum((share - reference) * np.log(share / reference), axis=1)
    return out


def null_critical_values(
    frame: pd.DataFrame,
    columns: list[str],
    profile: dict[str, Any],
    scores: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    quantile: float = NULL_QUANTILE,
    blocks: int = NULL_BLOCKS,
    significance: float = SIGNIFICANCE,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Critical values of each statistic per window size (see the module docstring); None
    when the reference is too short to hold two windows of the smallest size."""
    started = time.perf_counter()
    order = np.arange(len(frame))
    if "ts" in frame and not frame["ts"].is_monotonic_increasing:
        keys = ["ts", "symbol"] if "symbol" in frame else ["ts"]
        order = np.asarray(frame.reset_index(drop=True).sort_values(keys, kind="stable").index)
    data = {c: frame[c].to_numpy(np.float64)[order] for c in columns}
    if scores is not None:
        data["__score__"] = np.asarray(scores, dtype=np.float64)[order]
    finite = np.ones(len(order), dtype=bool)
    for values in data.values():
        finite &= np.isfinite(values)
    if not finite.all():  # as the check drops rows with a missing feature
        data = {c: v[finite] for c, v in data.items()}
    rows = int(finite.sum())
    if not window_sizes(rows):
        return None
    rng = np.random.default_rng(seed)
    draws = _Blocks.draw(rows, blocks, rng)
    # One statistic each (the score's PSI, the accuracy drop) is cheap per block: ten times
    # the blocks, for a steadier tail quantile.
    many = _Blocks.draw(rows, blocks * NULL_SINGLE_FACTOR, rng)
    sizes = np.asarray(draws.sizes, dtype=np.float64)
    fpc = (rows + sizes) / (rows - sizes)
    null: dict[str, Any] = {
        "method": "contiguous blocks of the reference rows in (ts, symbol) order",
        "quantile": quantile,
        "significance": significance,
        "blocks": blocks,
        "reference_rows": rows,
        "sizes": draws.sizes,
        "features": {},
    }
    exceed = np.zeros((len(draws.sizes), blocks), dtype=int)
    # numpy's binary searches and bincounts release the GIL: one column per core
    with ThreadPoolExecutor(max_workers=min(len(columns), os.cpu_count() or 2) or 1) as pool:
        nulls = pool.map(
            lambda name: _column_null(data[name], profile["features"][name], draws), columns
        )
        for name, stats in zip(columns, nulls, strict=True):
            # A feature is past the null when any of its three statistics is: the three
            # quantiles are raised by one common factor so that the union, not each
            # statistic, exceeds them in a share 1 - quantile of the null windows.
            critical = np.maximum(np.quantile(stats, quantile, axis=2), 1e-12)
            ratio = np.max(stats / critical[:, :, None], axis=0)
            critical *= np.maximum(np.quantile(ratio, quantile, axis=1), 1.0)
            null["features"][name] = {
                s: (critical[j] * fpc ** FPC_POWER[s]).tolist() for j, s in enumerate(STATISTICS)
            }
            exceed += np.any(stats > critical[:, :, None], axis=0)
    # How many features a null window pushes past a critical value at once (they move
    # together): the overall verdict needs more than this.
    null["drifted_count"] = (
        np.quantile(exceed, 1 - significance, axis=1, method="higher").astype(int).tolist()
    )
    if scores is not None:
        score_psi = _psi_null(data["__score__"], profile["score"], many)
        critical = np.quantile(score_psi, 1 - significance, axis=1)
        null["score"] = {"psi": (critical * fpc ** FPC_POWER["psi"]).tolist()}
    if labels is not None and scores is not None:
        y = np.asarray(labels, dtype=np.float64)[order][finite]
        hit = ml.correct_rows(y, data["__score__"]).astype(bool)
        category = np.where(np.isfinite(y), hit.astype(int), 2)
        matured = np.isfinite(y)
        if matured.any():
            overall = float(hit[matured].mean())
            drops = []
            for count, _ in many.sums(category, 3):
                with np.errstate(invalid="ignore", divide="ignore"):
                    drops.append(overall - count[:, 1] / (count[:, 0] + count[:, 1]))
            drop = np.nanquantile(np.asarray(drops), 1 - significance, axis=1)
            null["accuracy"] = overall
            null["accuracy_drop"] = (drop * fpc ** FPC_POWER["accuracy_drop"]).tolist()
    log.info(
        "drift profile: null critical values of %d columns at %d window sizes (%d to %d "
        "rows) from %d blocks each of %d reference rows in %.1f s",
        len(columns) + (scores is not None),
        len(draws.sizes),
        draws.sizes[0],
        draws.sizes[-1],
        blocks,
        rows,
        time.perf_counter() - started,
    )
    return null
