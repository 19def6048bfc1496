"""The Lightning adapter against real Lightning: ModelCheckpoint through ExpstoreCheckpointIO on a
folder, S3 (moto) and HDF5, AsyncCheckpointIO around it, ExpstoreLogger, refusals, and a run
killed with SIGKILL mid-epoch and resumed in a new process with the same final weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

import fsspec
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from expstore import open_store
from expstore.errors import PickleNotAllowed
from expstore.experiment_logger import load_structured_logs
from expstore.integrations.lightning import ExpstoreCheckpointIO, ExpstoreLogger, latest_checkpoint

from ..workers import REPO_ROOT, lightning_workers
from ..workers.lightning_workers import CRASH_AFTER, EVERY_N_STEPS, TinyRegression

LIGHTNING_KEYS = {"state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks", "epoch", "global_step",
                  "hyper_parameters", "pytorch-lightning_version"}


def fit(dirpath: str, *, plugin: object | None = None, epochs: int = 2, ckpt_path: str | None = None,
        model: pl.LightningModule | None = None, logger: object = False, **checkpoint_args: object) -> pl.Trainer:
    """Train the tiny model in this process, checkpointing to `dirpath` (default: top 2 by loss + last)."""
    pl.seed_everything(0, verbose=False)
    args = {"every_n_train_steps": EVERY_N_STEPS, "save_top_k": 2, "monitor": "train_loss", "save_last": True}
    args.update(checkpoint_args)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, deterministic=True, logger=logger, log_every_n_steps=1,
        plugins=[plugin] if plugin is not None else None, callbacks=[pl.callbacks.ModelCheckpoint(dirpath=dirpath, **args)],
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model or TinyRegression(), ckpt_path=ckpt_path)
    return trainer


def ckpt_names(url: str, **options: object) -> list[str]:
    return [k for k in open_store(url, **options).list("") if k.endswith(".ckpt")]


@pytest.fixture
def s3_fsspec(moto_server, monkeypatch):
    """Storage options of moto, also given to fsspec (which ModelCheckpoint and ckpt_path="last" use)."""
    options = moto_server.storage_options
    monkeypatch.setitem(fsspec.config.conf, "s3", options)
    return options


def test_importing_expstore_imports_neither_lightning_nor_torch():
    code = ("import sys, expstore, expstore.integrations, expstore.checkpointing, expstore.experiment_logger\n"
            "print([m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_model_checkpoint_keeps_the_same_files_as_lightnings_own_io(tmp_path, s3_fsspec):
    fit(str(tmp_path / "torch"))  # Lightning's TorchCheckpointIO
    expected = sorted(os.listdir(tmp_path / "torch"))
    assert "last.ckpt" in expected and len(expected) == 3  # top 2 + last
    fit(str(tmp_path / "expstore"), plugin=ExpstoreCheckpointIO())
    assert ckpt_names(str(tmp_path / "expstore")) == expected
    fit("s3://expstore-test/lightning-topk", plugin=ExpstoreCheckpointIO(**s3_fsspec))
    assert ckpt_names("s3://expstore-test/lightning-topk", **s3_fsspec) == expected


def test_a_checkpoint_holds_lightnings_state_as_tensors_without_pickle(tmp_path):
    trainer = fit(str(tmp_path), plugin=ExpstoreCheckpointIO(), epochs=1)
    path = str(tmp_path / "last.ckpt")
    loaded = ExpstoreCheckpointIO().load_checkpoint(path)
    assert LIGHTNING_KEYS <= set(loaded)
    assert loaded["global_step"] == trainer.global_step == 8
    for name, value in trainer.lightning_module.state_dict().items():
        assert torch.equal(loaded["state_dict"][name], value)
    assert isinstance(next(iter(loaded["optimizer_states"][0]["state"])), int)  # Adam's int keys come back
    assert loaded["hyper_parameters"] == {"hidden": 16, "lr": 0.01}
    assert any(key.startswith("ModelCheckpoint{") for key in loaded["callbacks"])
    from safetensors.torch import load_file  # the object is in the safetensors layout

    assert torch.equal(load_file(path)["state_dict/net.0.weight"], loaded["state_dict"]["net.0.weight"])
    with pytest.raises(FileNotFoundError):
        ExpstoreCheckpointIO().load_checkpoint(str(tmp_path / "missing.ckpt"))


@pytest.mark.parametrize("container", ["run.h5", "run.zarr"])
def test_fit_resumes_inside_a_container_from_latest_checkpoint(tmp_path, container):
    url = str(tmp_path / container / "ckpt")
    fit(url, plugin=ExpstoreCheckpointIO(), epochs=1, save_top_k=1)
    assert ckpt_names(url) == ["epoch=0-step=8.ckpt", "last.ckpt"]  # the top-1 replaced its predecessor in the file
    latest = latest_checkpoint(url)
    assert latest == f"{url}/last.ckpt"
    trainer = fit(url, plugin=ExpstoreCheckpointIO(), epochs=2, save_top_k=1, ckpt_path=latest)
    assert trainer.global_step == 16  # went on from step 8, not from 0
    assert latest_checkpoint(str(tmp_path / "empty")) is None


def test_save_last_link_makes_a_symlink_the_plugin_loads(tmp_path):
    fit(str(tmp_path), plugin=ExpstoreCheckpointIO(), epochs=1, save_last="link")
    assert os.path.islink(tmp_path / "last.ckpt")
    assert ExpstoreCheckpointIO().load_checkpoint(str(tmp_path / "last.ckpt"))["global_step"] == 8


def test_async_checkpoint_io_around_the_plugin(tmp_path):
    trainer = fit(str(tmp_path), plugin=AsyncCheckpointIO(ExpstoreCheckpointIO()), epochs=1)
    names = ckpt_names(str(tmp_path))
    assert len(names) == 3 and names[-1] == "last.ckpt"  # top 2 + last, all landed before fit returned
    loaded = ExpstoreCheckpointIO().load_checkpoint(str(tmp_path / "last.ckpt"))
    for name, value in trainer.lightning_module.state_dict().items():
        assert torch.equal(loaded["state_dict"][name], value)


class WithActivation(TinyRegression):
    """Hyperparameters holding an object (an nn.Module) the format cannot store without pickle."""

    def __init__(self, activation: torch.nn.Module) -> None:
        super().__init__()
        self.save_hyperparameters()


def test_an_object_in_hyper_parameters_is_refused_naming_it_and_allow_pickle(tmp_path):
    with pytest.raises(TypeError, match=r"hyper_parameters'\]\['activation'\].*allow_pickle=True"):
        fit(str(tmp_path / "plain"), plugin=ExpstoreCheckpointIO(), epochs=1, model=WithActivation(torch.nn.ReLU()))
    assert ckpt_names(str(tmp_path / "plain")) == []
    fit(str(tmp_path / "pickled"), plugin=ExpstoreCheckpointIO(allow_pickle=True), epochs=1,
        model=WithActivation(torch.nn.ReLU()))
    path = str(tmp_path / "pickled" / "last.ckpt")
    assert isinstance(ExpstoreCheckpointIO(allow_pickle=True).load_checkpoint(path)["hyper_parameters"]["activation"],
                      torch.nn.ReLU)
    with pytest.raises(PickleNotAllowed):
        ExpstoreCheckpointIO().load_checkpoint(path)
    with pytest.raises(PickleNotAllowed):
        ExpstoreCheckpointIO(allow_pickle=True).load_checkpoint(path, weights_only=True)
    with pytest.raises(TypeError, match="array-native"):
        ExpstoreCheckpointIO(allow_pickle=True).save_checkpoint({"epoch": 0}, str(tmp_path / "run.h5" / "x.ckpt"))


def test_a_refusal_under_async_checkpoint_io_reaches_the_trainer(tmp_path):
    with pytest.raises(TypeError, match="allow_pickle=True"):
        fit(str(tmp_path), plugin=AsyncCheckpointIO(ExpstoreCheckpointIO()), epochs=1, model=WithActivation(torch.nn.ReLU()))
    assert ckpt_names(str(tmp_path)) == []


class Failing(TinyRegression):
    def training_step(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("boom")
        return super().training_step(batch, batch_idx)


def test_a_failed_fit_ends_the_run_as_failed(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        fit(str(tmp_path / "ckpt"), plugin=ExpstoreCheckpointIO(), epochs=1, model=Failing(),
            logger=ExpstoreLogger(str(tmp_path), "bad"))
    events = load_structured_logs(f"{tmp_path}/bad/logs/bad_structured.jsonl")
    assert [e["data"]["final_status"] for e in events if e["event_type"] == "experiment_end"] == ["failed"]
    assert [e["data"]["step"] for e in events if e["event_type"] == "metrics"] == [0, 1, 2]


def test_bad_arguments_are_named(tmp_path):
    io = ExpstoreCheckpointIO()
    with pytest.raises(TypeError, match="storage_options"):
        io.save_checkpoint({"epoch": 0}, str(tmp_path / "a.ckpt"), storage_options={"x": 1})
    with pytest.raises(TypeError, match="checkpoint must be the dict"):
        io.save_checkpoint([1], str(tmp_path / "a.ckpt"))
    with pytest.raises(TypeError, match="checkpoint path must be a str"):
        io.save_checkpoint({"epoch": 0}, 3)
    with pytest.raises(TypeError, match="allow_pickle must be True or False"):
        ExpstoreCheckpointIO(allow_pickle="yes")
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        ExpstoreLogger(str(tmp_path), name="")
    io.remove_checkpoint(str(tmp_path / "never-saved.ckpt"))  # as Lightning's own IO: nothing to remove is no error


def test_the_logger_writes_a_run_expstore_commands_read(tmp_path):
    logger = ExpstoreLogger(str(tmp_path), "exp1")
    fit(None, plugin=ExpstoreCheckpointIO(), epochs=1, logger=logger)
    assert ckpt_names(str(tmp_path / "exp1" / "checkpoints")) != []  # ModelCheckpoint's default dirpath: the run's folder
    events = load_structured_logs(f"{tmp_path}/exp1/logs/exp1_structured.jsonl")
    config = [e for e in events if e["event_type"] == "config"]
    assert config[0]["data"]["config"] == {"hidden": 16, "lr": 0.01}
    metrics = [e["data"] for e in events if e["event_type"] == "metrics"]
    assert [m["step"] for m in metrics] == list(range(8))
    assert all(isinstance(m["metrics"]["train_loss"], float) for m in metrics)
    assert events[-1]["event_type"] == "experiment_end" and events[-1]["data"]["final_status"] == "completed"
    out = subprocess.run([sys.executable, "-m", "expstore", "ls", str(tmp_path), "--json"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True)
    assert [run["name"] for run in json.loads(out.stdout)["runs"]] == ["exp1"]


# -- killed mid-epoch, resumed in a new process -------------------------------------------------------------


def child(mode: str, root: str, options: dict, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workers.lightning_workers", mode, root, json.dumps(options), str(out)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The final weights of the same run that nothing interrupted (trained in this process)."""
    out = tmp_path_factory.mktemp("full") / "weights.pt"
    lightning_workers.run("full", str(out.parent / "root"), {}, str(out))
    return torch.load(out)


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_killed_mid_epoch_and_resumed_from_last_gives_the_same_weights(backend, tmp_path, request, uninterrupted):
    if backend == "s3":
        options = request.getfixturevalue("moto_server").storage_options
        root = f"s3://expstore-test/lightning-crash-{os.getpid()}"
    else:
        options, root = {}, str(tmp_path / "root")
    crashing = child("crash", root, options, tmp_path / "unused.pt")
    try:
        for line in crashing.stdout:
            if line.startswith("step "):
                break
        else:
            pytest.fail(f"the child ended before step {CRASH_AFTER}: {crashing.stderr.read()[-3000:]}")
        assert line.strip() == f"step {CRASH_AFTER} done"
        os.kill(crashing.pid, signal.SIGKILL)
    finally:
        crashing.kill()
        crashing.communicate()
    assert crashing.returncode == -signal.SIGKILL
    saved = ExpstoreCheckpointIO(**options).load_checkpoint(f"{root}/run/checkpoints/last.ckpt")
    assert saved["global_step"] == CRASH_AFTER // EVERY_N_STEPS * EVERY_N_STEPS  # the kill came mid-epoch 1, after step 12

    out = tmp_path / "resumed.pt"
    finish(child("resume", root, options, out))
    resumed = torch.load(out)
    assert resumed.keys() == uninterrupted.keys()
    for name in uninterrupted:
        assert torch.equal(resumed[name], uninterrupted[name]), name
    events = load_structured_logs(f"{root}/run/logs/run_structured.jsonl", **options)
    assert [e["data"]["final_status"] for e in events if e["event_type"] == "experiment_end"] == ["completed"]
