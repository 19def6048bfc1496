"""Experiment logging on any store: `ExperimentLogger`, and reading its logs back."""

from .logger import ExperimentLogger, create_experiment_logger
from .reader import analyze_logs, load_structured_logs, load_text_log

__all__ = ["ExperimentLogger", "analyze_logs", "create_experiment_logger", "load_structured_logs", "load_text_log"]
