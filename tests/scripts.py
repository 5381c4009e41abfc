"""The experiment scripts, run in this process as `python experiments/x.py ARGV` runs them (tests/test_config.py,
tests/test_docs.py): much cheaper than a subprocess, which would import torch and the harness again."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "experiments").glob("*.py") if "__main__" in p.read_text())  # not laptop.py


def run_main(script: Path, argv: list[str]) -> int | str:
    """Run ``script`` as __main__ with ``argv``; returns its exit code (0 where it returned, a message where it
    exited with one)."""
    import runpy

    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(script.parent))  # as `python experiments/x.py` has it: laptop.py, the other scripts
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as end:
        return end.code if isinstance(end.code, int) else (0 if end.code is None else f"{end.code}")
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
    return 0
