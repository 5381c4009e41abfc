"""python -m condgen_bench.reports RUN_DIR: write RUN_DIR/report.html and print its path."""

from __future__ import annotations

import argparse

from condgen_bench.reports import build_report


def main(argv: list[str] | None = None) -> None:
    """Parse the command line (argv, default sys.argv[1:]), build the report, print its path."""
    parser = argparse.ArgumentParser(prog="python -m condgen_bench.reports", description=__doc__)
    parser.add_argument("run_dir", help="finished run directory (local path or URI) holding results.parquet")
    print(build_report(parser.parse_args(argv).run_dir))


if __name__ == "__main__":
    main()
