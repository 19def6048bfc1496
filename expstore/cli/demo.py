"""`expstore demo`: a small seeded optimisation, logged, checkpointed, exported, resumable after a crash.

The problem is linear regression fitted by minibatch SGD with momentum on synthetic data drawn
from `--seed`. The whole training state (weights, velocity, the minibatch generator's state,
the evaluation history) is in every checkpoint, so a run resumed from a checkpoint ends with
exactly the numbers an uninterrupted run gives.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from contextlib import ExitStack
from typing import Any

import numpy as np

from ..checkpointing import CheckpointManager
from ..store.config import default_url
from ..store.keys import validate_experiment_name
from .common import UsageError, join_url, open_url, progress_bar, storage_options
from .layout import CHECKPOINTS, LOGS, RESULTS

__all__ = ["fresh_state", "make_problem", "register", "run"]

FEATURES = 10
LEARNING_RATE = 0.01
MOMENTUM = 0.9
BATCH = 32
SAVE_EVERY = 100
KEEP_LAST_N = 3
METRICS_EVERY = 10


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add the `demo` subcommand."""
    p = sub.add_parser("demo", parents=parents, help="run the example experiment (resumes when run again)",
                       description="Run a small seeded optimisation: logged, checkpointed every 100 iterations "
                                   "(last 3 kept), results exported in every format. Run again, or after "
                                   "--crash-at, and it resumes from the latest checkpoint.")
    p.add_argument("--url", help="root URL of the runs (default: EXPSTORE_URL, expstore.toml, else ./runs)")
    p.add_argument("--name", default="exp001", help="experiment name (default exp001)")
    p.add_argument("--samples", type=int, default=512, help="synthetic samples (default 512)")
    p.add_argument("--iterations", type=int, default=1000, help="SGD iterations (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and of the minibatches (default 0)")
    p.add_argument("--save-results", metavar="PATH", help="also write the results JSON to this path or URL")
    p.add_argument("--crash-at", type=int, metavar="N", help="kill this process (SIGKILL) at iteration N")
    p.add_argument("--delay", type=float, default=0.0, metavar="SECONDS",
                   help="sleep this long per iteration, to watch the run (expstore logs --follow) or kill it by hand")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="echo the experiment log on the console")
    p.set_defaults(func=run)


