"""A PyTorch run resumed in a new process from a checkpoint ends bit for bit where the uninterrupted run ends.

The training script is tests/workers/torch_training.py: a model with an embedding tied to its head,
BatchNorm1d and Dropout; AdamW, SGD with momentum and Adam; SequentialLR over LambdaLR and OneCycleLR,
and StepLR; a GradScaler; the torch, numpy (global and a Generator) and Python RNGs. One child runs
all steps and saves the state at step `RESUME_AT` through `CheckpointManager`; a second child builds
everything afresh, restores that checkpoint and finishes. Both write their final state with
`torch.save`, so the comparison does not go through the code under test.
"""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expstore.checkpointing import CheckpointManager

from ..workers import REPO_ROOT

torch = pytest.importorskip("torch")

from ..workers.torch_training import (  # after the importorskip: the script imports torch
    EXPERIMENT,
    RESUME_AT,
    STEPS,
    Trainer,
    build,
    capture,
    restore,
    run_full,
    run_resumed,
    shares_storage,
    train,
)


def assert_bit_equal(got: Any, want: Any, where: str = "state") -> None:
    """Fail naming the first place where `got` differs from `want`: types, keys (and their types), dtypes, bits."""
    if isinstance(want, Mapping):
        assert isinstance(got, Mapping), f"{where}: {type(got).__name__}, expected a dict"
        assert list(got) == list(want), f"{where}: keys {list(got)!r} != {list(want)!r}"
        for key in want:
            assert_bit_equal(got[key], want[key], f"{where}[{key!r}]")
        return
    assert type(got) is type(want), f"{where}: {type(got).__name__}, expected {type(want).__name__}"
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_bit_equal(g, w, f"{where}[{i}]")
    elif isinstance(want, torch.Tensor):
        assert (got.dtype, got.shape, got.device) == (want.dtype, want.shape, want.device), where
        assert torch.equal(got, want), f"{where}: values differ"
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and np.array_equal(got, want), f"{where}: values differ"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def check_resume_state(loaded: dict[str, Any], saved: dict[str, Any]) -> None:
    """The checkpoint loaded at `RESUME_AT` is the state the run saved: every leaf, the tie, int optimizer keys."""
    assert loaded["iteration"] == RESUME_AT
    state = loaded["state"]
    assert_bit_equal(state, saved)
    assert shares_storage(state["model"]["emb.weight"], state["model"]["head.weight"])
    for name, optimizer_state in state["optimizers"].items():
        assert optimizer_state["state"] and all(type(k) is int for k in optimizer_state["state"]), name


def training_script(mode: str, url: str, options: dict[str, Any], out: Path, *flags: str) -> list[str]:
    """The command line that runs the training script in a new Python process."""
    return [sys.executable, "-m", "tests.workers.torch_training", mode, url, json.dumps(options), str(out), *flags]


def run_full_then_resume(
    url: str, options: dict[str, Any], tmp_path: Path, full_flags: tuple[str, ...], resume_flags: tuple[str, ...]
) -> None:
    """Run the full child to its end, then let the resume child (started alongside, waiting) go on."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "cwd": REPO_ROOT}
    resume = subprocess.Popen(
        training_script("resume", url, options, tmp_path / "resumed", *resume_flags), stdin=subprocess.PIPE, **pipes
    )
    try:
        full = subprocess.run(
            training_script("full", url, options, tmp_path / "reference", *full_flags), timeout=300, check=False, **pipes
        )
        assert full.returncode == 0, f"full run failed:\n{full.stderr}"
        _, errors = resume.communicate("go\n", timeout=300)
        assert resume.returncode == 0, f"resumed run failed:\n{errors}"
    finally:
        if resume.poll() is None:
            resume.kill()
            resume.wait()


def load_pt(path: Path) -> dict[str, Any]:
    """A state the training script wrote with `torch.save` (numpy RNG state included, hence not weights_only)."""
    return torch.load(path, weights_only=False)


@pytest.fixture
def own_rng_states() -> Iterator[None]:
    """Give back this process's torch, numpy and Python RNG states after a test that trains in-process."""
    saved = torch.get_rng_state(), np.random.get_state(), random.getstate()
    yield
    torch.set_rng_state(saved[0])
    np.random.set_state(saved[1])
    random.setstate(saved[2])


