"""A small Lightning run that tests start in child processes: train, crash at a step, or resume.

`python -m tests.workers.lightning_workers MODE ROOT OPTIONS_JSON OUT` with MODE one of `full`
(train to the end), `crash` (print ``step <n> done`` after global step `CRASH_AFTER` and block
until killed) or `resume` (train to the end from ``ckpt_path="last"``); the final weights go to
OUT with `torch.save`. Data order is seeded per epoch, so every run sees the same batches.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import fsspec
import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from expstore.integrations.lightning import ExpstoreCheckpointIO, ExpstoreLogger

EPOCHS = 3
SAMPLES, BATCH = 64, 8  # 8 steps an epoch
EVERY_N_STEPS = 4
CRASH_AFTER = 13  # mid-epoch 1: the last checkpoint before it is step 12


class EpochShuffle(Sampler[int]):
    """A permutation drawn from (seed, epoch): Lightning calls `set_epoch` before each epoch."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning can resume mid-epoch: its state is how many batches of the epoch
    it handed out, and after `load_state_dict` the next iteration skips that many."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed_out, self.skip = 0, 0

    def __iter__(self) -> Any:
        skip, self.skip = self.skip, 0
        self.handed_out = skip
        for index, batch in enumerate(super().__iter__()):
            if index >= skip:
                self.handed_out += 1
                yield batch

    def state_dict(self) -> dict[str, int]:
        return {"handed_out": self.handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skip = state["handed_out"] % len(self)  # a finished epoch: the next one starts from its first batch


class TinyRegression(pl.LightningModule):
    """Two linear layers, Adam and a step LR schedule: enough state to show a wrong resume."""

    def __init__(self, hidden: int = 16, lr: float = 0.01) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)}

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(SAMPLES, 8, generator=generator)
        y = x.sum(dim=1, keepdim=True) + 0.1 * torch.randn(SAMPLES, 1, generator=generator)
        return ResumableLoader(TensorDataset(x, y), batch_size=BATCH, sampler=EpochShuffle(SAMPLES), num_workers=0)


class CrashAfter(pl.Callback):
    """Prints a line once global step `step` is done (its checkpoint committed), then blocks."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.step:
            print(f"step {trainer.global_step} done", flush=True)
            while True:
                time.sleep(1)


def trainer_for(root: str, options: dict[str, Any], name: str, callbacks: list[pl.Callback]) -> pl.Trainer:
    """A CPU trainer that checkpoints every few steps to `root/<name>/checkpoints` through expstore."""
    checkpoints = pl.callbacks.ModelCheckpoint(
        dirpath=f"{root}/{name}/checkpoints", every_n_train_steps=EVERY_N_STEPS, save_top_k=2, monitor="train_loss",
        save_last=True,
    )
    return pl.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", devices=1, deterministic=True, logger=ExpstoreLogger(root, name, **options),
        plugins=[ExpstoreCheckpointIO(**options)], callbacks=[checkpoints, *callbacks],
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
    )


def run(mode: str, root: str, options: dict[str, Any], out: str) -> None:
    if root.startswith("s3://"):  # ModelCheckpoint and ckpt_path="last" look at S3 through fsspec's own config
        fsspec.config.conf["s3"] = options
    pl.seed_everything(0, verbose=False)
    model = TinyRegression()
    callbacks = [CrashAfter(CRASH_AFTER)] if mode == "crash" else []
    trainer = trainer_for(root, options, "run", callbacks)
    trainer.fit(model, ckpt_path="last" if mode == "resume" else None)
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, out)
    print(f"finished at step {trainer.global_step}", flush=True)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])
