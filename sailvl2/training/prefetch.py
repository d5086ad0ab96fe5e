"""Draw the next step's packed rows in a background thread while the current step trains.

Building a step's rows (reading and preprocessing the images, tokenising, focus boxes, packing) takes 0.1-0.18 s
of a 0.6 s nano multi-task step on 2 CPU cores, in the training thread. Torch releases the GIL inside its
kernels, so a thread can decode PNGs and tokenise during them, on cores the step does not use: a GPU host's.
On the 2-core CPU machine the step's own threads already fill both cores and the nano step got slower with the
thread (0.66 -> ~0.75 s, session 15), so `data.prefetch` is off by default.

Exact resume is kept: every item carries the pipeline's state taken right after its rows were drawn, so the
checkpoint written after step N holds the data position after step N, not after the step being prefetched. The
thread draws at most `steps` steps, so a run with `max_steps` never reads past its end. The data pipeline uses
only its own random generators (numpy and `random.Random` per stream), so the order of the draws is the same
with or without the thread.
"""

from __future__ import annotations

import copy
import queue
import threading
from typing import Any


class RowPrefetcher:
    """Wraps a `DataPipeline`: `next()` returns (rows, data state after them), one step drawn ahead."""

    def __init__(self, pipeline: Any, steps: int, depth: int = 1) -> None:
        self.pipeline = pipeline
        self._steps = steps
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="sailvl2-rows", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            for _ in range(self._steps):
                if self._stop.is_set():
                    return
                rows = self.pipeline.next_rows()
                # A copy: the pipeline's own objects go on changing while the step that needs this state trains.
                self._put((rows, copy.deepcopy(self.pipeline.state_dict()), None))
                if not rows:
                    return
            self._put(([], copy.deepcopy(self.pipeline.state_dict()), None))
        except BaseException as err:  # noqa: BLE001 - handed to the training thread, which raises it
            self._put((None, None, err))

    def _put(self, item: tuple) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> tuple[list, dict[str, Any]]:
        """The next step's rows ([] when the data or the step budget is exhausted) and the state after them."""
        rows, state, error = self._queue.get()
        if error is not None:
            raise error
        return rows, state

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()
