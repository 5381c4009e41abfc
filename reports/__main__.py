"""python -m reports RUN_DIR: write RUN_DIR/report.html and print its path."""

from __future__ import annotations

import argparse

from reports import build_report


def main(argv: list[str] | None = None) -> None:
    """Parse the command line (argv, default sys.argv[1:]), build the report, print its path."""
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__)
    parser.add_argument("run_dir", help="finished run directory (local path or URI) holding results.parquet")
    print(build_report(parser.parse_args(argv).run_dir))


if __name__ == "__main__":
    main()
