"""`python -m bench`: every hot path beside its peer and its floor, in one table.

    python -m bench [--quick] [--repeats N] [--only commands,appends,…] [--postgres-url URL]
                    [--redis-url URL]

Each benchmark also runs alone: `python -m bench.NAME` (commands, appends, queries, mutations,
projection, long_streams, limits, replicas). Every figure is the median of --repeats measurements
(default 5; --quick: tiny sizes, 1 repeat), and its baseline is measured in the same run,
interleaved.
"""

from __future__ import annotations

import importlib
import platform
import sys
import time
import traceback

from bench.common import Figure, options, parser, progress, table

BENCHES = (
    "commands", "appends", "queries", "mutations", "projection", "long_streams", "limits",
    "replicas",
)


def main() -> int:
    cli = parser(__doc__.strip().splitlines()[0])
    cli.add_argument("--only", default=",".join(BENCHES),
                     help=f"comma-separated subset of {', '.join(BENCHES)}")
    args = cli.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        cli.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    opts = options(args)
    figures: list[Figure] = []
    failed = []
    started = time.monotonic()
    for name in chosen:
        try:
            figures += importlib.import_module(f"bench.{name}").run(opts)
        except Exception:  # report the others; the exit status tells
            traceback.print_exc()
            failed.append(name)
            figures.append(Figure(name, "FAILED (see the traceback above)", None, ""))
    progress(f"done in {time.monotonic() - started:.0f} s")
    print(f"\n{platform.python_implementation()} {platform.python_version()}, "
          f"{'quick, ' if opts.quick else ''}median of {opts.repeats}\n")
    print(table(figures))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
