"""A small PyTorch training run that checkpoints through `CheckpointManager`, run as a child process.

`python -m tests.workers.torch_training full URL OPTIONS_JSON OUT_DIR [--async]` trains `STEPS` steps,
saves the state at step `RESUME_AT` as the checkpoint of experiment `EXPERIMENT`, and writes that state
(`at_k.pt`) and the final one (`final.pt`) into OUT_DIR with `torch.save`.
`python -m tests.workers.torch_training resume URL OPTIONS_JSON OUT_DIR [--resume-from-checkpoint]`
builds everything afresh, waits for a line `go` on stdin (so its start-up can overlap the full run),
restores the newest checkpoint, trains the remaining steps and writes `final.pt`. Every part of the
state is used by the steps after it is restored.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from expstore.checkpointing import CheckpointManager, resume_from_checkpoint

STEPS = 12
RESUME_AT = 5
EXPERIMENT = "run"
VOCAB, DIM, HIDDEN, BATCH = 32, 8, 16, 24


class TinyLM(nn.Module):
    """An embedding tied to the output head, with Linear, BatchNorm1d and Dropout layers between."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.up = nn.Linear(DIM, HIDDEN)
        self.norm = nn.BatchNorm1d(HIDDEN)
        self.drop = nn.Dropout(0.25)
        self.down = nn.Linear(HIDDEN, DIM)
        self.gate = nn.Linear(DIM, DIM)
        self.out_bias = nn.Parameter(torch.zeros(VOCAB))
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary for each token."""
        x = self.emb(tokens)
        h = self.drop(torch.relu(self.norm(self.up(x))))
        x = x + self.down(h) * torch.sigmoid(self.gate(x))
        return self.head(x) + self.out_bias


@dataclass
class Trainer:
    """Everything one training run holds: model, optimizers, schedulers, scaler, batch generator, step."""

    model: TinyLM
    adamw: torch.optim.AdamW
    sgd: torch.optim.SGD
    adam: torch.optim.Adam
    schedule: torch.optim.lr_scheduler.SequentialLR
    sgd_schedule: torch.optim.lr_scheduler.StepLR
    scaler: torch.amp.GradScaler
    batches: np.random.Generator
    step: int = 0

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"adamw": self.adamw, "sgd": self.sgd, "adam": self.adam}


def build() -> Trainer:
    """A fresh run from fixed seeds: the same objects in every process before any restore."""
    torch.manual_seed(0)
    np.random.seed(1)
    random.seed(2)
    model = TinyLM()
    decayed = [model.emb.weight, model.up.weight, model.down.weight]
    plain = [model.up.bias, model.down.bias, model.norm.weight, model.norm.bias]
    adamw = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.01}, {"params": plain, "weight_decay": 0.0}], lr=1e-2)
    sgd = torch.optim.SGD(model.gate.parameters(), lr=0.05, momentum=0.9)
    adam = torch.optim.Adam([model.out_bias], lr=1e-2)
    warmup = torch.optim.lr_scheduler.LambdaLR(adamw, lambda s: (s + 1) / 3)
    cycle = torch.optim.lr_scheduler.OneCycleLR(adamw, max_lr=[0.02, 0.01], total_steps=STEPS)
    schedule = torch.optim.lr_scheduler.SequentialLR(adamw, [warmup, cycle], milestones=[3])
    sgd_schedule = torch.optim.lr_scheduler.StepLR(sgd, step_size=4, gamma=0.5)
    # a scale that is no power of two, growing every other step: unscaling rounds, so the scale shows in the bits
    scaler = torch.amp.GradScaler("cpu", init_scale=3.0, growth_factor=1.5, growth_interval=2)
    return Trainer(model, adamw, sgd, adam, schedule, sgd_schedule, scaler, np.random.default_rng(3))


def train(t: Trainer, until: int) -> None:
    """Run steps until `t.step == until`; each draws from every RNG the state carries."""
    t.model.train()
    while t.step < until:
        tokens = torch.from_numpy(t.batches.integers(0, VOCAB, size=BATCH))
        targets = (tokens * 3 + 1) % VOCAB
        smoothing = min(0.5, 0.1 * abs(float(np.random.standard_normal())))
        weight = 0.5 + random.random()
        for opt in t.optimizers.values():
            opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(t.model(tokens), targets, label_smoothing=smoothing) * weight  # dropout: torch RNG
        t.scaler.scale(loss).backward()
        for opt in t.optimizers.values():
            t.scaler.step(opt)
        t.scaler.update()
        t.schedule.step()
        t.sgd_schedule.step()
        t.step += 1


def capture(t: Trainer) -> dict[str, Any]:
    """The checkpoint state of the run: state_dicts and RNG states only, no live objects."""
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "batches": t.batches.bit_generator.state,
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "step": t.step,
        "model": t.model.state_dict(),
        "optimizers": {name: opt.state_dict() for name, opt in t.optimizers.items()},
        "schedulers": {"adamw": t.schedule.state_dict(), "sgd": t.sgd_schedule.state_dict()},
        "scaler": t.scaler.state_dict(),
        "rng": rng,
    }


def restore(t: Trainer, state: dict[str, Any]) -> None:
    """Load a state made by `capture` into freshly built objects."""
    t.step = state["step"]
    t.model.load_state_dict(state["model"])
    for name, opt in t.optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    t.schedule.load_state_dict(state["schedulers"]["adamw"])
    t.sgd_schedule.load_state_dict(state["schedulers"]["sgd"])
    t.scaler.load_state_dict(state["scaler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    t.batches.bit_generator.state = rng["batches"]
    random.setstate(rng["python"])
    if "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])


def shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when two tensors are views of one storage (as tied weights are)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def run_full(url: str, options: dict[str, Any], blocking: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train all steps, checkpointing at `RESUME_AT`; return (the state at `RESUME_AT`, the final state).

    The state at `RESUME_AT` is a copy taken at the save; training goes on in place after it.
    """
    t = build()
    with CheckpointManager(url, EXPERIMENT, keep_last_n=None, **options) as manager:
        train(t, RESUME_AT)
        manager.save_checkpoint(capture(t), RESUME_AT, blocking=blocking)
        at_k = copy.deepcopy(capture(t))
        train(t, STEPS)
    return at_k, capture(t)


