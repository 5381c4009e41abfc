"""python -m condgen_bench.reports RUN_DIR [RUN_DIR ...] [--output FILE]: write the report of one run
(RUN_DIR/report.html) or one page over several (FILE, default ./report.html: a leaderboard per dataset
across the runs, then each dataset's sections), and print its path."""

from __future__ import annotations

import argparse

from condgen_bench.reports import build_report


def main(argv: list[str] | None = None) -> None:
    """Parse the command line (argv, default sys.argv[1:]), build the report, print its path."""
    parser = argparse.ArgumentParser(prog="python -m condgen_bench.reports", description=__doc__)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="finished run directory (local path or URI) holding results.parquet")
    parser.add_argument("--output", help="the HTML file to write (default: RUN_DIR/report.html for one run, "
                                         "./report.html for several)")
    args = parser.parse_args(argv)
    print(build_report(args.run_dirs if len(args.run_dirs) > 1 else args.run_dirs[0], args.output))


if __name__ == "__main__":
    main()
