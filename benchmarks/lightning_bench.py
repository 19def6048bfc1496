"""Lightning checkpoint saves through `ExpstoreCheckpointIO` against Lightning's own `TorchCheckpointIO`.

What it measures, for a LightningModule of linear layers whose parameters plus Adam's two moments
make `--size-mib` MiB (one training step taken first, so the optimizer state exists):

- save: `trainer.save_checkpoint(path)`, the call `ModelCheckpoint` makes (the trainer builds
  Lightning's checkpoint dict, then the plugin writes it), with the trainer's `checkpoint_io`
  switched between the two plugins; a new file name each round, the previous file removed untimed
  (as `save_top_k` does). expstore: one atomic write (temp file, fsync, rename, folder fsync),
  checksums, no pickle. Lightning: `torch.save` into a BytesIO, then fsspec's transaction
  (temp file + rename, no fsync);
- load: each plugin's `load_checkpoint(path)` of its own file, every tensor then touched (one
  element per 4 KiB page) so a memory-mapped result pays for its page faults; for information;
- async: the time `AsyncCheckpointIO(ExpstoreCheckpointIO()).save_checkpoint` blocks the trainer
  (it clones every tensor, then a thread writes) against a blocking `ExpstoreCheckpointIO` save of
  the same dict; the background write is waited for untimed (`teardown`); for information.

Every round is preceded by an untimed `os.sync()`. Each pair runs interleaved after one untimed
warm-up round; the table shows medians (best in parentheses).

    python benchmarks/lightning_bench.py            # 256 MiB, 5 repeats (run when `uptime` load < 3)
    python benchmarks/lightning_bench.py --quick    # 48 MiB, 3 repeats
"""

from __future__ import annotations

import itertools
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import benchlib
from benchlib import MiB, Row

TARGET_SAVE = 0.8


def build_trainer(size_mib: int) -> tuple[Any, Any]:
    """A trainer that has taken one step on a model of `size_mib` MiB with Adam's state, and the model."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    width = 2048
    layers = max(1, round(size_mib * MiB / 3 / 4 / (width * width + width)))

    class Wide(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self.net(batch[0]).square().mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=1e-4)

    model = Wide()
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(1, width)), batch_size=1))
    return trainer, model


class Recorder:
    """A CheckpointIO stand-in that keeps the dict the trainer hands it (the dict ModelCheckpoint saves)."""

    checkpoint: dict[str, Any]

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        self.checkpoint = checkpoint


def state_bytes(model: Any, trainer: Any) -> int:
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    moments = sum(t.numel() * t.element_size() for s in trainer.optimizers[0].state.values()
                  for t in s.values() if t.dim() > 0)
    return params + moments


def touch(tree: Any) -> float:
    """Read one element per 4 KiB page of every tensor in `tree`, so lazily mapped memory is paid for."""
    import torch

    if isinstance(tree, torch.Tensor):
        flat = tree.reshape(-1)
        return float(flat[:: max(1, 4096 // tree.element_size())].sum()) if flat.numel() else 0.0
    if isinstance(tree, dict):
        return sum(touch(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(touch(v) for v in tree)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.bench_parser(__doc__.splitlines()[0], "model + Adam state in MiB (default 256)")
    parser.add_argument("--quick", action="store_true", help="48 MiB and 3 repeats")
    args = benchlib.parse_bench_args(parser, argv)
    if args.quick:
        args.size_mib, args.repeat = 48, 3
    warnings.filterwarnings("ignore")
    from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

    from expstore.integrations.lightning import ExpstoreCheckpointIO

    trainer, model = build_trainer(args.size_mib)
    size = state_bytes(model, trainer)
    expstore_io, torch_io = ExpstoreCheckpointIO(), TorchCheckpointIO()
    rows: list[Row] = []
    with benchlib.scratch_folder(args.dir, "lightning-bench-") as folder:
        counter = itertools.count()
        last: dict[str, Path] = {}
        stale: list[tuple[Any, Path]] = []

        def saver(name: str, plugin: Any) -> Any:
            def save() -> None:
                trainer.strategy.checkpoint_io = plugin
                path = folder / f"{name}-{next(counter)}.ckpt"
                trainer.save_checkpoint(path)
                if name in last:
                    stale.append((plugin, last[name]))
                last[name] = path
            return save

        def between_saves() -> None:  # what save_top_k removes, removed untimed; then the disk settles
            while stale:
                plugin, path = stale.pop()
                plugin.remove_checkpoint(path)
            os.sync()

        exp_s, torch_s = benchlib.time_pair(saver("expstore", expstore_io), saver("torch", torch_io), args.repeat,
                                            before_each=between_saves)
        rows.append(Row("save (trainer.save_checkpoint)", "TorchCheckpointIO", TARGET_SAVE, size, exp_s, torch_s))

        exp_l, torch_l = benchlib.time_pair(
            lambda: touch(expstore_io.load_checkpoint(last["expstore"])),
            lambda: touch(torch_io.load_checkpoint(last["torch"], weights_only=False)),
            args.repeat,
        )
        rows.append(Row("load + touch", "TorchCheckpointIO", None, size, exp_l, torch_l))

        recorder = Recorder()
        trainer.strategy.checkpoint_io = recorder
        trainer.save_checkpoint(folder / "unused.ckpt")
        checkpoint = recorder.checkpoint
        async_io = AsyncCheckpointIO(ExpstoreCheckpointIO())
        path = str(folder / "async.ckpt")

        def async_save() -> None:
            async_io.save_checkpoint(checkpoint, path)

        def blocking_save() -> None:
            expstore_io.save_checkpoint(checkpoint, path)

        def settle() -> None:
            async_io.teardown()
            os.sync()

        async_s, block_s = benchlib.time_pair(async_save, blocking_save, args.repeat, before_each=settle)
        settle()
        rows.append(Row("AsyncCheckpointIO(expstore) blocks", "blocking ExpstoreCheckpointIO", None, size, async_s, block_s))
    notes = [
        f"state: {size / MiB:.0f} MiB of float32 (parameters + Adam exp_avg + exp_avg_sq), {args.repeat} rounds",
        "save: expstore fsyncs the file and its folder; Lightning's TorchCheckpointIO renames a temp file without fsync",
        "load: expstore maps the file copy-on-write; both sides then touch every page",
        "async row: its ratio is the time the trainer waits with AsyncCheckpointIO over a blocking save",
    ]
    command = " ".join(shlex.quote(a) for a in [sys.executable, "benchmarks/lightning_bench.py", *(argv or sys.argv[1:])])
    benchlib.print_report(rows, notes, benchlib.machine(["torch", "lightning", "numpy"]), command, args.json)
    return 0 if all(row.ok is not False for row in rows) else 1


if __name__ == "__main__":
    benchlib.run(main, "lightning_bench: interrupted")
