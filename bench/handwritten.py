"""The hand-written conversions ckptmap is compared with: what people write without it.

    python bench/handwritten.py tf1-to-torch PREFIX OUT.pt
    python bench/handwritten.py torch-to-safetensors IN.pt OUT.safetensors
    python bench/handwritten.py torch-to-tf1 IN.pt OUT_DIR/model.ckpt
    python bench/handwritten.py keras-to-torch IN.weights.h5 OUT.pt
    python bench/handwritten.py list-torch IN.pt [--mmap]

Each does the same work as the matching `ckptmap convert` (same names, same LSTM gate reordering,
forget_bias 1.0 folded into a TF1 bias, optimizer slots dropped), the usual way: the framework's own
reader, numpy for the gate shuffles, the framework's own writer. Like most such scripts they hold
the whole model in memory before writing it. For Keras the reader is h5py: Keras itself loads a
`.weights.h5` only into a model built first, which a conversion script does not have.
"""

from __future__ import annotations

import os
import re
import sys
from collections import OrderedDict

import numpy as np

FORGET_BIAS = 1.0
TF1_LSTM = re.compile(r"(?:(.*)/)?rnn/(?:multi_rnn_cell/cell_(\d+)/)?lstm_cell/(kernel|bias)")
TORCH_LSTM = re.compile(r"(?:(.*)\.)?weight_ih_l(\d+)")
BOOKKEEPING = ("global_step", "beta1_power", "beta2_power")


def tf1_to_torch(prefix: str, out: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import torch

    reader = tf.train.load_checkpoint(prefix)
    state = OrderedDict()
    for name in sorted(reader.get_variable_to_shape_map()):
        if name.endswith(("/Adam", "/Adam_1")) or name in BOOKKEEPING:
            continue
        value = reader.get_tensor(name)
        m = TF1_LSTM.fullmatch(name)
        if m is None:
            state[name.replace("/", ".")] = torch.from_numpy(value)
            continue
        scope, layer, role = m.group(1), int(m.group(2) or 0), m.group(3)
        key = f"{scope}." if scope else ""
        # TF1 LSTMCell gates are i, j (candidate), f, o; nn.LSTM's are i, f, g (candidate), o.
        i, j, f, o = np.split(value, 4, axis=-1)
        if role == "kernel":
            kernel = np.concatenate([i, f, j, o], axis=1)
            inputs = kernel.shape[0] - kernel.shape[1] // 4
            state[f"{key}weight_ih_l{layer}"] = torch.from_numpy(np.ascontiguousarray(kernel[:inputs].T))
            state[f"{key}weight_hh_l{layer}"] = torch.from_numpy(np.ascontiguousarray(kernel[inputs:].T))
        else:
            state[f"{key}bias_ih_l{layer}"] = torch.from_numpy(np.concatenate([i, f + FORGET_BIAS, j, o]))
            state[f"{key}bias_hh_l{layer}"] = torch.zeros(value.shape[0])
    torch.save(state, out)


def torch_to_safetensors(path: str, out: str) -> None:
    import torch
    from safetensors.torch import save_file

    state = torch.load(path, map_location="cpu", weights_only=True)
    save_file(state, out, metadata={"format": "pt"})


def torch_to_tf1(path: str, out: str) -> None:
    import torch

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    state = torch.load(path, map_location="cpu", weights_only=True)
    values: dict[str, np.ndarray] = {}
    lstm_keys = set()
    layers: dict[str, int] = {}
    for key in state:
        m = TORCH_LSTM.fullmatch(key)
        if m:
            layers[m.group(1) or ""] = max(layers.get(m.group(1) or "", 0), int(m.group(2)) + 1)
    for module, count in layers.items():
        prefix = f"{module}." if module else ""
        scope = f"{module}/rnn/" if module else "rnn/"
        for k in range(count):
            names = [f"{prefix}{p}_l{k}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            w_ih, w_hh, b_ih, b_hh = (state[n].numpy() for n in names)
            lstm_keys.update(names)
            # nn.LSTM gates are i, f, g, o; TF1 LSTMCell's are i, j (= g), f, o.
            i, f, g, o = np.split(np.concatenate([w_ih, w_hh], axis=1).T, 4, axis=1)
            cell = f"{scope}multi_rnn_cell/cell_{k}/lstm_cell" if count > 1 else f"{scope}lstm_cell"
            values[f"{cell}/kernel"] = np.concatenate([i, g, f, o], axis=1)
            i, f, g, o = np.split(b_ih + b_hh, 4)
            values[f"{cell}/bias"] = np.concatenate([i, g, f - FORGET_BIAS, o])
    for key, tensor in state.items():
        if key not in lstm_keys:
            values[key.replace(".", "/")] = tensor.numpy()
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        variables = {
            name: v1.get_variable(name, value.shape, tf.as_dtype(value.dtype), v1.zeros_initializer())
            for name, value in values.items()
        }
        saver = v1.train.Saver(variables)
        with v1.Session() as sess:
            for name, variable in variables.items():
                variable.load(values[name], sess)
            saver.save(sess, out, write_meta_graph=False)


def keras_to_torch(path: str, out: str) -> None:
    """A Keras 3 `.weights.h5` read with h5py: each LSTM layer's `cell/vars/0..2` (kernel,
    recurrent kernel, bias) become nn.LSTM's, other layers' `vars/<i>` pass through."""
    import h5py
    import torch

    state = OrderedDict()
    with h5py.File(path, "r") as f:
        for layer, group in f["layers"].items():
            if "cell" in group:
                # Keras' LSTM gates are i, f, c, o: nn.LSTM's order, so transposes only.
                kernel, recurrent, bias = (group[f"cell/vars/{i}"][()] for i in range(3))
                state[f"{layer}.weight_ih_l0"] = torch.from_numpy(np.ascontiguousarray(kernel.T))
                state[f"{layer}.weight_hh_l0"] = torch.from_numpy(np.ascontiguousarray(recurrent.T))
                state[f"{layer}.bias_ih_l0"] = torch.from_numpy(bias)
                state[f"{layer}.bias_hh_l0"] = torch.zeros(bias.shape[0])
            else:
                for i, value in sorted(group["vars"].items(), key=lambda kv: int(kv[0])):
                    state[f"{layer}.{i}"] = torch.from_numpy(value[()])
    torch.save(state, out)


def list_torch(path: str, mmap: bool) -> None:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    for key, tensor in state.items():
        print(key, list(tensor.shape), tensor.dtype)


def main() -> None:
    what, *args = sys.argv[1:]
    if what == "tf1-to-torch":
        tf1_to_torch(*args)
    elif what == "torch-to-safetensors":
        torch_to_safetensors(*args)
    elif what == "torch-to-tf1":
        torch_to_tf1(*args)
    elif what == "keras-to-torch":
        keras_to_torch(*args)
    elif what == "list-torch":
        list_torch(args[0], "--mmap" in args)
    else:
        raise SystemExit(f"unknown conversion {what!r}")


if __name__ == "__main__":
    main()