# (backend, flags of the full run, flags of the resumed run): one pair of children per case
CHILD_CASES = [
    pytest.param("local", (), (), id="local"),
    pytest.param("local", ("--async",), (), id="local-async-save"),
    pytest.param("s3-moto", (), (), id="s3-moto", marks=pytest.mark.s3),
    pytest.param(
        "s3-seaweedfs", (), ("--resume-from-checkpoint",), id="s3-seaweedfs-resume_from_checkpoint", marks=pytest.mark.s3
    ),
    pytest.param("hdf5", (), (), id="hdf5"),
    pytest.param("zarr-local", (), (), id="zarr-local"),
]


@pytest.mark.parametrize("store_location, full_flags, resume_flags", CHILD_CASES, indirect=["store_location"])
def test_resume_in_a_new_process_is_bit_exact(
    store_location: tuple[str, dict[str, Any]], full_flags: tuple[str, ...], resume_flags: tuple[str, ...], tmp_path: Path
) -> None:
    """Train 12 steps saving at step 5 (blocking, or async while training goes on); a new process resumes
    from step 5 (`load_checkpoint()`, or `resume_from_checkpoint(url, map_location="cpu")`) and its final
    parameters, buffers, optimizer, scheduler, scaler and RNG states equal the uninterrupted run's."""
    url, options = store_location
    run_full_then_resume(url, options, tmp_path, full_flags, resume_flags)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"

    with CheckpointManager(url, EXPERIMENT, **options) as manager:
        check_resume_state(manager.load_checkpoint(map_location="cpu"), load_pt(reference / "at_k.pt"))
    final = load_pt(resumed / "final.pt")
    assert final["step"] == STEPS
    assert_bit_equal(final, load_pt(reference / "final.pt"))


@pytest.mark.parametrize("store_location", ["memory"], indirect=True)
def test_resume_on_a_memory_store_is_bit_exact(store_location: tuple[str, dict[str, Any]], own_rng_states: None) -> None:
    """A memory:// store does not outlive its process, so here the resume runs in this process, from
    objects built afresh (model, optimizers, schedulers, scaler, generator; global RNGs reseeded)."""
    url, options = store_location
    at_k, reference = run_full(url, options)
    resumed = run_resumed(build(), url, options)
    with CheckpointManager(url, EXPERIMENT, **options) as manager:
        check_resume_state(manager.load_checkpoint(), at_k)
    assert_bit_equal(resumed, reference)


RESTORED_PARTS = [
    "model",
    "optimizers/adamw",
    "optimizers/sgd",
    "optimizers/adam",
    "schedulers/adamw",
    "schedulers/sgd",
    "scaler",
    "rng/torch",
    "rng/numpy",
    "rng/batches",
    "rng/python",
]


@pytest.mark.parametrize("part", RESTORED_PARTS)
def test_every_part_of_the_state_changes_the_resumed_run(part: str, own_rng_states: None) -> None:
    """Resuming with one part of the state as it was at step 0 ends with other weights: each part is
    used after the restore, so the resume tests above would see it restored wrong."""
    t = build()
    fresh = copy.deepcopy(capture(t))
    train(t, RESUME_AT)
    state = copy.deepcopy(capture(t))
    train(t, STEPS)
    reference = capture(t)
    group, _, name = part.partition("/")
    if name:
        state[group][name] = fresh[group][name]
    else:
        state[group] = fresh[group]
    resumed = build()
    restore(resumed, state)
    train(resumed, STEPS)
    ended = resumed.model.state_dict()
    assert [name for name, want in reference["model"].items() if not torch.equal(ended[name], want)]


REFUSED: list[tuple[Callable[[Trainer], dict[str, Any]], str, str]] = [
    (lambda t: {"model": t.model, "step": 0}, "state['model']", "model.state_dict()"),
    (lambda t: {"optimizers": {"adamw": t.adamw}, "step": 0}, "state['optimizers']['adamw']", "optimizer.state_dict()"),
]


@pytest.mark.parametrize("make_state, where, instead", REFUSED, ids=["nn.Module", "optimizer"])
def test_a_module_or_optimizer_object_is_refused_and_nothing_written(
    make_state: Callable[[Trainer], dict[str, Any]], where: str, instead: str, tmp_path: Path, own_rng_states: None
) -> None:
    """A live `nn.Module` or optimizer in the state raises TypeError naming its path and what to pass."""
    with CheckpointManager(tmp_path / "store", EXPERIMENT) as manager:
        with pytest.raises(TypeError) as raised:
            manager.save_checkpoint(make_state(build()), 1)
        assert where in str(raised.value) and instead in str(raised.value)
        assert manager.list_checkpoints() == []
        assert manager.store.list("") == []
