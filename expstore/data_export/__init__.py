"""Exporting results (JSON, CSV, pickle, parquet, summary statistics) to any store."""

from .writers import (
    NumpyEncoder,
    export_all_formats,
    export_results_csv,
    export_results_json,
    export_results_parquet,
    export_results_pickle,
    export_summary_statistics,
    load_results_json,
    load_results_parquet,
    load_results_pickle,
    parquet_bytes,
    read_parquet_bytes,
    split_location,
    summary_statistics,
)

__all__ = [
    "NumpyEncoder",
    "export_all_formats",
    "export_results_csv",
    "export_results_json",
    "export_results_parquet",
    "export_results_pickle",
    "export_summary_statistics",
    "load_results_json",
    "load_results_parquet",
    "load_results_pickle",
    "parquet_bytes",
    "read_parquet_bytes",
    "split_location",
    "summary_statistics",
]
