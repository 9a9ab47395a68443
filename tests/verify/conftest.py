"""Sources for verification tests, written by the real frameworks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.frameworks import build_tf1_rnn, tf1, torch_rnn

INPUT, UNITS = 3, 5
LEGACY = {"kernel": "weights", "bias": "biases"}  # TF 1.0-1.1 names of cell variables


def tf1_source(prefix: Path, kind: str, *, legacy: bool = False, seed: int = 0, **options) -> Path:
    """A TF1 checkpoint saved by tf's Saver, with distinct values everywhere (biases included);
    with `legacy`, under the names TF 1.0 gave the same variables."""
    tf, v1 = tf1()
    rng = np.random.default_rng(seed)
    with tf.Graph().as_default(), v1.Session() as sess:
        build_tf1_rnn(kind, INPUT, UNITS, **options)
        sess.run(v1.global_variables_initializer())
        names = {}
        for v in v1.global_variables():
            v.load(rng.uniform(-0.5, 0.5, v.shape).astype(np.float32), sess)
            scope, leaf = v.op.name.rsplit("/", 1)
            names[f"{scope}/{LEGACY[leaf]}" if legacy and leaf in LEGACY else v.op.name] = v
        v1.train.Saver(names).save(sess, str(prefix), write_meta_graph=False)
    return prefix.parent


def torch_source(path: Path, kind: str, *, seed: int = 0, zero_b_hn: bool = False, **options) -> Path:
    """A state dict from torch.save; `zero_b_hn` zeroes the GRU's b_hn, which TF1 cannot hold."""
    import torch

    torch.manual_seed(seed)
    module = torch_rnn(kind, INPUT, UNITS, **options)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.uniform_(-0.5, 0.5)
            if zero_b_hn and name.startswith("bias_hh"):
                p[2 * UNITS :] = 0
    torch.save(module.state_dict(), path)
    return path
