"""Which source tensor (or RNN) goes where in the target: an assignment problem with scores.

RNNs pair by structure (kind, input size, units, layers, direction: all must agree), then by how
alike their scopes' names are, then by their order in the checkpoint. The other weights pair a
layer at a time (the tensors under one scope: a dense layer's kernel and bias go to one Linear's
weight and bias), by the shapes of the layer's tensors (as they are, or transposed where the
frameworks' layouts say a matrix is: a TF or Keras `kernel` [in, out] is a PyTorch Linear's
`weight` [out, in]), dtypes, names and order; then the members of each paired layer.

Only things of one signature (structure; the multiset of member shapes) can pair, so each group
of one signature is its own assignment, solved whole with scipy's linear_sum_assignment (the
Hungarian method), never greedily: a checkpoint of 5000 alike variables is one 2500 x 2500 problem,
not 25 million Python comparisons. A pair that another pair of its group could swap with at no
cost in name evidence is flagged: only order chose it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TypeVar

from ..cells.model import RNN
from ..entry import TensorEntry
from ..errors import UnsupportedError
from .names import leaf, tokens

S = TypeVar("S")

# A name counts more than order; order alone still separates look-alikes (flagged).
_NAME_WEIGHT, _ORDER_WEIGHT = 2.0, 0.3
# Two pairings whose name evidence differs by less than this are a guess between look-alikes.
_TIE = 0.05
# The largest group of look-alikes solved at once (its score matrix is this squared, in floats).
MAX_GROUP = 4000

_KERNELS = {"kernel", "weights", "matrix"}  # a dense layer's matrix [in, out] in TF and Keras
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
    return _fits(src.name.rpartition("/")[2], src.shape, src.dtype, leaf(dst.name), dst.shape, dst.dtype,
                 src_fw, dst_fw)  # fmt: skip


def _fits(
    src_leaf: str,
    src_shape: tuple[int, ...],
    src_dtype: str,
    dst_leaf: str,
    dst_shape: tuple[int, ...],
    dst_dtype: str,
    src_fw: str,
    dst_fw: str,
) -> bool | None:
    if src_dtype != dst_dtype:
        return None
    linear = (src_fw in _ROW_MAJOR) != (dst_fw in _ROW_MAJOR) and len(src_shape) == 2
    if linear and (
        (src_leaf in _KERNELS and dst_leaf == "weight") or (src_leaf == "weight" and dst_leaf in _KERNELS)
    ):
        return True if dst_shape == src_shape[::-1] else None
    return False if dst_shape == src_shape else None


def pair_rnns(sources: Sequence[RNN], targets: Sequence[RNN]) -> list[Pair]:
    """Each target RNN's source RNN, by structure, then scope names, then order."""

    def structure(r: RNN) -> Hashable:
        return (r.kind, r.input_size, r.units, r.layers, r.bidirectional, r.proj)

    return _assign(sources, targets, lambda r: r.scope or "(root)", structure, "structure")


def pair_tensors(
    sources: Sequence[TensorEntry], targets: Sequence[TensorEntry], src_fw: str, dst_fw: str
) -> list[Pair]:
    """Each target weight's source weight: layers first (module docstring), then their members."""
    src_layers, dst_layers = _layers(sources), _layers(targets)

    @cache
    def members(a: tuple, b: tuple) -> tuple[tuple[int, int, bool], ...] | None:
        """(source member, target member, transposed) of two layers' member patterns, or None."""
        if len(a) != len(b):
            return None
        options = [[_fits(*x, *y, src_fw, dst_fw) for y in b] for x in a]
        chosen: list[tuple[int, int, bool]] = []
        taken: set[int] = set()
        for i, row in enumerate(options):  # members of one layer differ in name: take the likeliest
            ranked = sorted((j for j, f in enumerate(row) if f is not None and j not in taken),
                            key=lambda j: (tokens(a[i][0]) != tokens(b[j][0]), j))  # fmt: skip
            if not ranked:
                return None
            chosen.append((i, ranked[0], bool(row[ranked[0]])))
            taken.add(ranked[0])
        return tuple(chosen)

    def pattern(layer: list[TensorEntry]) -> tuple:
        return tuple((leaf(e.name), e.shape, e.dtype) for e in layer)

    layer_pairs = _assign(
        list(src_layers),
        list(dst_layers),
        lambda k: k,
        lambda k: _signature(src_layers[k]),
        "shapes of the layer's tensors",
        target_signature=lambda k: _signature(dst_layers[k]),
        patterns=(
            lambda k: pattern(src_layers[k]),
            lambda k: pattern(dst_layers[k]),
            lambda a, b: members(a, b) is not None,
        ),
    )
    pairs = []
    for layer in layer_pairs:
        a, b = src_layers[layer.source], dst_layers[layer.target]
        for i, j, transpose in members(pattern(a), pattern(b)) or ():
            pairs.append(Pair(a[i].name, b[j].name, transpose, layer.score, layer.how, layer.ambiguous))
    return pairs


def _layers(entries: Sequence[TensorEntry]) -> dict[str, list[TensorEntry]]:
    """Tensors by the scope they sit in (`output` for output/kernel and output/bias); a tensor at
    the root (a bare `embedding` variable) is a layer of its own."""
    layers: dict[str, list[TensorEntry]] = {}
    for entry in entries:
        scope = entry.name.rpartition("/")[0] or entry.name
        layers.setdefault(scope, []).append(entry)
    return layers


