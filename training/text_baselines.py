"""Baselines for word completion and their shared measurements.

- `FrequencyTrie`: exact prefix -> most frequent known words; the ceiling for known words.
- `CharTrigram`: a character trigram model with interpolated Witten-Bell smoothing.
- `draw_prefix_cases` / `hit_rates`: completion hit rate (top-1, top-k) from prefixes of words drawn by frequency.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

END = "\x03"  # end-of-word symbol of the trigram (outside any alphabet)
START = "\x02"


class FrequencyTrie:
    """Prefix tree over weighted words; each node keeps its `keep` most frequent completions (ties: alphabetical)."""

    def __init__(self, words: Sequence[str], weights: Sequence[float], keep: int = 10) -> None:
        self.root: dict = {}
        self.keep = keep
        for word, _ in sorted(zip(words, weights), key=lambda pair: (-pair[1], pair[0])):
            node = self.root
            self._note(node, word)
            for char in word:
                node = node.setdefault(char, {})
                self._note(node, word)

    def _note(self, node: dict, word: str) -> None:
        best = node.setdefault("", [])  # "" is never a character, so it cannot clash with a child
        if len(best) < self.keep:
            best.append(word)

    def complete(self, prefix: str, k: int) -> list[str]:
        """The (at most) `k` most frequent known words starting with `prefix` (the prefix itself included)."""
        if k > self.keep:
            raise ValueError(f"this trie keeps {self.keep} completions per prefix; asked for {k}")
        node = self.root
        for char in prefix:
            if char not in node:
                return []
            node = node[char]
        return node[""][:k]


class CharTrigram:
    """P(c | two previous characters) with interpolated Witten-Bell smoothing down to a uniform distribution.

    Words are padded as START START w1 ... wn END; weights scale each word's counts.
    """

    def __init__(self, words: Sequence[str], alphabet: str, weights: Sequence[float] | None = None) -> None:
        self.symbols = sorted(set(alphabet)) + [END]
        self.counts: list[dict[str, dict[str, float]]] = [defaultdict(lambda: defaultdict(float)) for _ in range(3)]
        for word, weight in zip(words, weights if weights is not None else [1.0] * len(words)):
            padded = START * 2 + word + END
            for i in range(2, len(padded)):
                for order in range(3):  # order 0: unigram, 1: bigram, 2: trigram context length
                    self.counts[order][padded[i - order : i]][padded[i]] += weight
        self.totals = [{ctx: sum(f.values()) for ctx, f in table.items()} for table in self.counts]

    def prob(self, context: str, char: str) -> float:
        """P(char | last two characters of `context`, START-padded)."""
        history = (START * 2 + context)[-2:]
        p = 1.0 / len(self.symbols)
        for order in range(3):
            ctx = history[len(history) - order :] if order else ""
            followers = self.counts[order].get(ctx)
            if not followers:
                continue
            total, distinct = self.totals[order][ctx], len(followers)
            p = (followers.get(char, 0.0) + distinct * p) / (total + distinct)
        return p

    def word_bits(self, word: str) -> float:
        """-log2 P(word END)."""
        return -sum(math.log2(self.prob(word[:i], c)) for i, c in enumerate(word + END))


def bits_per_char(total_bits: float, words: Sequence[str]) -> float:
    """Bits per predicted symbol: every character and the end of each word."""
    return total_bits / sum(len(w) + 1 for w in words)


def draw_prefix_cases(words: Sequence[str], weights: Sequence[float], prefix_length: int, count: int,
                      seed: int) -> list[tuple[str, str]]:
    """`count` (prefix, target word) pairs: targets drawn with probability proportional to weight among
    words longer than `prefix_length`, the prefix being their first `prefix_length` characters."""
    eligible = [i for i, w in enumerate(words) if len(w) > prefix_length]
    if not eligible:
        return []
    p = np.asarray([weights[i] for i in eligible], dtype=np.float64)
    picks = np.random.default_rng(seed).choice(len(eligible), size=count, replace=True, p=p / p.sum())
    return [(words[eligible[i]][:prefix_length], words[eligible[i]]) for i in picks]


def hit_rates(cases: Sequence[tuple[str, str]], complete: Callable[[str], list[str]],
              ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Fraction of cases whose target is among the first k completions, per k; `complete` runs once per prefix."""
    cache: dict[str, list[str]] = {}
    hits = dict.fromkeys(ks, 0)
    for prefix, target in cases:
        if prefix not in cache:
            cache[prefix] = complete(prefix)
        for k in ks:
            hits[k] += target in cache[prefix][:k]
    return {f"top{k}": round(hits[k] / max(len(cases), 1), 4) for k in ks}
