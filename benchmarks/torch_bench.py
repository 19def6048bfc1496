"""PyTorch checkpoints: `CheckpointManager` against torch.save, safetensors and torch.distributed.checkpoint, from one run.

The state is a training loop's: a small transformer of about `--params-m` x 2**20 float32 parameters
(default 64, about 256 MiB), built here from torch.nn (an embedding tied to the output head, then
TransformerEncoderLayer blocks), and AdamW stepped once so exp_avg and exp_avg_sq exist:
`{"model": model.state_dict(), "optimizer": optimizer.state_dict()}`, about 768 MiB. Every file
written is fsynced on every side. Rows (expstore / alternative):

- save: `manager.save_checkpoint(state, i)` (keep_last_n=1; the retention delete of the previous
  checkpoint runs after the call returns and is waited for untimed) against `torch.save(state, f)`
  + flush + fsync;
- save of the model alone: `save_checkpoint(model.state_dict(), i)` against
  `safetensors.torch.save_file` + fsync of the same tensors. safetensors refuses tensors that share
  memory, so its input drops the second name of each shared storage (`head.weight`, tied to
  `embed.weight`); expstore stores the shared storage once and both names;
- save against `torch.distributed.checkpoint.save(state, storage_writer=FileSystemWriter(folder))`
  in this single process (no process group), overwriting one folder each round, then an fsync of
  every file in it and of the folder (FileSystemWriter fsyncs its files itself too);
- bf16 save: the model converted with `.to(torch.bfloat16)` (a deep copy), its state_dict saved
  both ways (expstore against torch.save + fsync), no target;
- load into a model and an optimizer: `load_checkpoint()` then `model.load_state_dict` and
  `optimizer.load_state_dict`, against `torch.load(f, weights_only=True)` then the same; both into
  a second model and a fresh AdamW, then one byte of every 4 KiB page of the optimizer's state is
  read (timed), so a lazily mapped tensor pays for its page faults (the model's are copied);
- async save: the time `save_checkpoint(..., blocking=False)` blocks the caller against a blocking
  save (the background write is waited for untimed between rounds);
- extra peak RSS of a blocking save, in a subprocess: `ru_maxrss` after the save minus `ru_maxrss`
  before it, over the state's size. The child builds the state first; building it (activations,
  gradients) peaks above the state it leaves, so the child resets its high-water mark to its
  current RSS (`/proc/self/clear_refs`) before the first reading;
- select: a state of 200 float32 tensors of equal size (the model's size in all);
  `load_checkpoint(select=["t042"])` against a full `load_checkpoint()`, both touched as above,
  at least 15 rounds;
- S3 save / load (SeaweedFS started here on 127.0.0.1, `--s3 seaweedfs`): the manager on
  `s3://bucket/ckpt` against boto3 `put_object` / `get_object(...)["Body"].read()` of the state's
  tensor bytes concatenated, on the same server; the manager gets botocore's default read timeout
  (60 s, as the boto3 client has) instead of expstore's 3 s, which a busy SeaweedFS can exceed
  while it stores a 64 MiB part;
- size on disk: the checkpoint folder (index included) against the torch.save file, for the state
  and for the bf16 model.

Every save round is preceded by an untimed `os.sync()`. Each pair runs interleaved (expstore,
alternative, alternative, expstore, ...) after one untimed warm-up round; loads find the page cache
warm.

Run from the repository root (the S3 rows need the dev extras, which ship SeaweedFS):

    python benchmarks/torch_bench.py                       # 64M parameters, 5 repeats, SeaweedFS
    python benchmarks/torch_bench.py --repeat 3 --s3 none --json torch.json
    python benchmarks/torch_bench.py --quick --s3 none     # a 4M-parameter model, 2 repeats

Reading the table: times in ms, median (best); ratio = expstore / alternative from the medians
(from the bests in parentheses); `ok?` judges the median ratio against the target; rows without a
target are for information. The memory row's ratio is the extra peak over the state's size.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import statistics
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from benchlib import MiB, Row, machine, print_report, render_columns, run, scratch_folder, time_pair
from torch import nn

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from expstore.backends.posix import fsync_path, fsync_tree  # noqa: E402
from expstore.checkpointing import CheckpointManager  # noqa: E402

EXPERIMENT = "bench"
BUCKET = "expstore-bench"
PAGE = 4096
N_LEAVES = 200
SELECTED = "t042"
SELECT_MIN_REPEAT = 15  # a sub-millisecond op: more rounds (cheap here) steady its median
QUICK_PARAMS_M = 4
QUICK_REPEAT = 2

TORCH_SAVE_TARGET = 0.8
SAFETENSORS_TARGET = 1.0
DCP_TARGET = 0.8
LOAD_TARGET = 0.5
ASYNC_TARGET = 0.15
MEMORY_TARGET = 0.10
SELECT_TARGET = 0.02
S3_TARGET = 1.1
S3_READ_TIMEOUT = 60  # botocore's default, which the raw boto3 client keeps; expstore's 3 s fails 64 MiB parts on a busy machine
PACKAGES = ("torch", "safetensors", "numpy", "boto3", "google-crc32c", "expstore")

StateDict = dict[str, Any]


# ---- model and state ----------------------------------------------------------------------


class TinyLM(nn.Module):
    """A token embedding tied to the output head, with TransformerEncoderLayer blocks between them."""

    def __init__(self, vocab: int, width: int, blocks: int) -> None:
        """`blocks` encoder layers of `width` (one attention head per 64), over a vocabulary of `vocab`."""
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, width // 64, 4 * width, dropout=0.0, batch_first=True)
            for _ in range(blocks)
        )
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary for each token (the blocks see the whole sequence, no mask)."""
        hidden = self.embed(tokens)
        for block in self.blocks:
            hidden = block(hidden)
        return self.head(hidden)


