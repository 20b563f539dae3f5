"""Character-level language models for word completion: token ids in, next-token logits out."""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
State = Union[Tensor, tuple[Tensor, Tensor], None]  # LSTM state is (h, c); RNN/GRU is h


class OneHot(nn.Module):
    """Token ids (B x T) -> one-hot float vectors (B x T x vocab): the student report's input encoding."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, tokens: Tensor) -> Tensor:
        return nn.functional.one_hot(tokens, self.vocab_size).float()


class CharRNN(nn.Module):
    """Embedding (or one-hot when `embedding_dim` is 0) -> `cell` x `num_layers` -> linear head over the vocabulary.

    `forward(tokens, state=None, lengths=None)` takes B x T token ids and returns (B x T x vocab logits,
    final state). With `lengths` (a batch of padded words) the recurrence runs on a packed sequence,
    so padding never enters the state; without it, `state` carries over between calls (decoding).
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 32, hidden_size: int = 256, num_layers: int = 1,
                 cell: str = "gru", dropout: float = 0.0, pad_index: int = 0) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; valid: {', '.join(CELLS)}")
        self.vocab_size, self.cell, self.num_layers, self.hidden_size = vocab_size, cell, num_layers, hidden_size
        if embedding_dim > 0:
            self.encode: nn.Module = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
            input_size = embedding_dim
        else:
            self.encode, input_size = OneHot(vocab_size), vocab_size
        self.rnn = CELLS[cell](input_size, hidden_size, num_layers=num_layers, batch_first=True,
                               dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: Tensor, state: State = None, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        inputs = self.encode(tokens)
        if lengths is None:
            outputs, state = self.rnn(inputs, state)
        else:
            packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
            packed_out, state = self.rnn(packed, state)
            outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=tokens.shape[1])
        return self.head(self.dropout(outputs)), state


def select_state(state: State, index: Tensor) -> State:
    """The recurrent state of the batch rows `index` (beam search reorders hypotheses with this)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(part.index_select(1, index) for part in state)  # type: ignore[return-value]
    return state.index_select(1, index)


def expand_state(state: State, size: int) -> State:
    """Repeat a batch-of-one state `size` times along the batch dimension."""
    return select_state(state, torch.zeros(size, dtype=torch.long, device=_state_device(state)))


def _state_device(state: State) -> torch.device:
    first = state[0] if isinstance(state, tuple) else state
    return first.device if first is not None else torch.device("cpu")
