"""An evaluation's record: one folder holding eval.json (layout.EVAL_RECORD), the per-sample arrays the
paired tests resample (layout.PER_SAMPLE, an .npz), the sample grid (layout.SAMPLE_GRID) and any other
files of it (the memorization gallery). Written and read here only.

eval.json is written last: its presence says the record is whole (a write cut short by a crash or a full
disk leaves a folder without one, which every reader passes over)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np

from condgen_bench.reports.run_folder import layout, storage


@dataclass
class EvalRecord:
    """One evaluation of one checkpoint under one sampler setting."""

    # eval.json: {"stage", "metrics" {name: float, NaN where missing}, "missing" {name: reason}, "protocol"
    # {setting: value}, "epoch", "step", "trial_id", "sampling_setting", ...}
    fields: dict
    per_sample: dict[str, np.ndarray] = field(default_factory=dict)  # name -> array (reports/paired.py)
    grid_png: bytes | None = None  # the sample grid; None when read back (it is read by the report's page)
    files: dict[str, bytes] = field(default_factory=dict)  # other files beside it, by name

    @classmethod
    def of(cls, evaluation: dict, grid_png: bytes | None) -> EvalRecord:
        """The record of an evaluation's result (harness/evaluation/scoring.py evaluate: eval.json's fields
        with "per_sample" and "files" in them) and its sample grid."""
        fields = {k: v for k, v in evaluation.items() if k not in ("per_sample", "files")}
        return cls(fields, dict(evaluation.get("per_sample") or {}), grid_png, dict(evaluation.get("files") or {}))

    @property
    def metrics(self) -> dict:
        return self.fields["metrics"]

    def write(self, folder: str) -> None:
        """The record's files in ``folder`` (a local path or URI), eval.json last."""
        if self.grid_png is not None:
            storage.write_bytes(storage.join(folder, layout.SAMPLE_GRID), self.grid_png)
        if self.per_sample:
            storage.write_bytes(storage.join(folder, layout.PER_SAMPLE), arrays_to_bytes(self.per_sample))
        for name, data in self.files.items():
            storage.write_bytes(storage.join(folder, name), data)
        storage.write_bytes(storage.join(folder, layout.EVAL_RECORD), json.dumps(self.fields, indent=1).encode())

    @classmethod
    def read(cls, folder: str, arrays: bool = True) -> EvalRecord:
        """The record in ``folder``; its per-sample arrays too where ``arrays`` (and it has them)."""
        fields = json.loads(storage.read_bytes(storage.join(folder, layout.EVAL_RECORD)))
        per_sample = (read_arrays(storage.join(folder, layout.PER_SAMPLE)) or {}) if arrays else {}
        return cls(fields, per_sample)

    @staticmethod
    def exists(folder: str) -> bool:
        """True where ``folder`` holds a whole record (its eval.json)."""
        return storage.exists(storage.join(folder, layout.EVAL_RECORD))


def record_files(run_dir: str, relative: str) -> dict[str, str]:
    """The files of the record at ``relative`` (a folder under ``run_dir``, "/"-separated) as results
    columns, relative to the run: "sample_grid" always, "per_sample", "memorization_grid", "augment_study" and
    "augment_study_grid" where written."""
    out = {"sample_grid": f"{relative}/{layout.SAMPLE_GRID}"}
    for column, name in (("per_sample", layout.PER_SAMPLE), ("memorization_grid", layout.MEMORIZATION_GRID),
                         ("augment_study", layout.AUGMENT_STUDY), ("augment_study_grid", layout.AUGMENT_STUDY_GRID)):
        if storage.exists(storage.join(run_dir, relative, name)):
            out[column] = f"{relative}/{name}"
    return out


def arrays_to_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz file of ``arrays`` (compressed)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def read_arrays(path: str) -> dict[str, np.ndarray] | None:
    """The arrays of the .npz file at ``path`` (no pickled objects), or None where there is none."""
    if not storage.exists(path):
        return None
    with np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
