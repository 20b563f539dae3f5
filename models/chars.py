"""Character vocabularies of word-completion models: text <-> token ids, exactly as recorded in a manifest.

A "chars" preset is a plain dict stored under "preprocessing":
{"kind": "chars", "alphabet": "'abc...", "lowercase": true, "unicode_normalization": "NFKC",
 "tokens": ["<pad>", "<s>", "</s>", "'", "a", ...], "pad": 0, "start": 1, "end": 2}.
Every word is encoded as <s> c1 c2 ... cn </s>; the model predicts each next token.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import torch

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
PAD, START, END = 0, 1, 2


class OutOfVocabularyError(ValueError):
    """Text with characters the model was never trained on."""

    def __init__(self, characters: list[str], alphabet: str) -> None:
        shown = ", ".join(repr(c) for c in characters)
        super().__init__(f"characters not in the model's vocabulary: {shown}; valid: {alphabet!r}")
        self.characters = characters


def chars_preset(alphabet: str, *, lowercase: bool = True) -> dict[str, Any]:
    """The preprocessing record of a character model over `alphabet` (sorted, deduplicated)."""
    letters = "".join(sorted(set(alphabet)))
    if not letters:
        raise ValueError("a character vocabulary needs at least one character")
    return {
        "kind": "chars",
        "alphabet": letters,
        "lowercase": lowercase,
        "unicode_normalization": "NFKC",
        "tokens": [*SPECIAL_TOKENS, *letters],
        "pad": PAD,
        "start": START,
        "end": END,
    }


class CharCodec:
    """Normalises, checks and encodes text per a "chars" preset; decodes token ids back to text."""

    def __init__(self, preset: dict[str, Any]) -> None:
        if preset.get("kind") != "chars":
            raise ValueError(f"CharCodec needs a preset of kind 'chars', got {preset.get('kind')!r}")
        self.preset = preset
        self.tokens: list[str] = list(preset["tokens"])
        self.alphabet: str = preset["alphabet"]
        self.pad, self.start, self.end = int(preset["pad"]), int(preset["start"]), int(preset["end"])
        self.index = {token: i for i, token in enumerate(self.tokens) if i not in (self.pad, self.start, self.end)}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def normalize(self, text: str) -> str:
        """The form the model was trained on: Unicode-normalised, lowercased when the preset says so."""
        form = self.preset.get("unicode_normalization")
        if form:
            text = unicodedata.normalize(form, text)
        return text.lower() if self.preset.get("lowercase", True) else text

    def unknown_characters(self, text: str) -> list[str]:
        """Characters of normalised `text` outside the vocabulary, in order of first appearance."""
        return list(dict.fromkeys(c for c in self.normalize(text) if c not in self.index))

    def encode(self, text: str, *, end: bool = False) -> list[int]:
        """<s> + the characters of normalised `text` (+ </s> when `end`); raises `OutOfVocabularyError`."""
        normalized = self.normalize(text)
        unknown = self.unknown_characters(normalized)
        if unknown:
            raise OutOfVocabularyError(unknown, self.alphabet)
        ids = [self.start, *(self.index[c] for c in normalized)]
        return [*ids, self.end] if end else ids

    def decode(self, ids: list[int]) -> str:
        """Characters of `ids`, skipping special tokens."""
        return "".join(self.tokens[i] for i in ids if i not in (self.pad, self.start, self.end))

    def batch(self, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded B x (max_len + 2) ids of <s> word </s>, and each row's length (for packing)."""
        encoded = [self.encode(word, end=True) for word in words]
        lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
        ids = torch.full((len(words), int(lengths.max()) if encoded else 0), self.pad, dtype=torch.long)
        for row, sequence in enumerate(encoded):
            ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        return ids, lengths
