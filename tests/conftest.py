"""Shared test setup.

TF1 cells (tf.compat.v1.nn.rnn_cell.*) need tf-keras, selected by TF_USE_LEGACY_KERAS=1 before
TensorFlow is first imported; setting it here, before any test module imports TensorFlow, makes
that true for the whole run.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
