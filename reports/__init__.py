"""The run report: ``build_report(run_dir)`` writes ``run_dir/report.html``, one self-contained HTML file
(plotly.js and sample grids inline) about a finished run; ``python -m reports RUN_DIR`` does the same."""

from reports.html import build_report

__all__ = ["build_report"]
