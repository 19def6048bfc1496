"""Two processes logging one experiment name without `rank=` on a store without append: both logs are kept."""

from __future__ import annotations

import multiprocessing
import warnings
from typing import Any

import pytest

from expstore import Store, open_store
from expstore.experiment_logger import ExperimentLogger, load_structured_logs
from expstore.experiment_logger.merge import merge_into

from ..workers.rank_workers import EVENTS, log_without_rank
from ..wrapping import DelegatingStore

ROUNDS = 3  # the finalize race goes either way; every round must keep both logs


# SeaweedFS, not moto: the finalize merge races on a conditional write, which moto does not make atomic
@pytest.mark.parametrize("store_location", ["s3-seaweedfs"], indirect=True)
def test_two_unranked_writers_of_one_name_keep_both_logs(store_location):
    url, options = store_location
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(ROUNDS):
        name = f"shared{round_}"
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=log_without_rank, args=(url, options, name, w, barrier)) for w in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0]

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no torn or duplicated lines to skip
            events = load_structured_logs(url, name, **options)
        for writer in (0, 1):
            steps = [e["data"]["step"] for e in events if e["event_type"] == "metrics" and e["data"]["metrics"]["writer"] == writer]
            assert steps == list(range(EVENTS + 1)), f"round {round_}: writer {writer} logged {EVENTS + 1} events, {len(steps)} kept"
        assert [e["event_type"] for e in events].count("experiment_start") == 2
        assert [e["event_type"] for e in events].count("experiment_end") == 2

        store = open_store(url, **options)
        try:
            assert not [k for k in store.list(name) if ".segments/" in k]  # both merged into the final file
        finally:
            store.close()


@pytest.mark.parametrize("store_location", ["s3-moto"], indirect=True)
def test_a_second_session_of_one_name_is_reported_and_both_are_kept(store_location):
    url, options = store_location
    first = ExperimentLogger("twin", url, log_to_console=False, flush_interval=60, **options)
    second = ExperimentLogger("twin", url, log_to_console=False, flush_interval=60, **options)
    for step in range(5):
        first.log_metrics({"writer": 0}, step=step)
        second.log_metrics({"writer": 1}, step=step)
    assert first.flush() and second.flush()
    with pytest.warns(RuntimeWarning, match=r"'twin': another logger of this experiment name .*rank="):
        first.finalize()
    second.finalize()
    events = load_structured_logs(url, "twin", **options)
    for writer in (0, 1):
        assert [e["data"]["step"] for e in events if e["event_type"] == "metrics" and e["data"]["metrics"]["writer"] == writer] == list(range(5))


class CommitsFirst(DelegatingStore):
    """A real store on which another writer commits `key` just before this one's first conditional write of it."""

    def __init__(self, inner: Store, key: str, theirs: bytes):
        super().__init__(inner)
        self.key, self.theirs = key, theirs

    def _write(self, key: str, data: Any, if_absent: bool, if_match: str | None) -> str:
        if key == self.key and self.theirs:
            self.inner.write(key, self.theirs)
            self.theirs = b""
        return super()._write(key, data, if_absent, if_match)


@pytest.mark.parametrize("store_location", ["s3-moto"], indirect=True)
def test_merge_redone_on_top_of_a_final_file_committed_meanwhile(store_location):
    url, options = store_location
    inner = open_store(url, **options)
    try:
        inner.write("m.segments/s1/00000001.jsonl", b"mine 1\n")
        store = CommitsFirst(inner, "m_structured.jsonl", b"theirs\n")
        assert merge_into(store, "m_structured.jsonl", ["m.segments/s1/00000001.jsonl"], [b"mine 2\n"]) is True
        assert inner.read("m_structured.jsonl") == b"theirs\nmine 1\nmine 2\n"
    finally:
        inner.close()
