"""Rows drawn one step ahead in a thread (training/prefetch.py): the same run as without it, exact resume,
errors surfacing in the training thread, and no draws past the step budget."""

from __future__ import annotations

import pytest
import torch

from sailvl2.data.errors import DataError
from sailvl2.training.prefetch import RowPrefetcher

from .test_training import _losses, _run, _weights


class CountingPipeline:
    def __init__(self, fail_at: int | None = None) -> None:
        self.drawn, self.fail_at = 0, fail_at

    def next_rows(self) -> list[int]:
        if self.drawn == self.fail_at:
            raise DataError("row 3 is broken")
        self.drawn += 1
        return [self.drawn]

    def state_dict(self) -> dict:
        return {"drawn": self.drawn, "nested": {"list": [self.drawn]}}


def test_items_carry_the_state_after_their_rows_and_stop_at_the_budget():
    pipeline = CountingPipeline()
    prefetcher = RowPrefetcher(pipeline, steps=3)
    items = [prefetcher.next() for _ in range(4)]
    prefetcher.close()
    assert [rows for rows, _ in items] == [[1], [2], [3], []]
    assert [state["drawn"] for _, state in items] == [1, 2, 3, 3]
    assert items[0][1]["nested"]["list"] == [1]  # a copy, not the pipeline's live object
    assert pipeline.drawn == 3  # never a draw past the budget


def test_a_pipeline_error_is_raised_in_the_training_thread():
    prefetcher = RowPrefetcher(CountingPipeline(fail_at=2), steps=10)
    assert prefetcher.next()[0] == [1] and prefetcher.next()[0] == [2]
    with pytest.raises(DataError, match="row 3 is broken"):
        prefetcher.next()
    prefetcher.close()


def test_close_stops_a_thread_blocked_on_a_full_queue():
    prefetcher = RowPrefetcher(CountingPipeline(), steps=1000)
    prefetcher.next()
    prefetcher.close()  # the thread is waiting to hand over the next item: it must end, not hang
    assert not prefetcher._thread.is_alive()


def test_prefetching_trains_exactly_as_drawing_in_the_loop(tmp_path):
    """Two paths that must agree: the debug recipe with and without the prefetch thread gives the same losses,
    weights and data position."""
    _run(tmp_path / "inline", "max_steps=6", "save_every=3")  # the default: drawn in the loop
    _run(tmp_path / "ahead", "max_steps=6", "save_every=3", "data.prefetch=true")
    assert _losses(tmp_path / "ahead") == _losses(tmp_path / "inline")
    first, second = _weights(tmp_path / "inline"), _weights(tmp_path / "ahead")
    assert all(torch.equal(first[k], second[k]) for k in first)
    import json

    for step in ("step-00000003", "step-00000006"):
        # the synthetic images live in each run's own folder: the paths differ by the folder name only
        states = [json.dumps(json.loads((tmp_path / run / "checkpoints" / step / "state.json").read_text())["data"])
                  .replace(str(tmp_path / run), "RUN") for run in ("inline", "ahead")]
        assert states[0] == states[1], step
