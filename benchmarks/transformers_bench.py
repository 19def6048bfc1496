"""`ExpstoreCallback` checkpoint mirroring: time per mirrored `checkpoint-<step>/` folder, against
Trainer's own save of that folder and against a raw copy of the same files to the same place.

A GPT-2 built from a config (4 layers, 256 wide, 8,000 tokens: ~5.3 M parameters, a checkpoint of
~64 MiB with the AdamW state) trains `--saves` steps on CPU with ``save_steps=1`` and
``save_total_limit=2``. Two timing callbacks around `ExpstoreCallback` measure, per save:

- trainer save: from `on_step_end` to the first `on_save` (Trainer writing the folder, rotating);
- mirror: `ExpstoreCallback.on_save` (every file one atomic write, the index, the rotated folder deleted).

Baselines, on the last checkpoint folder: local, a copy of each file with a flush + fsync (the
durability the mirror gives); S3 (SeaweedFS started here on 127.0.0.1), s3fs `put_file` of each
file. "unchanged" is mirroring the same folder again (crc32c of every file, nothing sent).
Figures are medians (the first save is left out as warm-up).

    python benchmarks/transformers_bench.py               # local and SeaweedFS, 4 saves
    python benchmarks/transformers_bench.py --no-s3 --saves 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import transformers

from expstore.integrations.transformers import ExpstoreCallback

MiB = 2**20


class Clock(transformers.TrainerCallback):
    """Records the time of `on_step_end` and `on_save` at its place in the callback list."""

    def __init__(self) -> None:
        self.step_end: list[float] = []
        self.saved: list[float] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step_end.append(time.perf_counter())

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.saved.append(time.perf_counter())


class AfterClock(Clock):
    """The clock placed after `ExpstoreCallback` (its own class: Trainer warns about two of one class)."""


class Tokens(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.arange(16) * (i + 1) % 8000
        return {"input_ids": ids, "labels": ids}


def train(out: Path, callback: ExpstoreCallback, saves: int) -> tuple[list[float], list[float]]:
    """Train `saves` steps saving each; (trainer save seconds, mirror seconds) per save."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=4, n_embd=256, n_head=4, vocab_size=8000, n_positions=64))
    before, after = Clock(), AfterClock()
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=saves, per_device_train_batch_size=2, logging_steps=10_000, save_steps=1,
        save_total_limit=2, report_to=[], use_cpu=True, disable_tqdm=True,
    )
    transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[before, callback, after]).train()
    save = [s - e for e, s in zip(before.step_end, before.saved)]
    mirror = [a - b for b, a in zip(before.saved, after.saved)]
    return save[1:], mirror[1:]


def copy_fsync(src: Path, dst: Path) -> None:
    """The raw local copy: each file written, flushed and fsynced."""
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as f, open(target, "wb") as g:
            shutil.copyfileobj(f, g, 16 * MiB)
            g.flush()
            os.fsync(g.fileno())


def s3_put(src: Path, url: str, options: dict[str, Any]) -> None:
    """The raw S3 upload: s3fs `put_file` of each file."""
    import s3fs

    fs = s3fs.S3FileSystem(key=options["key"], secret=options["secret"], client_kwargs={
        **options.get("client_kwargs", {}), "endpoint_url": options["endpoint_url"]})
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{url.removeprefix('s3://')}/{path.relative_to(src).as_posix()}")


def measure(name: str, scratch: Path, mirror_url: str, options: dict[str, Any], saves: int) -> dict[str, Any]:
    callback = ExpstoreCallback(checkpoint_url=mirror_url, **options)
    save, mirror = train(scratch / f"out-{name}", callback, saves)
    last = max((scratch / f"out-{name}").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    size = sum(p.stat().st_size for p in last.rglob("*") if p.is_file())
    raw = []
    for i in range(3):
        t = time.perf_counter()
        if name == "local":
            copy_fsync(last, scratch / f"raw-{i}")
        else:
            s3_put(last, f"{mirror_url}-raw-{i}", options)
        raw.append(time.perf_counter() - t)
    t = time.perf_counter()
    info = callback.mirror.mirror(last, int(last.name.split("-")[1]))
    unchanged = time.perf_counter() - t
    assert info["uploaded"] == [], info
    return {"target": name, "MiB": size / MiB, "save": statistics.median(save), "mirror": statistics.median(mirror),
            "raw": statistics.median(raw), "unchanged": unchanged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--saves", type=int, default=4)
    parser.add_argument("--no-s3", action="store_true")
    opts = parser.parse_args()
    rows, server = [], None
    scratch = Path(tempfile.mkdtemp(prefix="expstore-hf-bench-"))
    try:
        rows.append(measure("local", scratch, str(scratch / "mirror"), {}, opts.saves))
        if not opts.no_s3:
            from tests import s3servers

            server = s3servers.start_seaweedfs()
            rows.append(measure("seaweedfs", scratch, "s3://expstore-bench/hf-mirror", server.storage_options, opts.saves))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print("| target | checkpoint MiB | trainer save s | mirror s | raw copy s | mirror / raw | mirror / trainer save | unchanged re-mirror s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['MiB']:.1f} | {r['save']:.3f} | {r['mirror']:.3f} | {r['raw']:.3f} | "
              f"{r['mirror'] / r['raw']:.2f} | {r['mirror'] / r['save']:.2f} | {r['unchanged']:.3f} |")


if __name__ == "__main__":
    main()