def make_problem(seed: int, samples: int) -> dict[str, np.ndarray]:
    """Synthetic regression data (80 % train, 20 % test) and the true weights, all from `seed`."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, FEATURES))
    w_true = rng.normal(size=FEATURES)
    y = x @ w_true + 0.1 * rng.normal(size=samples)
    cut = max(1, int(samples * 0.8))
    return {"x": x[:cut], "y": y[:cut], "x_test": x[cut:], "y_test": y[cut:], "w_true": w_true}


def _mse(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(np.mean((x @ w - y) ** 2)) if len(y) else float("nan")


def fresh_state(seed: int, samples: int) -> dict[str, Any]:
    """The training state at iteration 0 (with the data's seed and size, checked on resume)."""
    return {
        "data": {"seed": seed, "samples": samples},
        "w": np.zeros(FEATURES),
        "velocity": np.zeros(FEATURES),
        "rng": np.random.default_rng(seed + 1).bit_generator.state,
        "history": {name: np.zeros(0, dtype=np.int64 if name == "iteration" else np.float64)
                    for name in ("iteration", "train_loss", "test_loss", "weight_error")},
    }


def _check_args(args: argparse.Namespace) -> None:
    if args.iterations < 1:
        raise UsageError(f"--iterations must be >= 1, got {args.iterations}")
    if args.delay < 0:
        raise UsageError(f"--delay must be >= 0, got {args.delay}")
    if args.samples < 8:
        raise UsageError(f"--samples must be >= 8, got {args.samples}")
    if args.crash_at is not None and not 1 <= args.crash_at <= args.iterations:
        raise UsageError(f"--crash-at must be between 1 and --iterations ({args.iterations}), got {args.crash_at}")
    try:
        validate_experiment_name(args.name)
    except ValueError as exc:
        raise UsageError(f"--name: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Train (or resume), checkpoint, log and export; print where everything went."""
    _check_args(args)
    root = args.url or default_url()
    name = args.name
    run_url = join_url(root, name)
    config = {"experiment": name, "url": run_url, "seed": args.seed, "samples": args.samples,
              "iterations": args.iterations, "features": FEATURES, "learning_rate": LEARNING_RATE,
              "momentum": MOMENTUM, "batch_size": BATCH}
    with ExitStack() as stack:
        ckpt_store = stack.enter_context(open_url(args, join_url(run_url, CHECKPOINTS)))
        manager = stack.enter_context(CheckpointManager(ckpt_store, name, keep_last_n=KEEP_LAST_N,
                                                        save_frequency=SAVE_EVERY))
        state, start = _resume(manager, args.seed, args.samples)
        logs_store = stack.enter_context(open_url(args, join_url(run_url, LOGS)))
        logger = stack.enter_context(_open_logger(args, logs_store, name))  # finalized on exit, "failed" on an error
        logger.log_config(config)
        if start:
            logger.info("Resumed from the checkpoint of iteration %d", start)
        started = time.perf_counter()
        state = _train(args, manager, logger, state, start, make_problem(args.seed, args.samples))
        rows = _rows(state["history"])  # never empty: every checkpoint and the last iteration evaluate
        logger.log_result(rows[-1])
        exported = _export(args, run_url, name, rows, config)
        elapsed = time.perf_counter() - started
        kept = [c["iteration"] for c in manager.list_checkpoints()]
    _report(args, root, run_url, name, start, elapsed, rows, kept, exported)
    return 0


def _resume(manager: CheckpointManager, seed: int, samples: int) -> tuple[dict[str, Any], int]:
    """The latest checkpoint's state and iteration, or a fresh state; says which on stdout."""
    if not manager.list_checkpoints():
        print(f"starting {manager.experiment_name} from scratch (no checkpoint in {manager.store.url})")
        return fresh_state(seed, samples), 0
    loaded = manager.load_checkpoint()
    data = loaded["state"].get("data")
    if data != {"seed": seed, "samples": samples}:
        raise UsageError(f"{manager.experiment_name} in {manager.store.url} was trained with {data}, not "
                         f"--seed {seed} --samples {samples}: pass those values or another --name")
    ref = manager.ref_for(manager.key_for(loaded["iteration"]))
    print(f"resuming {manager.experiment_name} from the checkpoint of iteration {loaded['iteration']} ({ref})")
    return loaded["state"], int(loaded["iteration"])


def _open_logger(args: argparse.Namespace, store: Any, name: str) -> Any:
    from ..experiment_logger import create_experiment_logger

    return create_experiment_logger(name, store, verbose=args.verbose)


def _train(args: argparse.Namespace, manager: CheckpointManager, logger: Any, state: dict[str, Any], start: int,
           data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Run iterations start+1 .. --iterations; checkpoint every 100 and at the end (tagged final)."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    w, v, history = np.array(state["w"]), np.array(state["velocity"]), dict(state["history"])
    x, y = data["x"], data["y"]
    bar = progress_bar(args.iterations, initial=start, desc=args.name, enabled=not args.no_progress)
    try:
        for it in range(start + 1, args.iterations + 1):
            if it == args.crash_at:
                _crash(it)
            if args.delay:
                time.sleep(args.delay)
            idx = rng.integers(0, len(y), size=min(BATCH, len(y)))
            grad = 2.0 * x[idx].T @ (x[idx] @ w - y[idx]) / len(idx)
            v = MOMENTUM * v - LEARNING_RATE * grad
            w = w + v
            if it % METRICS_EVERY == 0:
                loss = _mse(x, y, w)
                logger.log_metrics({"loss": loss, "grad_norm": float(np.linalg.norm(grad))}, step=it)
                bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
            last = it == args.iterations
            if manager.should_save_checkpoint(it) or last:
                history = _evaluate(history, it, w, data)
                state = {**state, "w": w, "velocity": v, "rng": rng.bit_generator.state, "history": history}
                meta = {"loss": float(history["train_loss"][-1]), "test_loss": float(history["test_loss"][-1])}
                ref = manager.save_checkpoint(state, it, meta, tag="final" if last else None)
                logger.log_checkpoint({"path": ref, "iteration": it, **meta})
                logger.log_progress(it, args.iterations, meta)
            bar.update(1)
    finally:
        bar.close()
    return state


def _evaluate(history: dict[str, np.ndarray], it: int, w: np.ndarray, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    row = {"iteration": it, "train_loss": _mse(data["x"], data["y"], w), "test_loss": _mse(data["x_test"], data["y_test"], w),
           "weight_error": float(np.linalg.norm(w - data["w_true"]))}
    return {k: np.append(history[k], np.array(row[k], dtype=history[k].dtype)) for k in history}


def _crash(it: int) -> None:
    """Die the way a killed job dies: no cleanup, no flush of anything buffered."""
    sys.stdout.flush()
    sys.stderr.write(f"expstore demo: --crash-at {it}: killing this process now (SIGKILL)\n")
    sys.stderr.flush()
    if hasattr(signal, "SIGKILL"):
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)


def _rows(history: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The evaluation history as result rows (one per evaluation)."""
    return [{k: history[k][i].item() for k in history} for i in range(len(history["iteration"]))]


def _export(args: argparse.Namespace, run_url: str, name: str, rows: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
    """Write the results in every format under `<run>/results`; also to --save-results."""
    from ..data_export import export_all_formats, export_results_json

    with open_url(args, join_url(run_url, RESULTS)) as store:
        exported = export_all_formats(rows, store, name, metadata=config)
    paths = list(exported.values()) if isinstance(exported, dict) else list(exported)
    if args.save_results:
        export_results_json(rows, args.save_results, metadata=config, **storage_options(args, args.save_results))
        paths.append(args.save_results)
    return [str(p) for p in paths]


def _report(args: argparse.Namespace, root: str, run_url: str, name: str, start: int, elapsed: float,
            rows: list[dict[str, Any]], kept: list[int], exported: list[str]) -> None:
    done = args.iterations - start
    if done <= 0:
        print(f"{name} had already run {start} iterations: nothing left to train; results exported again")
    else:
        print(f"trained {name}: iterations {start + 1}-{args.iterations} in {elapsed:.2f} s")
    last = rows[-1]
    print(f"  final  train loss {last['train_loss']:.6g}   test loss {last['test_loss']:.6g}   "
          f"weight error {last['weight_error']:.4g}")
    print(f"  checkpoints  {join_url(run_url, CHECKPOINTS)}  (iterations {', '.join(map(str, kept))})")
    print(f"  logs         {join_url(run_url, LOGS)}  ({name}.log, {name}_structured.jsonl)")
    print(f"  results      {join_url(run_url, RESULTS)}  ({', '.join(p.rpartition('/')[2] for p in exported)})")
    endpoint = storage_options(args, root).get("endpoint_url")
    where = (f"--endpoint-url {shlex.quote(endpoint)} " if endpoint else "") + shlex.quote(root)
    print(f"next: expstore ls {where}   expstore logs {where}   expstore plot {where} -o loss.png   expstore ui {where}")
