"""Exporting result rows with expstore.data_export against pandas' own writers, to the same local disk.

What it measures, for `--rows` result rows (default 100,000) of 8 fields each (ints, floats,
strings, a bool), generated once as a list of dicts, the way an experiment loop collects them:

- JSON: `export_results_json(rows, path, pretty=False)` and with the default `pretty=True`
  (indent 2) against `pd.DataFrame(rows).to_json(path, orient="records")` (with `indent=2`);
- CSV: `export_results_csv(rows, path)` against `pd.DataFrame(rows).to_csv(path, index=False)`;
- parquet: `export_results_parquet(df, path)` against `df.to_parquet(path)` of the same DataFrame.

Both sides start from the same object: the list of rows for JSON and CSV (pandas has to build its
DataFrame first, and that is timed), the DataFrame for parquet. expstore's side includes its
atomic commit (temp file, fsync, rename, folder fsync); pandas' side writes the file in place
without fsync. Each pair runs interleaved after one untimed warm-up round.

    python benchmarks/export_bench.py                  # 100,000 rows, 5 repeats
    python benchmarks/export_bench.py --rows 20000 --repeat 3 --json export.json

Reading the table: ratio = expstore time / pandas time from the medians (best in parentheses);
MiB/s is the size of the file written over the time. `ok?` judges the median ratio against 1.2.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from benchlib import Row, machine, print_report, run, scratch_folder, time_pair

from expstore.data_export import export_results_csv, export_results_json, export_results_parquet

TARGET = 1.2


def make_rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    return [
        {
            "run": i,
            "seed": i % 97,
            "lr": rng.choice([1e-2, 1e-3, 1e-4]),
            "acc": rng.random(),
            "loss": rng.random() * 10,
            "model": rng.choice(["mlp", "kan", "siren"]),
            "converged": rng.random() < 0.5,
            "epochs": 100,
        }
        for i in range(n)
    ]


def measure(folder: Path, rows: list[dict[str, Any]], repeat: int) -> list[Row]:
    df = pd.DataFrame(rows)
    ours, theirs = folder / "expstore", folder / "pandas"
    theirs.mkdir()
    pairs = [
        ("json (pretty=False)", "pd.DataFrame(rows).to_json",
         lambda: export_results_json(rows, ours / "r.json", pretty=False),
         lambda: pd.DataFrame(rows).to_json(theirs / "r.json", orient="records"), "r.json"),
        ("json (pretty=True, default)", "... .to_json(indent=2)",
         lambda: export_results_json(rows, ours / "rp.json"),
         lambda: pd.DataFrame(rows).to_json(theirs / "rp.json", orient="records", indent=2), "rp.json"),
        ("csv", "pd.DataFrame(rows).to_csv",
         lambda: export_results_csv(rows, ours / "r.csv"),
         lambda: pd.DataFrame(rows).to_csv(theirs / "r.csv", index=False), "r.csv"),
        ("parquet", "df.to_parquet",
         lambda: export_results_parquet(df, ours / "r.parquet"),
         lambda: df.to_parquet(theirs / "r.parquet"), "r.parquet"),
    ]
    out = []
    for operation, baseline, expstore_op, baseline_op, name in pairs:
        times = time_pair(expstore_op, baseline_op, repeat)
        out.append(Row(operation, baseline, TARGET, (ours / name).stat().st_size, *times))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="result rows to export (default 100,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per operation (default 5)")
    parser.add_argument("--dir", type=Path, help="folder on the disk to measure (default ./.bench-tmp); removed after")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows and run details here")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be >= 1")
    rows = make_rows(args.rows)
    with scratch_folder(args.dir, "export-bench-") as folder:
        table_rows = measure(folder, rows, args.repeat)
    notes = [
        f"{args.rows} rows x 8 fields, {args.repeat} repeats; pandas builds its DataFrame from the rows inside the timed call (JSON, CSV)",
        "expstore commits atomically (temp file + fsync + rename + folder fsync); pandas writes in place without fsync",
    ]
    line = machine(["pandas", "pyarrow", "numpy"])
    command = "python " + shlex.join(sys.argv)
    print_report(table_rows, notes, line, command, args.json)
    return 0 if all(r.ok for r in table_rows) else 1


if __name__ == "__main__":
    run(main, "export_bench: interrupted")
