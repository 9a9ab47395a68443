"""Which source tensor (or RNN) goes where in the target: an assignment problem with scores.

RNNs pair by structure (kind, input size, units, layers, direction: all must agree), then by how
alike their scopes' names are, then by their order in the checkpoint. The other weights pair by
shape (as is, or transposed where the frameworks' layouts say a matrix is: a TF or Keras `kernel`
[in, out] is a PyTorch Linear's `weight` [out, in]), dtype, name and order. Each side is solved as
a whole with scipy's linear_sum_assignment (the Hungarian method), never greedily, and a pair that
could be swapped with another pair at no cost in name evidence is flagged: only order chose it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..cells.model import RNN
from ..entry import TensorEntry
from ..errors import UnsupportedError
from .names import leaf, similarity

S = TypeVar("S")

# A name counts twice as much as order; order alone still separates look-alikes (flagged).
_NAME_WEIGHT, _ORDER_WEIGHT = 2.0, 0.3
# Two pairings whose name evidence differs by less than this are a guess between look-alikes.
_TIE = 0.05
_IMPOSSIBLE = 1e9

_KERNELS = {"kernel", "weights", "matrix"}  # a dense layer's matrix [in, out] in TF and Keras
_EMBEDDINGS = {"embedding", "embeddings"}
_ROW_MAJOR = ("tf1", "keras")  # frameworks whose dense matrices are [in, out]


@dataclass(frozen=True)
class Pair:
    """One source tensor (or RNN scope) placed on one target tensor (or RNN scope)."""

    source: str
    target: str
    transpose: bool
    score: float
    how: str  # what decided it, for the report and the drafted mapping's comments
    ambiguous: bool = False


def fits(src: TensorEntry, dst: TensorEntry, src_fw: str, dst_fw: str) -> bool | None:
    """Whether `src` can become `dst`: None if not, else whether it is transposed on the way."""
    if src.dtype != dst.dtype or src.size != dst.size:
        return None
    linear = (src_fw in _ROW_MAJOR) != (dst_fw in _ROW_MAJOR) and len(src.shape) == 2
    expects_transpose = linear and (
        (leaf(src.name) in _KERNELS and leaf(dst.name) == "weight")
        or (leaf(src.name) == "weight" and leaf(dst.name) in _KERNELS)
    )
    if expects_transpose:
        return True if dst.shape == src.shape[::-1] else None
    if leaf(src.name) in _EMBEDDINGS or leaf(dst.name) in _EMBEDDINGS:
        return False if dst.shape == src.shape else None
    return False if dst.shape == src.shape else None


def pair_rnns(sources: Sequence[RNN], targets: Sequence[RNN]) -> list[Pair]:
    """Each target RNN's source RNN, by structure, then scope names, then order."""

    def fit(a: RNN, b: RNN) -> bool | None:
        same = (a.kind, a.input_size, a.units, a.layers, a.bidirectional, a.proj) == (
            b.kind,
            b.input_size,
            b.units,
            b.layers,
            b.bidirectional,
            b.proj,
        )
        return False if same else None

    return _assign(sources, targets, lambda r: r.scope or "(root)", fit, "structure")


def pair_tensors(
    sources: Sequence[TensorEntry], targets: Sequence[TensorEntry], src_fw: str, dst_fw: str
) -> list[Pair]:
    """Each target weight's source weight. Layers pair first (the tensors under one scope: a dense
    layer's kernel and bias go to one Linear's weight and bias, never split between two), by the
    shapes of their members, their names and their order; then the members of each paired layer."""
    src_layers, dst_layers = _layers(sources), _layers(targets)

    def members(a: str, b: str) -> list[Pair] | None:
        inner = _assign(
            src_layers[a], dst_layers[b], lambda e: leaf(e.name), lambda x, y: fits(x, y, src_fw, dst_fw), ""
        )
        if len(inner) != len(src_layers[a]) or len(inner) != len(dst_layers[b]):
            return None
        return inner

    layer_pairs = _assign(
        list(src_layers),
        list(dst_layers),
        lambda k: k,
        lambda a, b: None if members(a, b) is None else False,
        "shapes of the layer's tensors",
    )
    pairs = []
    for layer in layer_pairs:
        for member in members(layer.source, layer.target) or []:
            src = _full(layer.source, member.source, src_layers)
            dst = _full(layer.target, member.target, dst_layers)
            pairs.append(Pair(src, dst, member.transpose, layer.score, layer.how, layer.ambiguous))
    return pairs


