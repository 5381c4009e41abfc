"""Which of two leaderboard figures is better by more than noise: reports/paired.py's tests applied to
the rows' per-sample files, with the rows' spreads where a figure was not kept per sample.

A row that stands for several seeds of one configuration (``seeds`` > 1, sections.aggregate_seeds)
holds means and their std over seeds: it is compared unpaired, with the standard error std / sqrt(seeds).
"""

from __future__ import annotations

import math

import pandas as pd

from condgen_bench.reports import paired
from condgen_bench.reports.run_folder import layout
from condgen_bench.reports.run_folder.records import read_arrays
from condgen_bench.reports.catalog import lookup
from condgen_bench.reports.inputs import is_missing

# How the leaderboard's noise marks are computed, for the protocol section.
METHOD = (f"each figure against the column's best: the {paired.LEVEL:.0%} interval of their difference; "
          "“within noise” when it holds 0. Paired bootstrap over the same seeded samples (accuracy on "
          "samples; domain FID and KID, the real test features held fixed) and over the same real test "
          f"images (bits/dim), {paired.RESAMPLES} draws, resampled within each class: the recorded figures' difference "
          f"± {paired.Z:.2f} standard deviations of the draws, where both figures' records kept their per-sample "
          "values under the same seeds and reference; otherwise unpaired: the difference ± "
          f"{paired.Z:.2f} × the two spreads combined (Inception metrics, IS, precision / recall, CAS, "
          "augmentation gain; a mean over seeds counts with std / √seeds); no mark without a spread")


class PerSampleFiles:
    """The per-sample arrays of results rows, each file read once. run_dir: the directory relative
    paths are under (a merged report's paths are absolute)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.cache: dict[str, dict] = {}

    def of(self, row: pd.Series) -> dict | None:
        """The row's arrays, or None (no file: an older run, a seed mean, a row without samples)."""
        relative = row.get("per_sample")
        if is_missing(relative) or not relative or _seeds(row) > 1:
            return None
        path = layout.record_file(self.run_dir, relative)
        if path not in self.cache:
            self.cache[path] = read_arrays(path)
        return self.cache[path]


def _seeds(row: pd.Series) -> int:
    value = row.get("seeds")
    return 1 if is_missing(value) else int(value)


def _standard_error(row: pd.Series, spread: str | None) -> float | None:
    """The row's spread of a metric as the standard error of its figure (a seed mean's std / sqrt(seeds))."""
    if spread is None or is_missing(row.get(spread)):
        return None
    return float(row[spread]) / math.sqrt(_seeds(row))


def difference(metric: str, a: pd.Series, b: pd.Series, files: PerSampleFiles) -> paired.Difference | None:
    """metric(a) - metric(b) with its interval: paired where both rows kept the metric's per-sample values
    under the same seeds and reference, else from their spreads; None if either value or spread is missing."""
    if is_missing(a.get(metric)) or is_missing(b.get(metric)):
        return None
    arrays_a, arrays_b = files.of(a), files.of(b)
    if paired.pairs(metric, arrays_a, arrays_b):
        found = paired.paired_difference(metric, arrays_a, arrays_b)
        # centred on the recorded figures' difference (KID's recorded figure averages subsets; the
        # bootstrap's statistic uses every sample): the bootstrap gives the half-width, the record the centre
        recorded = float(a[metric]) - float(b[metric])
        shift = recorded - found.value
        return paired.Difference(recorded, found.low + shift, found.high + shift, found.method)
    entry = lookup(metric)
    spread = entry.spread if entry is not None else None
    return paired.unpaired_difference(a[metric], b[metric], _standard_error(a, spread), _standard_error(b, spread))


def describe(diff: paired.Difference, scale: float = 1) -> str:
    """"+1.2 [-0.5, 2.9] (paired bootstrap over ...)": a difference for hover text, x ``scale``."""
    return (f"{diff.value * scale:+.3g} [{diff.low * scale:+.3g}, {diff.high * scale:+.3g}] "
            f"({diff.method})")
