"""How alike two tensor names are, across frameworks: the tokens of each name's path, with each
framework's word for the same thing made one (`kernel` and `weight`, `embeddings` and `emb`).

Scores are Jaccard overlaps of token sets, 0 to 1: evidence for a pair, never proof (the pairing
flags pairs that only order decided, pairing.py).
"""

from __future__ import annotations

import re

_SPLIT = re.compile(r"[/._\-\s]+|(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])")
# Words that name the same thing in TF, Keras and PyTorch code.
_SYNONYMS = {
    "kernel": "weight",
    "weights": "weight",
    "matrix": "weight",
    "biases": "bias",
    "embeddings": "embedding",
    "embed": "embedding",
    "emb": "embedding",
    "dense": "linear",
    "fc": "linear",
    "proj": "projection",
    "enc": "encoder",
    "encode": "encoder",
    "dec": "decoder",
    "decode": "decoder",
    "src": "source",
    "tgt": "target",
    "out": "output",
    "attn": "attention",
    "att": "attention",
    "fw": "forward",
    "bw": "backward",
    "reverse": "backward",
}
# Words the frameworks put into every name of a kind, which say nothing about which tensor it is.
_NOISE = {"", "cell", "rnn", "multi", "layer", "with", "variable", "value", "attributes"}


def tokens(name: str) -> frozenset[str]:
    """`seq2seq/encoder/Dense_1/kernel` -> {seq, 2, encoder, linear, 1, weight} and each whole part
    of the path ({seq2seq, encoder, dense_1, kernel}), lower case: words carry the meaning across
    frameworks, whole parts tell `dense` from `dense_1` apart."""
    words = (w.lower() for w in _SPLIT.split(name))
    parts = {f"/{p.lower()}" for p in name.split("/") if p}
    return frozenset(_SYNONYMS.get(w, w) for w in words if w not in _NOISE) | parts


def similarity(a: str, b: str) -> float:
    """The share of the two names' tokens that both have (0: nothing in common, 1: the same)."""
    ta, tb = tokens(a), tokens(b)
    return len(ta & tb) / len(ta | tb) if ta | tb else 0.0


def leaf(name: str) -> str:
    """The last part of a canonical name: `kernel`, `weight`, `embeddings`."""
    return name.rpartition("/")[2]
