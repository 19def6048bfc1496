"""`ExpstoreCallback` inside a real `transformers.Trainer`: a tiny GPT-2 built from a config (no hub
download) trains a few CPU steps, logging to expstore and mirroring its checkpoints to a local
folder and to S3 (moto) at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from expstore import open_store
from expstore.errors import CorruptData, InvalidKey, InvalidURL, KeyNotFound, StoreError
from expstore.experiment_logger import analyze_logs, load_structured_logs
from expstore.integrations.transformers import INDEX_KEY, ExpstoreCallback, restore_checkpoint

from ..workers import REPO_ROOT

MAX_STEPS, SAVE_STEPS, LIMIT = 6, 2, 2  # saves at 2, 4, 6; Trainer rotates checkpoint-2 away


class TinyText(torch.utils.data.Dataset):
    """Sixteen random token sequences; the labels are the inputs (causal LM)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 50, (16, 8), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def make_trainer(output_dir: Path, callbacks: list[Any], max_steps: int = MAX_STEPS) -> Any:
    """A Trainer of a one-layer GPT-2 with 16-wide embeddings, saving every 2 steps, keeping 2."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16)
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=4, logging_steps=1,
        save_strategy="steps", save_steps=SAVE_STEPS, save_total_limit=LIMIT, report_to=[], use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0, seed=0,
    )
    return transformers.Trainer(model=model, args=args, train_dataset=TinyText(), callbacks=callbacks)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def store_bytes(url: str, prefix: str, options: dict[str, Any]) -> dict[str, bytes]:
    with open_store(url, **options) as store:
        return {k[len(prefix):]: store.read(k) for k in store.list(prefix)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, moto_server: Any) -> dict[str, Any]:
    """One training run with two callbacks: logs and mirror on local folders, and both on S3."""
    root = tmp_path_factory.mktemp("hf")
    s3 = moto_server.storage_options
    s3_root = f"s3://expstore-test/hf-{os.getpid()}"
    local_cb = ExpstoreCallback(root / "logs", "tiny", checkpoint_url=root / "mirror")
    s3_cb = ExpstoreCallback(f"{s3_root}/logs", "tiny", checkpoint_url=f"{s3_root}/ckpt", **s3)
    trainer = make_trainer(root / "out", [local_cb, s3_cb])
    trainer.train()
    return {"root": root, "trainer": trainer, "local": local_cb, "s3": s3_cb,
            "sites": {"local": (str(root / "logs"), str(root / "mirror"), {}),
                      "s3": (f"{s3_root}/logs", f"{s3_root}/ckpt", s3)}}


@pytest.mark.parametrize("site", ["local", "s3"])
def test_metrics_and_arguments_are_logged(trained: dict[str, Any], site: str) -> None:
    logs, _, options = trained["sites"][site]
    report = analyze_logs(logs, "tiny", **options)
    assert report["final_status"] == "completed"
    assert "loss" in report["final_metrics"] and "train_runtime" in report["final_metrics"]
    events = load_structured_logs(logs, "tiny", **options)
    losses = [e["data"] for e in events if e["event_type"] == "metrics" and "loss" in e["data"]["metrics"]]
    assert [m["step"] for m in losses] == list(range(1, MAX_STEPS + 1))
    assert all(isinstance(m["metrics"]["loss"], float) for m in losses)
    config = next(e["data"]["config"] for e in events if e["event_type"] == "config")
    assert config["training_args"]["save_total_limit"] == LIMIT and config["training_args"]["max_steps"] == MAX_STEPS
    assert config["model_config"]["n_embd"] == 16 and config["model"]["class"] == "GPT2LMHeadModel"
    mirrored = [e["data"]["step"] for e in events if e["event_type"] == "checkpoint"]
    assert mirrored == [2, 4, 6]
    result = next(e["data"] for e in events if e["event_type"] == "result")
    assert result["global_step"] == MAX_STEPS and result["stopped_early"] is False


@pytest.mark.parametrize("site", ["local", "s3"])
def test_mirror_equals_trainer_folders_and_rotation_deletes(trained: dict[str, Any], site: str) -> None:
    _, mirror, options = trained["sites"][site]
    out = trained["root"] / "out"
    local_steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert local_steps == [4, 6]
    for step in local_steps:
        local = tree_bytes(out / f"checkpoint-{step}")
        assert "model.safetensors" in local and "optimizer.pt" in local and "trainer_state.json" in local
        assert store_bytes(mirror, f"checkpoint-{step}/", options) == local
    assert store_bytes(mirror, "checkpoint-2/", options) == {}
    callback = trained[site]
    assert callback.mirror.steps() == [4, 6]
    with open_store(mirror, **options) as store:
        assert set(store.list()) == {INDEX_KEY} | {f"checkpoint-{s}/{f}" for s in (4, 6) for f in tree_bytes(out / f"checkpoint-{s}")}


def test_remirroring_an_unchanged_folder_uploads_nothing(trained: dict[str, Any]) -> None:
    root, callback = trained["root"], trained["local"]
    model_file = root / "mirror" / "checkpoint-6" / "model.safetensors"
    inode = model_file.stat().st_ino
    info = callback.mirror.mirror(root / "out" / "checkpoint-6", 6, keep={4, 6})
    assert info["uploaded"] == [] and info["bytes_uploaded"] == 0 and info["files"] > 3
    assert model_file.stat().st_ino == inode  # an atomic re-write would have replaced the file
    s3_info = trained["s3"].mirror.mirror(root / "out" / "checkpoint-6", 6, keep={4, 6})
    assert s3_info["uploaded"] == []


def test_a_changed_or_missing_mirrored_file_is_sent_again(trained: dict[str, Any], tmp_path: Path) -> None:
    src = trained["root"] / "out" / "checkpoint-4"
    cb = ExpstoreCallback(checkpoint_url=tmp_path / "m")
    first = cb.mirror.mirror(src, 4)
    assert sorted(first["uploaded"]) == sorted(tree_bytes(src))
    (tmp_path / "m" / "checkpoint-4" / "config.json").unlink()
    # what a crash between an index commit and its deletions leaves: objects the index does not name
    (tmp_path / "m" / "checkpoint-2").mkdir()
    (tmp_path / "m" / "checkpoint-2" / "model.safetensors").write_bytes(b"orphan")
    (tmp_path / "m" / "checkpoint-4" / "old.bin").write_bytes(b"stale")
    (tmp_path / "m" / "notes.txt").write_bytes(b"not the mirror's")
    assert cb.mirror.mirror(src, 4)["uploaded"] == ["config.json"]
    assert store_bytes(str(tmp_path / "m"), "checkpoint-", {}).keys() == {f"4/{f}" for f in tree_bytes(src)}
    assert (tmp_path / "m" / "notes.txt").exists()


@pytest.mark.parametrize("site", ["local", "s3"])
def test_restore_then_resume(trained: dict[str, Any], site: str, tmp_path: Path) -> None:
    _, mirror, options = trained["sites"][site]
    restored = restore_checkpoint(mirror, tmp_path, **options)
    assert restored == tmp_path / "checkpoint-6"
    assert tree_bytes(restored) == tree_bytes(trained["root"] / "out" / "checkpoint-6")
    with pytest.raises(KeyNotFound, match=r"step 2 is not mirrored; mirrored steps: \[4, 6\]"):
        restore_checkpoint(mirror, tmp_path, step=2, **options)
    with pytest.raises(FileExistsError, match="checkpoint-6"):
        restore_checkpoint(mirror, tmp_path, **options)
    if site == "local":  # resume from the restored folder: Trainer goes on from step 6
        trainer = make_trainer(tmp_path / "resumed", [], max_steps=MAX_STEPS + 1)
        trainer.train(resume_from_checkpoint=str(restored))
        assert trainer.state.global_step == MAX_STEPS + 1


def test_restore_refuses_a_damaged_file(trained: dict[str, Any], tmp_path: Path) -> None:
    cb = ExpstoreCallback(checkpoint_url=tmp_path / "m")
    cb.mirror.mirror(trained["root"] / "out" / "checkpoint-4", 4)
    target = tmp_path / "m" / "checkpoint-4" / "config.json"
    target.write_bytes(target.read_bytes().replace(b"16", b"17", 1))
    with pytest.raises(CorruptData, match="'config.json' of step 4 does not match"):
        restore_checkpoint(tmp_path / "m", tmp_path / "back")
    assert not (tmp_path / "back").exists() or list((tmp_path / "back").iterdir()) == []  # no partial folder left


class Boom(transformers.TrainerCallback):
    """Raises inside training, as a crash of the loop would."""

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 2:
            raise RuntimeError("boom")


def test_a_train_that_raised_is_finalized_failed(tmp_path: Path) -> None:
    callback = ExpstoreCallback(tmp_path / "logs", "crashy")
    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(tmp_path / "out", [callback, Boom()], max_steps=3).train()
    assert callback.logger is not None and callback.logger.flush()
    assert analyze_logs(tmp_path / "logs", "crashy")["final_status"] is None  # still open: on_train_end never ran
    make_trainer(tmp_path / "out2", [callback], max_steps=2).train()  # the next train() closes the first run as failed
    events = load_structured_logs(tmp_path / "logs", "crashy")
    assert [e["data"]["final_status"] for e in events if e["event_type"] == "experiment_end"] == ["failed", "completed"]
    assert analyze_logs(tmp_path / "logs", "crashy")["final_status"] == "completed"


def test_bad_input_fails_at_construction(tmp_path: Path, moto_server: Any) -> None:
    with pytest.raises(ValueError, match="needs output_dir"):
        ExpstoreCallback()
    with pytest.raises(InvalidURL, match="checkpoint_url='nosuchscheme://x'"):
        ExpstoreCallback(checkpoint_url="nosuchscheme://x")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match=r"output_dir=.*a-file/logs.* is not writable"):
        ExpstoreCallback(blocker / "logs")
    dead = {**moto_server.storage_options, "endpoint_url": "http://127.0.0.1:9"}  # nothing listens on port 9
    with pytest.raises(StoreError, match="checkpoint_url='s3://expstore-test/ckpt' is not writable: S3 endpoint unreachable"):
        ExpstoreCallback(checkpoint_url="s3://expstore-test/ckpt", **dead)
    with pytest.raises(InvalidKey):
        ExpstoreCallback(tmp_path / "logs", "a/b")
    assert list(tmp_path.iterdir()) == [blocker]  # nothing was created
    mirror = ExpstoreCallback(checkpoint_url=tmp_path / "m").mirror
    with pytest.raises(TypeError, match="step must be an int >= 0 .* got '4'"):
        mirror.mirror(tmp_path, "4")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="checkpoint-9.* of step 9 does not exist"):
        mirror.mirror(tmp_path / "checkpoint-9", 9)


def test_importing_expstore_does_not_import_transformers() -> None:
    code = ("import sys, expstore, expstore.integrations; "
            "bad = [m for m in ('transformers', 'torch') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
