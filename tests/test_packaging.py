"""The project installs one import package, condgen_bench, and lives beside other packages named like its
folders: Hugging Face's `datasets` (or any `datasets`, `models`, `harness`, `reports`) earlier on the
import path changes nothing of ours, and ours shadows nobody's."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if "__main__" in p.read_text())  # not laptop.py
# what a Ray worker, a trial and a finalist task import (harness/trial.py, worker.py, finalists.py, sweep.py)
WORKER_MODULES = ["condgen_bench.harness.sweep", "condgen_bench.harness.trial", "condgen_bench.harness.worker",
                  "condgen_bench.harness.finalists", "condgen_bench.harness.evaluation.scoring", "condgen_bench.models",
                  "condgen_bench.datasets", "condgen_bench.reports"]

CHECK = """
import contextlib, importlib, io, os, runpy, sys
scripts, modules, root = sys.argv[1].split(","), sys.argv[2].split(","), sys.argv[3]
sys.path.insert(0, os.path.dirname(scripts[0]))  # as `python experiments/x.py` has it
for script in scripts:
    sys.argv = [script, "--dry-run", "--smoke-test"]  # the smoke-test profile: the dry run times tiny networks
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as end:
            assert not end.code, (script, end.code)
    assert '"method"' in out.getvalue(), (script, out.getvalue()[-500:])
for name in modules:
    assert importlib.import_module(name).__file__.startswith(root), name
import datasets, models
print("others:", datasets.__file__, models.__file__)
"""


def _stubs(folder: Path) -> Path:
    """Packages named datasets, models, harness and reports that are not ours (as Hugging Face's is not)."""
    for name in ("datasets", "models", "harness", "reports"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text("STUB = True\n")
    return folder


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


def test_packages_named_like_ours_earlier_on_the_path_change_nothing(tmp_path):
    stubs = _stubs(tmp_path / "others")
    out = subprocess.run([sys.executable, "-c", CHECK, ",".join(map(str, SCRIPTS)), ",".join(WORKER_MODULES),
                          str(ROOT)], cwd=tmp_path, env=_env(PYTHONPATH=str(stubs)), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"others: {stubs}/datasets/__init__.py {stubs}/models/__init__.py" in out.stdout


def test_installing_the_project_adds_no_top_level_datasets_or_models():
    code = ("import importlib.util, sys\n"
            "for name in ('datasets', 'models', 'harness', 'reports'):\n"
            "    spec = importlib.util.find_spec(name)\n"
            "    assert spec is None or not (spec.origin or '').startswith(sys.argv[1]), (name, spec.origin)\n")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], cwd="/", env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_the_folder_shipped_to_a_cluster_imports_as_condgen_bench(tmp_path):
    """What `--address` ships with Ray's py_modules (harness/sweep.package_folder) is importable on its own."""
    from condgen_bench.harness.sweep import package_folder

    folder = package_folder()
    code = "import condgen_bench.harness.worker as w, condgen_bench.datasets as d; print(w.__file__); print(d.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(PYTHONPATH=os.path.dirname(folder)),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [f"{folder}/harness/worker.py", f"{folder}/datasets/__init__.py"]
