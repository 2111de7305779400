"""Stopping a diverging run at the step that diverged, without stopping the GPU every step.

Each step's total loss and loss terms are copied to pinned host memory asynchronously, with an
event. The host looks at the steps whose copies have landed (``poll``, free) and waits for the
others only where it synchronises anyway: logging steps, checkpoints and the end (``flush``).
A non-finite loss (or gradient norm), or a loss above ``EXPLODED_LOSS``, at step s is then
reported as step s, with its losses, image ids and files,
one or two steps later at most on a GPU and at once on the CPU; by then the update of step s
has been applied, so no checkpoint is written after a diverged step (``flush`` runs first).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor

EXPLODED_LOSS = 1e4
"""A loss above this has diverged though it is finite. Every loss of rpnkit's models is a mean
over sampled anchors or RoIs of a cross-entropy or a smooth-L1 distance between box codes, a
few units at the start of training and below 1 after: 10^4 takes logits or box deltas in the
thousands, which only blown-up weights give (the overflow to inf follows a step or two later,
after the weights were written). Gradient norms are not bounded so: only non-finite ones stop."""


@dataclass
class _Pending:
    step: int
    values: Tensor  # (1 + terms,) the total, then each term, on the host once the event completes
    names: list[str]
    image_ids: list
    file_names: list[str]
    event: torch.cuda.Event | None
    what: str = "loss"


class DivergenceWatch:
    """``max_loss``: a finite loss above it has diverged too (None: only NaN and inf)."""

    def __init__(self, max_loss: float | None = EXPLODED_LOSS) -> None:
        self.pending: deque[_Pending] = deque()
        self.max_loss = max_loss

    def push(
        self, step: int, loss: Tensor, terms: dict[str, Tensor], batch, what: str = "loss"
    ) -> None:
        """Watch ``loss`` (and its ``terms``, for the message) of ``step``; ``what`` names it
        (the loss, or the gradient norm, which can overflow while the loss is finite)."""
        values = torch.stack([loss.detach().float(), *(v.detach().float() for v in terms.values())])
        event = None
        if values.is_cuda:
            values = values.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        self.pending.append(
            _Pending(step, values, list(terms), batch.image_ids, batch.file_names, event, what)
        )
        self.poll()

    def poll(self) -> None:
        """Check every step whose values have reached the host, without waiting."""
        while self.pending and (self.pending[0].event is None or self.pending[0].event.query()):
            _check(self.pending.popleft(), self.max_loss)

    def flush(self) -> None:
        """Wait for and check every step pushed so far."""
        while self.pending:
            entry = self.pending.popleft()
            if entry.event is not None:
                entry.event.synchronize()
            _check(entry, self.max_loss)


def _check(entry: _Pending, max_loss: float | None) -> None:
    total, *terms = (float(v) for v in entry.values)
    exploded = entry.what == "loss" and max_loss is not None and total > max_loss
    if math.isfinite(total) and not exploded:
        return
    named = ", ".join(f"{k}={v:.4g}" for k, v in zip(entry.names, terms))
    value = f"{total:.4g} (above {max_loss:g})" if math.isfinite(total) else f"{total}"
    raise FloatingPointError(
        f"training diverged at step {entry.step}: {entry.what} {value} ({named}) on images "
        f"{entry.image_ids} ({', '.join(entry.file_names)}). Lower the learning rate, add "
        "warm-up or gradient clipping, or check these boxes."
    )