def _signature(layer: list[TensorEntry]) -> Hashable:
    """What two layers that could pair have in common whichever framework: each member's dtype
    and shape, a matrix's dimensions in either order (it may be transposed on the way)."""
    return tuple(sorted((e.dtype, tuple(sorted(e.shape)) if len(e.shape) == 2 else e.shape) for e in layer))


# How to tell, within a group, which items fit: (pattern of a source, pattern of a target, whether
# two patterns fit); each distinct pair of patterns is judged once.
Patterns = tuple[Callable[[S], Hashable], Callable[[S], Hashable], Callable[[Hashable, Hashable], bool]]


def _assign(
    sources: Sequence[S],
    targets: Sequence[S],
    name: Callable[[S], str],
    signature: Callable[[S], Hashable],
    basis: str,
    *,
    target_signature: Callable[[S], Hashable] | None = None,
    patterns: Patterns | None = None,
) -> list[Pair]:
    """Pairs between `sources` and `targets`, solved one signature group at a time."""
    groups: dict[Hashable, tuple[list[int], list[int]]] = {}
    for i, s in enumerate(sources):
        groups.setdefault(signature(s), ([], []))[0].append(i)
    for j, t in enumerate(targets):
        key = (target_signature or signature)(t)
        if key in groups:
            groups[key][1].append(j)
    pairs: list[Pair] = []
    for rows, cols in groups.values():
        if rows and cols:
            pairs += _solve([sources[i] for i in rows], [targets[j] for j in cols], name, patterns, basis)
    return pairs


def _solve(
    sources: list[S], targets: list[S], name: Callable[[S], str], patterns: Patterns | None, basis: str
) -> list[Pair]:
    """One group: the assignment with the best name and order evidence, and its look-alikes."""
    import numpy as np

    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:
        raise UnsupportedError(
            "align solves its pairings with scipy, which is not installed: pip install 'ckptmap[align]'."
        ) from None
    if max(len(sources), len(targets)) > MAX_GROUP:
        raise UnsupportedError(
            f"align: {len(sources)} source and {len(targets)} target tensors alike in shape are more "
            f"than {MAX_GROUP} to pair at once; align one scope of the model at a time."
        )
    ok = np.ones((len(sources), len(targets)), dtype=bool)
    if patterns is not None:
        of_source, of_target, fit = patterns
        ids_s: dict[Hashable, int] = {}
        ids_t: dict[Hashable, int] = {}
        row = np.array([ids_s.setdefault(of_source(x), len(ids_s)) for x in sources])
        col = np.array([ids_t.setdefault(of_target(x), len(ids_t)) for x in targets])
        table = np.array([[fit(a, b) for b in ids_t] for a in ids_s], dtype=bool)
        ok = table[np.ix_(row, col)]
    names = _similarity([name(s) for s in sources], [name(t) for t in targets])
    rank_i = np.cumsum(ok, axis=0) - ok  # the k-th source that fits this target...
    rank_j = np.cumsum(ok, axis=1) - ok  # ...against the k-th target that fits this source
    score = 1 + _NAME_WEIGHT * names + _ORDER_WEIGHT / (1 + np.abs(rank_i - rank_j))
    score[~ok] = -1e9
    rows, cols = linear_sum_assignment(-score)
    keep = ok[rows, cols]
    rows, cols = rows[keep], cols[keep]
    # A swap of two chosen pairs that both still fit, losing less than _TIE of name evidence.
    kept = names[rows, cols]
    cross = names[np.ix_(rows, cols)]  # [a, b]: source of pair a with the target of pair b
    swappable = ok[np.ix_(rows, cols)] & ok[np.ix_(rows, cols)].T
    gain = kept[:, None] + kept[None, :] - cross - cross.T
    close = swappable & (gain < _TIE)
    np.fill_diagonal(close, False)
    pairs = []
    for a, (i, j) in enumerate(zip(rows, cols, strict=True)):
        how = f"{basis}, names {names[i, j]:.2f} alike"
        partners = np.flatnonzero(close[a])
        if partners.size:
            other = f"{name(sources[rows[partners[0]]])} -> {name(targets[cols[partners[0]]])}"
            how = f"{basis}; could swap with {other}: only order decided"
        pairs.append(
            Pair(name(sources[i]), name(targets[j]), False, float(score[i, j]), how, bool(partners.size))
        )
    return pairs


def _similarity(a: list[str], b: list[str]):  # -> np.ndarray
    """Jaccard overlap of every name of `a` with every name of `b` (names.tokens), as a matrix."""
    import numpy as np
    from scipy.sparse import csr_matrix

    vocabulary: dict[str, int] = {}
    ta, tb = [tokens(n) for n in a], [tokens(n) for n in b]

    def incidence(sets: list[frozenset[str]]):
        rows = [r for r, s in enumerate(sets) for _ in s]
        cols = [vocabulary.setdefault(t, len(vocabulary)) for s in sets for t in s]
        return rows, cols

    ra, ca = incidence(ta)
    rb, cb = incidence(tb)
    width = max(len(vocabulary), 1)
    ma = csr_matrix((np.ones(len(ra), np.float32), (ra, ca)), shape=(len(a), width))
    mb = csr_matrix((np.ones(len(rb), np.float32), (rb, cb)), shape=(len(b), width))
    inter = (ma @ mb.T).toarray()
    union = (
        np.array([len(s) for s in ta], np.float32)[:, None]
        + np.array([len(s) for s in tb], np.float32)[None, :]
    )
    union -= inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
