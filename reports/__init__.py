"""The run directory and its report. ``layout`` names every file of a run and ``storage`` reads and writes
them (a local path or a URI); the harness writes runs through them and the report reads them, so this
package imports nothing of the harness. ``build_report(run_dir)`` writes ``run_dir/report.html``, one
self-contained HTML file (plotly.js and sample grids inline) about a finished run, and
``build_report([run_dir, ...], output)`` one page over several; ``python -m condgen_bench.reports RUN_DIR
[RUN_DIR ...] [--output FILE]`` does the same."""


def build_report(run_dirs: str | list[str], output: str | None = None) -> str:
    """Write the report of one run (``run_dir/report.html``) or of several (one page, ``output`` or
    ./report.html) and return its path (reports/html.py; plotly is imported only here, so Ray workers
    that write run files do not load it)."""
    from condgen_bench.reports.html import build_report as build

    return build(run_dirs, output)


__all__ = ["build_report"]