def run_resumed(t: Trainer, url: str, options: dict[str, Any], via_resume_from_checkpoint: bool = False) -> dict[str, Any]:
    """Restore the newest checkpoint into the freshly built `t`, check the tie survived, train to the end;
    return the final state."""
    if via_resume_from_checkpoint:
        loaded = resume_from_checkpoint(url, map_location="cpu", **options)
    else:
        with CheckpointManager(url, EXPERIMENT, keep_last_n=None, **options) as manager:
            loaded = manager.load_checkpoint()
    if loaded["iteration"] != RESUME_AT:
        raise AssertionError(f"resumed from iteration {loaded['iteration']}, expected {RESUME_AT}")
    state = loaded["state"]
    if not shares_storage(state["model"]["emb.weight"], state["model"]["head.weight"]):
        raise AssertionError("the loaded emb.weight and head.weight do not share storage")
    restore(t, state)
    if t.model.head.weight.data_ptr() != t.model.emb.weight.data_ptr():
        raise AssertionError("head.weight is no longer tied to emb.weight after load_state_dict")
    train(t, STEPS)
    return capture(t)


def main(argv: list[str] | None = None) -> None:
    """Command line: `full` or `resume` mode, writing the states as `.pt` files into OUT_DIR."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["full", "resume"])
    parser.add_argument("url")
    parser.add_argument("options", type=json.loads)
    parser.add_argument("out", type=Path)
    parser.add_argument("--async", dest="blocking", action="store_false")
    parser.add_argument("--resume-from-checkpoint", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mode == "full":
        at_k, final = run_full(args.url, args.options, blocking=args.blocking)
        torch.save(at_k, args.out / "at_k.pt")
    else:
        t = build()  # the slow part of start-up (torch imports its compiler for the optimizers)
        if sys.stdin.readline() != "go\n":
            raise SystemExit("resume: stdin closed before go")
        final = run_resumed(t, args.url, args.options, via_resume_from_checkpoint=args.resume_from_checkpoint)
    torch.save(final, args.out / "final.pt")


if __name__ == "__main__":
    main()