def model_shape(params: int) -> tuple[int, int, int]:
    """(vocab, width, blocks) of a TinyLM of about `params` parameters: the vocabulary fills what the blocks leave."""
    width, blocks = (768, 6) if params >= 32 * 2**20 else (256, 2)
    per_block = 12 * width * width + 13 * width  # attention in/out projections, 4x feed-forward, 2 LayerNorms
    return max(256, (params - blocks * per_block) // width), width, blocks


def make_training_state(params_m: float, seed: int = 0) -> tuple[TinyLM, torch.optim.AdamW]:
    """A TinyLM of about `params_m` x 2**20 parameters and its AdamW after one step (gradients freed)."""
    torch.manual_seed(seed)
    vocab, width, blocks = model_shape(int(params_m * 2**20))
    model = TinyLM(vocab, width, blocks)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(vocab, (2, 17))
    logits = model(tokens[:, :-1])
    nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> StateDict:
    """What a training loop checkpoints: the model's and the optimizer's state_dict."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def flat_tensors(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested dict / list / tuple, by its path."""
    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return {prefix: tree} if isinstance(tree, torch.Tensor) else {}
    return {path: t for key, value in items for path, t in flat_tensors(value, f"{prefix}/{key}").items()}


def unique_storages(tree: Any) -> list[torch.Tensor]:
    """One tensor per storage of `tree` (a tied weight once), in path order."""
    seen: dict[int, torch.Tensor] = {}
    for t in flat_tensors(tree).values():
        seen.setdefault(t.untyped_storage().data_ptr(), t)
    return list(seen.values())


def state_bytes(tree: Any) -> int:
    """Bytes of the storages of `tree`'s tensors, each storage counted once."""
    return sum(t.untyped_storage().nbytes() for t in unique_storages(tree))


def tensor_bytes(tree: Any) -> bytes:
    """The bytes of every storage of `tree` concatenated (what a raw upload of the state sends)."""
    return b"".join(t.contiguous().reshape(-1).view(torch.uint8).numpy() for t in unique_storages(tree))


def touch(tree: Any) -> int:
    """Read one byte of every 4 KiB page of every tensor in `tree` (faults in a lazily mapped tensor)."""
    return sum(int(t.reshape(-1).view(torch.uint8)[::PAGE].sum()) for t in flat_tensors(tree).values() if t.numel())


def check_same(what: str, got: Any, want: Any) -> None:
    """Refuse a result whose tensors differ from `want`'s (paths or values): a wrong load must not be timed."""
    got_flat, want_flat = flat_tensors(got), flat_tensors(want)
    if set(got_flat) != set(want_flat) or any(not torch.equal(got_flat[p], t) for p, t in want_flat.items()):
        raise RuntimeError(f"{what}: loaded a different state")


def without_shared(state_dict: StateDict) -> StateDict:
    """The state_dict without the second and later names of a storage (what safetensors accepts)."""
    first: dict[int, str] = {}
    for name, t in state_dict.items():
        first.setdefault(t.untyped_storage().data_ptr(), name)
    return {name: t for name, t in state_dict.items() if first[t.untyped_storage().data_ptr()] == name}


def make_leaves(total_bytes: int) -> dict[str, torch.Tensor]:
    """N_LEAVES random float32 tensors of equal size, `total_bytes` in all, named t000, t001, ..."""
    generator = torch.Generator().manual_seed(1)
    n = max(1, total_bytes // (N_LEAVES * 4))
    return {f"t{i:03d}": torch.rand(n, generator=generator) for i in range(N_LEAVES)}


def folder_bytes(folder: Path) -> int:
    """Size of the files below `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class Counter:
    """The iterations to save at: 1, 2, 3, ... (each save a new checkpoint)."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        """The next iteration."""
        self.n += 1
        return self.n


# ---- the alternatives ---------------------------------------------------------------------


def torch_save(obj: Any, path: Path) -> None:
    """torch.save into an open file, then flush + fsync."""
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def dcp_save(state: StateDict, folder: Path) -> None:
    """torch.distributed.checkpoint.save in this one process (no process group), then fsync of the folder's files."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        warnings.filterwarnings("ignore", message="Detected an existing checkpoint")
        dcp.save(state, storage_writer=dcp.FileSystemWriter(folder))
    fsync_tree(folder)


def safetensors_save(state_dict: StateDict, path: Path) -> None:
    """safetensors.torch.save_file, then fsync of the file."""
    import safetensors.torch

    safetensors.torch.save_file(state_dict, path)
    fsync_path(path)


# ---- rows ---------------------------------------------------------------------------------


@dataclass
class Measure:
    """A quantity (bytes) of expstore against the alternative's (not a timing): memory or size on disk."""

    operation: str
    baseline: str
    target: float | None
    expstore_bytes: int
    baseline_bytes: int
    what: str

    @property
    def ratio(self) -> float:
        """expstore's bytes over the alternative's."""
        return self.expstore_bytes / self.baseline_bytes

    @property
    def ok(self) -> bool | None:
        """Whether the ratio meets the target (None without one)."""
        return None if self.target is None else self.ratio <= self.target

    def as_json(self) -> dict[str, Any]:
        """The row for --json."""
        return {"operation": self.operation, "baseline": self.baseline, "expstore_bytes": self.expstore_bytes,
                "baseline_bytes": self.baseline_bytes, "ratio": self.ratio, "target": self.target, "ok": self.ok}


def ms(seconds: list[float]) -> str:
    """Median (best) in ms."""
    return f"{statistics.median(seconds) * 1e3:.1f} ({min(seconds) * 1e3:.1f})"


def cells(row: Row | Measure) -> list[str]:
    """One table line; targets print as given (0.15, 0.02), not rounded to one decimal."""
    if isinstance(row, Measure):
        body = [row.operation, f"{row.expstore_bytes / MiB:.1f} MiB {row.what}", row.baseline,
                f"{row.baseline_bytes / MiB:.1f} MiB", f"{row.ratio:.3f}"]
    else:
        body = [row.operation, ms(row.expstore_s), row.baseline, ms(row.baseline_s),
                f"{row.ratio:.3f} ({row.best_ratio:.3f})"]
    return [*body, "-" if row.target is None else f"<= {row.target:g}", "-" if row.ok is None else "ok" if row.ok else "NO"]


def table(rows: list[Row | Measure]) -> str:
    """The report's table: times (or sizes) of both sides, their ratio and the verdict."""
    header = ["figure", "expstore ms (best)", "alternative", "alt ms (best)", "ratio (best)", "target", "ok?"]
    return render_columns(header, [cells(row) for row in rows])


# ---- local --------------------------------------------------------------------------------


def settle(manager: CheckpointManager) -> Callable[[], None]:
    """Before a save round: the manager's background work (retention, async writes) waits, then os.sync(), untimed."""

    def before() -> None:
        manager.wait_until_finished()
        os.sync()

    return before


def save_rows(
    folder: Path, model: TinyLM, state: StateDict, repeat: int
) -> tuple[list[Row | Measure], list[str]]:
    """Saves of the state against torch.save, DCP and (the model alone) safetensors, then bf16, async and sizes."""
    size, model_size = state_bytes(state), state_bytes(state["model"])
    counter = Counter()
    rows: list[Row | Measure] = []
    bf16 = copy.deepcopy(model).to(torch.bfloat16).state_dict()
    with (
        CheckpointManager(str(folder / "ckpt"), EXPERIMENT, keep_last_n=1) as manager,
        CheckpointManager(str(folder / "model"), EXPERIMENT, keep_last_n=1) as model_manager,
        CheckpointManager(str(folder / "bf16"), EXPERIMENT, keep_last_n=1) as bf16_manager,
    ):

        def saver(side: CheckpointManager, what: StateDict, blocking: bool = True) -> Callable[[], str]:
            """A new checkpoint of `what` by `side` per call."""
            return lambda: side.save_checkpoint(what, counter.next(), blocking=blocking)

        untied = without_shared(state["model"])
        pairs: list[tuple[str, str, float | None, int, CheckpointManager, Callable[[], str], Callable[[], None]]] = [
            ("save", "torch.save+fsync", TORCH_SAVE_TARGET, size, manager, saver(manager, state),
             lambda: torch_save(state, folder / "state.pt")),
            ("save model state_dict", "safetensors save_file+fsync", SAFETENSORS_TARGET, model_size, model_manager,
             saver(model_manager, state["model"]), lambda: safetensors_save(untied, folder / "model.safetensors")),
            ("save", "dcp.save FileSystemWriter+fsync", DCP_TARGET, size, manager, saver(manager, state),
             lambda: dcp_save(state, folder / "dcp")),
            ("save bf16 model state_dict", "torch.save+fsync", None, state_bytes(bf16), bf16_manager,
             saver(bf16_manager, bf16), lambda: torch_save(bf16, folder / "bf16.pt")),
        ]
        for operation, baseline, target, nbytes, side, expstore_save, alternative in pairs:
            times = time_pair(expstore_save, alternative, repeat, settle(side))
            rows.append(Row(operation, baseline, target, nbytes, *times))
        blocked = time_pair(saver(manager, state, blocking=False), saver(manager, state), repeat, settle(manager))
        rows.append(Row("async save (caller blocked)", "blocking save", ASYNC_TARGET, size, *blocked))
        for side in (manager, bf16_manager):
            side.wait_until_finished()
        rows.append(Measure("size on disk", "torch.save file", None, folder_bytes(folder / "ckpt"),
                            (folder / "state.pt").stat().st_size, "on disk"))
        rows.append(Measure("size on disk, bf16 model", "torch.save file", None, folder_bytes(folder / "bf16"),
                            (folder / "bf16.pt").stat().st_size, "on disk"))
    notes = [(
        f"dcp: FileSystemWriter wrote {folder_bytes(folder / 'dcp') / MiB:.1f} MiB for a state of {size / MiB:.1f} MiB"
        " (it writes a tied weight once per name); safetensors: the model without head.weight (tied to"
        f" embed.weight), {state_bytes(untied) / MiB:.1f} MiB"
    )]
    return rows, notes


def load_rows(folder: Path, state: StateDict, params_m: float, repeat: int) -> list[Row]:
    """Load into a second model and a fresh AdamW: expstore against torch.load(weights_only=True)."""
    torch.manual_seed(1)
    target_model = TinyLM(*model_shape(int(params_m * 2**20)))
    target_optimizer = torch.optim.AdamW(target_model.parameters(), lr=1e-3)
    path = folder / "state.pt"
    torch_save(state, path)

    def into_training(got: StateDict) -> None:
        """Load `got` into the model and the optimizer, then touch the optimizer's state (the model's is copied)."""
        target_model.load_state_dict(got["model"])
        target_optimizer.load_state_dict(got["optimizer"])
        touch(target_optimizer.state_dict()["state"])

    with CheckpointManager(str(folder / "ckpt"), EXPERIMENT, keep_last_n=1) as manager:
        manager.save_checkpoint(state, 1)
        times = time_pair(
            lambda: into_training(manager.load_checkpoint()["state"]),
            lambda: into_training(torch.load(path, weights_only=True)),
            repeat,
        )
        into_training(manager.load_checkpoint()["state"])
        check_same("local load", training_state(target_model, target_optimizer), state)
    return [Row("load into model+optimizer", "torch.load(weights_only)+same", LOAD_TARGET, state_bytes(state), *times)]


def select_rows(folder: Path, total_bytes: int, repeat: int) -> list[Row]:
    """Loading one tensor of N_LEAVES by `select=` against loading them all, both touched."""
    leaves = make_leaves(total_bytes)
    with CheckpointManager(str(folder / "leaves"), EXPERIMENT, keep_last_n=1) as manager:
        manager.save_checkpoint(leaves, 1)

        def load(select: list[str] | None) -> Any:
            """The state (or the selected part) loaded and touched."""
            got = manager.load_checkpoint(select=select)["state"]
            touch(got)
            return got

        times = time_pair(lambda: load([SELECTED]), lambda: load(None), max(repeat, SELECT_MIN_REPEAT))
        got = manager.load_checkpoint(select=[SELECTED])["state"]
        if list(got) != [SELECTED] or not torch.equal(got[SELECTED], leaves[SELECTED]):
            raise RuntimeError(f"select: got {list(got)} instead of [{SELECTED!r}] or different data")
    return [Row(f"select 1 of {N_LEAVES} tensors", "full load", SELECT_TARGET, state_bytes(leaves), *times)]


# ---- peak memory --------------------------------------------------------------------------

PEAK_CHILD = textwrap.dedent(
    """
    import gc, json, os, resource, sys
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[2])
    from torch_bench import make_training_state, state_bytes, torch_save, training_state
    from expstore.checkpointing import CheckpointManager
    folder, params_m, mode = sys.argv[3], float(sys.argv[4]), sys.argv[5]
    state = training_state(*make_training_state(params_m))
    manager = CheckpointManager(os.path.join(folder, "peak-" + mode), "bench", keep_last_n=1)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark drops to the current RSS: building the state peaked higher
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "save":
        manager.save_checkpoint(state, 1)
    elif mode == "async":
        manager.save_checkpoint(state, 1, blocking=False)
        manager.wait_until_finished()
    elif mode == "torch.save":
        torch_save(state, os.path.join(folder, "peak.pt"))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    manager.close()
    hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
    print(json.dumps({"before_kib": before, "after_kib": after, "vmhwm_kib": hwm[0] if hwm else None,
                      "state_bytes": state_bytes(state)}))
    """
)


def peak_extra(folder: Path, params_m: float, mode: str) -> tuple[int, int]:
    """Extra peak RSS in bytes of one `mode` save in a fresh interpreter (ru_maxrss is in KiB on Linux), and the
    state's size.

    Linux carries ru_maxrss over fork + exec, so the child starts with this process's peak: run this
    before this process allocates anything big (main() does); a reading whose baseline exceeds the
    child's own high-water mark was inherited and is refused.
    """
    out = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, str(REPO_ROOT), str(Path(__file__).resolve().parent), str(folder),
         str(params_m), mode],
        check=False, capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"peak memory subprocess ({mode}) failed:\n{out.stderr}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if got["vmhwm_kib"] is not None and got["before_kib"] > got["vmhwm_kib"]:
        raise RuntimeError(f"peak memory ({mode}): ru_maxrss before the save ({got['before_kib']} KiB) exceeds the"
                           f" child's own peak ({got['vmhwm_kib']} KiB): inherited from the parent")
    return max(0, got["after_kib"] - got["before_kib"]) * 1024, got["state_bytes"]


def memory_rows(folder: Path, params_m: float) -> tuple[list[Measure], list[str]]:
    """The extra peak RSS of a blocking save (the row), of an async save and of torch.save (a note)."""
    readings = {mode: peak_extra(folder, params_m, mode) for mode in ("save", "async", "torch.save")}
    extra = {mode: reading[0] for mode, reading in readings.items()}
    size = readings["save"][1]
    rows = [Measure("save extra peak RSS", "state size", MEMORY_TARGET, extra["save"], size, "extra peak")]
    note = (
        "memory: each in a fresh subprocess, ru_maxrss after the call minus before it (state built first, the"
        " high-water mark then reset to the current RSS); for information: async save (host copy + background"
        f" write) {extra['async'] / MiB:.1f} MiB ({extra['async'] / size:.0%} of the state), torch.save + fsync"
        f" {extra['torch.save'] / MiB:.1f} MiB ({extra['torch.save'] / size:.0%})"
    )
    return rows, [note]


# ---- S3 -----------------------------------------------------------------------------------


def s3_rows(state: StateDict, repeat: int) -> list[Row]:
    """The manager on SeaweedFS against boto3 put_object / get_object of the state's tensor bytes."""
    from tests import s3servers

    data = tensor_bytes(state)
    key = "boto3/raw.bin"
    counter = Counter()
    server = s3servers.start_seaweedfs()
    try:
        client = server.boto3_client()
        client.create_bucket(Bucket=BUCKET)
        options = {**server.storage_options, "config_kwargs": {"read_timeout": S3_READ_TIMEOUT}}
        with CheckpointManager(f"s3://{BUCKET}/ckpt", EXPERIMENT, keep_last_n=1, **options) as manager:

            def load() -> Any:
                """The latest checkpoint loaded and touched."""
                got = manager.load_checkpoint()["state"]
                touch(got)
                return got

            def get() -> bytes:
                """The raw object read, then one byte of every 4 KiB page touched."""
                got = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
                sum(got[::PAGE])
                return got

            saves = time_pair(
                lambda: manager.save_checkpoint(state, counter.next()),
                lambda: client.put_object(Bucket=BUCKET, Key=key, Body=data),
                repeat,
                settle(manager),
            )
            loads = time_pair(load, get, repeat)
            check_same("s3 load", manager.load_checkpoint()["state"], state)
    finally:
        server.stop()
    return [
        Row("s3 save (seaweedfs)", "boto3 put_object", S3_TARGET, len(data), *saves),
        Row("s3 load latest (seaweedfs)", "boto3 get_object+read", S3_TARGET, len(data), *loads),
    ]


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; --quick overrides --params-m and --repeat."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params-m", type=float, default=64,
                        help="model parameters in units of 2**20 (default 64: 256 MiB of float32)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per figure (default 5)")
    parser.add_argument("--s3", choices=["seaweedfs", "none"], default="seaweedfs",
                        help="start SeaweedFS on 127.0.0.1 and measure S3 (default seaweedfs)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: a {QUICK_PARAMS_M}M-parameter model, {QUICK_REPEAT} repeats")
    parser.add_argument("--dir", type=Path,
                        help="folder on the disk to measure (default ./.bench-tmp); the files made in it are removed after")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows and run details here")
    args = parser.parse_args(argv)
    if args.quick:
        args.params_m, args.repeat = QUICK_PARAMS_M, QUICK_REPEAT
    if args.params_m <= 0 or args.repeat < 1:
        parser.error("--params-m must be > 0 and --repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure every row, then print the report (and write --json)."""
    args = parse_args(argv)
    started = time.perf_counter()
    vocab, width, blocks = model_shape(int(args.params_m * 2**20))
    with scratch_folder(args.dir, "torch-bench-mem-") as folder:
        # first, while this process is small: Linux hands its ru_maxrss on to the children
        mem_rows, notes = memory_rows(folder, args.params_m)
    model, optimizer = make_training_state(args.params_m)
    state = training_state(model, optimizer)
    size, n_params = state_bytes(state), sum(p.numel() for p in model.parameters())
    rows: list[Row | Measure] = []
    notes.insert(0, (
        f"state: TinyLM of {n_params / 2**20:.1f}M float32 parameters (vocab {vocab}, width {width}, {blocks} blocks,"
        f" embedding tied to the head) + AdamW after one step: {len(flat_tensors(state))} tensors, {size / MiB:.1f} MiB;"
        f" median of {args.repeat} repeats ({max(args.repeat, SELECT_MIN_REPEAT)} for select), best in parentheses"
    ))
    notes.append("saves: untimed os.sync() before every timed save; the manager (keep_last_n=1) saves a new iteration"
                 " each round and its retention delete runs behind the caller, waited for untimed; torch.save and"
                 " safetensors rewrite one file, dcp.save overwrites one folder")
    notes.append("loads: page cache warm; torch.load reads the file into memory; expstore's local load maps it"
                 " (copy-on-write) and checks every tensor's crc32c")
    with scratch_folder(args.dir, "torch-bench-local-") as folder:
        local, local_notes = save_rows(folder, model, state, args.repeat)
    rows += local
    notes += local_notes
    with scratch_folder(args.dir, "torch-bench-load-") as folder:
        rows += load_rows(folder, state, args.params_m, args.repeat)
    rows += mem_rows
    with scratch_folder(args.dir, "torch-bench-select-") as folder:
        rows += select_rows(folder, state_bytes(state["model"]), args.repeat)
    if args.s3 != "none":
        rows += s3_rows(state, args.repeat)
    command = f"{shlex.join(sys.orig_argv)} ({time.perf_counter() - started:.0f} s)"
    print_report(rows, notes, machine(PACKAGES), command, args.json, render=table, params_m=args.params_m,
                 repeat=args.repeat)
    return 0


if __name__ == "__main__":
    run(main, "interrupted: local files removed, S3 server stopped")
