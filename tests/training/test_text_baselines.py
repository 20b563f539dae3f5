"""The completion baselines: the frequency trie, the smoothed character trigram and the hit-rate protocol."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from training.text_baselines import (END, CharTrigram, FrequencyTrie, bits_per_char, draw_prefix_cases, hit_rates)

WORDS = ["the", "they", "there", "then", "than", "that", "this", "thing"]
WEIGHTS = [100.0, 40.0, 30.0, 20.0, 20.0, 50.0, 45.0, 5.0]


def test_trie_ranks_by_frequency_then_alphabet_and_includes_the_prefix_itself():
    trie = FrequencyTrie(WORDS, WEIGHTS, keep=5)
    assert trie.complete("th", 3) == ["the", "that", "this"]
    assert trie.complete("the", 5) == ["the", "they", "there", "then"]
    assert trie.complete("tha", 5) == ["that", "than"]
    assert trie.complete("x", 5) == [] and trie.complete("", 1) == ["the"]
    assert FrequencyTrie(["b", "a"], [1.0, 1.0]).complete("", 2) == ["a", "b"]  # ties: alphabetical
    with pytest.raises(ValueError, match="keeps 5"):
        trie.complete("th", 6)


@pytest.mark.parametrize("context", ["", "t", "th", "the", "zq", "thx"])
def test_trigram_is_a_distribution_with_mass_on_unseen_symbols(context):
    model = CharTrigram(WORDS, "abcdefghijklmnopqrstuvwxyz")
    probabilities = [model.prob(context, c) for c in model.symbols]
    assert math.isclose(sum(probabilities), 1.0, rel_tol=1e-9)
    assert min(probabilities) > 0


def test_trigram_prefers_what_it_saw_and_weights_count():
    model = CharTrigram(WORDS, "abcdefghijklmnopqrstuvwxyz")
    assert model.word_bits("the") < model.word_bits("tqe") < model.word_bits("qqqqq")
    assert model.prob("th", "e") > model.prob("th", "a")  # e follows "th" in 4 words, a in 2
    weighted = CharTrigram(["ab", "ac"], "abc", weights=[9.0, 1.0])
    assert weighted.prob("a", "b") > 5 * weighted.prob("a", "c")
    assert weighted.prob("ab", END) > weighted.prob("ab", "a")


def test_bits_per_char_counts_the_end_of_each_word():
    assert bits_per_char(12.0, ["ab", "c"]) == 12.0 / 5


def test_prefix_cases_are_drawn_by_frequency_from_longer_words_reproducibly():
    cases = draw_prefix_cases(WORDS, WEIGHTS, 3, 4000, seed=1)
    assert cases == draw_prefix_cases(WORDS, WEIGHTS, 3, 4000, seed=1)
    assert all(len(target) > 3 and target.startswith(prefix) for prefix, target in cases)
    counts = Counter(target for _, target in cases)
    assert "the" not in counts and counts["that"] > 1.5 * counts["there"] > 5 * counts["thing"]
    assert draw_prefix_cases(["a"], [1.0], 2, 10, seed=0) == []


def test_hit_rates_top1_and_top5_and_one_call_per_prefix():
    calls: list[str] = []

    def completer(prefix: str) -> list[str]:
        calls.append(prefix)
        return {"th": ["the", "that", "this", "they", "there"], "ca": ["cat"]}[prefix]

    cases = [("th", "the"), ("th", "there"), ("th", "thing"), ("ca", "cat")]
    assert hit_rates(cases, completer) == {"top1": 0.5, "top5": 0.75}
    assert sorted(calls) == ["ca", "th"]
