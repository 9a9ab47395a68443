"""The inputs every model is run on, and the framework-neutral shape of what comes out.

States are keyed by (layer, reverse) with `h` (and `c` for LSTMs), so a TF1 MultiRNNCell's tuple
of LSTMStateTuples and a PyTorch `(h_n, c_n)` stack compare directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..cell_kinds import kind
from ..cells.model import RNN

StateKey = tuple[int, bool]  # (layer, reverse)
States = dict[StateKey, dict[str, np.ndarray]]


@dataclass(frozen=True)
class Case:
    batch: int
    steps: int
    random_state: bool  # start from a random initial state instead of zeros

    def describe(self) -> str:
        return f"batch {self.batch} x {self.steps} steps, {'random' if self.random_state else 'zero'} state"


# One step from zeros first: where an approximate GRU conversion must still agree exactly.
FIRST_STEP = Case(3, 1, False)
CASES: tuple[Case, ...] = (FIRST_STEP, Case(1, 9, False), Case(2, 5, True), Case(4, 16, True))


@dataclass
class Batch:
    case: Case
    x: np.ndarray  # [batch, steps, input], batch-first
    states: States


@dataclass
class Run:
    output: np.ndarray  # [batch, steps, directions * output size]
    states: States  # final states


def nudged(data: list[Batch], scale: float = 1e-6, seed: int = 1) -> list[Batch]:
    """The same batches with inputs and initial states changed by `scale` (relative): run through
    the source model, they show how far float rounding alone moves this network's outputs."""
    rng = np.random.default_rng(seed)

    def nudge(a: np.ndarray) -> np.ndarray:
        return (a * (1 + scale * rng.standard_normal(a.shape))).astype(a.dtype)

    out = []
    for b in data:
        states = {key: {part: nudge(v) for part, v in parts.items()} for key, parts in b.states.items()}
        out.append(Batch(b.case, nudge(b.x), states))
    return out


def batches(rnn: RNN, cases: tuple[Case, ...] = CASES, seed: int = 0) -> list[Batch]:
    """Seeded inputs and initial states for `rnn`; the same seed gives both sides the same numbers."""
    rng = np.random.default_rng(seed)
    state = kind(rnn.kind).state
    out = []
    for case in cases:
        x = rng.standard_normal((case.batch, case.steps, rnn.input_size)).astype(np.float32)
        states: States = {}
        for layer in range(rnn.layers):
            for reverse in (False, True) if rnn.bidirectional else (False,):
                sizes = {"h": rnn.proj or rnn.units, **({"c": rnn.units} if "c" in state else {})}
                states[(layer, reverse)] = {
                    part: (
                        rng.uniform(-0.5, 0.5, (case.batch, n))
                        if case.random_state
                        else np.zeros((case.batch, n))
                    ).astype(np.float32)
                    for part, n in sizes.items()
                }
        out.append(Batch(case, x, states))
    return out
