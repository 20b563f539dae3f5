"""Word lists with frequencies for the character model: the seed toy, English from `wordfreq`, or a file.

A corpus is a list of distinct lowercase words with positive weights (frequencies or counts), plus a
name and the sha256 of its canonical text ("word<TAB>weight" lines, in corpus order), which the
manifest records so a model can be traced to the exact list it learned.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import torch

SEED_WORDS = ("hello", "green", "start")
ENGLISH_PATTERN = re.compile(r"[a-z]+(?:'[a-z]+)*")  # letters, inner apostrophes ("don't"); no digits, no dots


@dataclass(frozen=True)
class WordCorpus:
    name: str
    words: list[str]
    weights: list[float]
    source: str  # where it came from (package and version, or file path)

    @property
    def alphabet(self) -> str:
        return "".join(sorted({c for w in self.words for c in w}))

    def canonical_text(self) -> str:
        return "".join(f"{w}\t{f:.6g}\n" for w, f in zip(self.words, self.weights))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_text().encode()).hexdigest()


def seed_corpus() -> WordCorpus:
    """The student report's three words, each once."""
    return WordCorpus("seed", list(SEED_WORDS), [1.0] * len(SEED_WORDS), "the student report")


def english_corpus(size: int) -> WordCorpus:
    """The `size` most frequent English words of `wordfreq` (shipped in the package: no download),
    kept when they are lowercase letters with optional inner apostrophes, weighted by frequency."""
    try:
        import wordfreq
    except ImportError as exc:  # a dependency in pyproject; only a broken install gets here
        raise RuntimeError("the english corpus needs the 'wordfreq' package: pip install wordfreq") from exc
    words = [w for w in wordfreq.top_n_list("en", size) if ENGLISH_PATTERN.fullmatch(w)]
    weights = [wordfreq.word_frequency(w, "en") for w in words]
    kept = [(w, f) for w, f in zip(words, weights) if f > 0]
    version = importlib.metadata.version("wordfreq")
    return WordCorpus(f"wordfreq-en-top{size}", [w for w, _ in kept], [f for _, f in kept],
                      f"wordfreq {version} top_n_list('en', {size}), filtered to {ENGLISH_PATTERN.pattern}")


def file_corpus(path: Path) -> WordCorpus:
    """One word per line, optionally followed by whitespace and a count; lowercased; repeats add up."""
    if not path.is_file():
        raise FileNotFoundError(f"word list {path} does not exist (one word per line, optional count)")
    totals: dict[str, float] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        word = unicodedata.normalize("NFKC", fields[0]).lower()
        try:
            count = float(fields[1]) if len(fields) > 1 else 1.0
        except ValueError:
            raise ValueError(f"{path}:{number}: count {fields[1]!r} is not a number") from None
        if count <= 0:
            raise ValueError(f"{path}:{number}: count must be positive, got {count}")
        totals[word] = totals.get(word, 0.0) + count
    if not totals:
        raise ValueError(f"word list {path} has no words")
    ordered = sorted(totals.items(), key=lambda pair: (-pair[1], pair[0]))
    return WordCorpus(path.name, [w for w, _ in ordered], [c for _, c in ordered], str(path))


def load_corpus(spec: str, size: int) -> WordCorpus:
    """`seed`, `english` (top `size` words of wordfreq), or a path to a word list."""
    if spec == "seed":
        return seed_corpus()
    if spec == "english":
        return english_corpus(size)
    return file_corpus(Path(spec))


@dataclass(frozen=True)
class Split:
    train: list[int]
    dev: list[int]  # early stopping
    test: list[int]  # held-out bits per character: words the model never saw


def split_words(count: int, dev_fraction: float, test_fraction: float, generator: torch.Generator) -> Split:
    """A seeded random split of word indices into train/dev/test (by word, so test words are unseen)."""
    order = torch.randperm(count, generator=generator).tolist()
    n_test, n_dev = int(count * test_fraction), int(count * dev_fraction)
    return Split(train=sorted(order[n_test + n_dev :]), dev=sorted(order[n_test : n_test + n_dev]),
                 test=sorted(order[:n_test]))