def _layers(entries: Sequence[TensorEntry]) -> dict[str, list[TensorEntry]]:
    """Tensors by the scope they sit in (`output` for output/kernel and output/bias); a tensor at
    the root (a bare `embedding` variable) is a layer of its own."""
    layers: dict[str, list[TensorEntry]] = {}
    for entry in entries:
        scope = entry.name.rpartition("/")[0] or entry.name
        layers.setdefault(scope, []).append(entry)
    return layers


def _full(layer: str, member_leaf: str, layers: dict[str, list[TensorEntry]]) -> str:
    return next(e.name for e in layers[layer] if leaf(e.name) == member_leaf)


def _assign(
    sources: Sequence[S],
    targets: Sequence[S],
    name: Callable[[S], str],
    fit: Callable[[S, S], bool | None],
    basis: str,
) -> list[Pair]:
    if not sources or not targets:
        return []
    import numpy as np

    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise UnsupportedError(
            "align solves its pairings with scipy, which is not installed: pip install 'ckptmap[align]'."
        ) from None

    fits_ = [[fit(s, t) for t in targets] for s in sources]
    names = [[similarity(name(s), name(t)) for t in targets] for s in sources]
    score = np.full((len(sources), len(targets)), -_IMPOSSIBLE)
    for i in range(len(sources)):
        for j in range(len(targets)):
            if fits_[i][j] is not None:
                # Order among look-alikes: the k-th source that fits this target, against the k-th
                # target that fits this source (checkpoints list tensors in their own orders).
                rank_i = sum(fits_[k][j] is not None for k in range(i))
                rank_j = sum(fits_[i][k] is not None for k in range(j))
                order = 1 / (1 + abs(rank_i - rank_j))
                score[i, j] = 1 + _NAME_WEIGHT * names[i][j] + _ORDER_WEIGHT * order
    rows, cols = linear_sum_assignment(-score)
    chosen = [(i, j) for i, j in zip(rows, cols, strict=True) if score[i, j] > -_IMPOSSIBLE / 2]
    swaps = _look_alikes(chosen, fits_, names)
    pairs = []
    for i, j in chosen:
        how = f"{basis}, names {names[i][j]:.2f} alike" if basis else ""
        if (i, j) in swaps:
            k, l = swaps[(i, j)]  # noqa: E741
            how = f"{basis}; could swap with {name(sources[k])} -> {name(targets[l])}: only order decided"
        transpose = bool(fits_[i][j])
        pairs.append(
            Pair(name(sources[i]), name(targets[j]), transpose, float(score[i, j]), how, (i, j) in swaps)
        )
    return pairs


def _look_alikes(
    chosen: list[tuple[int, int]], fits_: list[list[bool | None]], names: list[list[float]]
) -> dict[tuple[int, int], tuple[int, int]]:
    """Pairs (i, j) that another chosen pair (k, l) could swap with (i->l and k->j both fit) for
    the same name evidence: order alone decided between them."""
    flagged: dict[tuple[int, int], tuple[int, int]] = {}
    for a, (i, j) in enumerate(chosen):
        for k, l in chosen[a + 1 :]:  # noqa: E741
            if fits_[i][l] is None or fits_[k][j] is None:
                continue
            kept = names[i][j] + names[k][l]
            swapped = names[i][l] + names[k][j]
            if kept - swapped < _TIE:
                flagged[(i, j)], flagged[(k, l)] = (k, l), (i, j)
    return flagged
