"""The PyTorch model of the real-model corpus, in a module of its own: a whole pickled module names
its class by import path, so it must live somewhere importable (and torch is imported only here)."""

from __future__ import annotations

import torch


class LanguageModel(torch.nn.Module):
    """nn.Embedding -> 2-layer nn.LSTM -> nn.Linear, as a PyTorch language model is written."""

    def __init__(self, vocab: int, dim: int, units: int) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(vocab, dim)
        self.rnn = torch.nn.LSTM(dim, units, num_layers=2, batch_first=True)
        self.fc = torch.nn.Linear(units, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(self.embedding(ids))[0])
