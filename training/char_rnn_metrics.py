"""The character model's metrics, each beside its baseline, as recorded in the manifest.

1. Completion hit rate (top-1, top-5) from 2- and 3-letter prefixes of training words drawn by frequency:
   the model's beam-5 completions vs an exact `FrequencyTrie` of the same words (the ceiling for known words).
2. Bits per character on held-out words the model never saw (each word once, the end of word counted as a
   character) vs a Witten-Bell smoothed character trigram trained on the same training words.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from models.chars import CharCodec
from models.completion import complete, word_log_probs
from training.text_baselines import CharTrigram, FrequencyTrie, bits_per_char, draw_prefix_cases, hit_rates

PREFIX_LENGTHS = (2, 3)
SEED_CHECK = {"h": "hello", "g": "green", "s": "start"}


def model_bits_per_char(network: nn.Module, codec: CharCodec, words: Sequence[str]) -> float:
    log_probs, _ = word_log_probs(network, codec, list(words))
    return bits_per_char(-float(log_probs.sum()) / math.log(2), words)


def completion_hit_rates(network: nn.Module, codec: CharCodec, words: Sequence[str], weights: Sequence[float], *,
                         cases: int, seed: int, max_length: int) -> dict[str, Any]:
    """Hit rates of the model (beam 5) and of the frequency trie, per prefix length."""
    trie = FrequencyTrie(words, weights, keep=5)
    network.eval()

    def model_top5(prefix: str) -> list[str]:
        return [c.text for c in complete(network, codec, prefix, strategy="beam", num_completions=5,
                                         max_length=max_length)]

    result: dict[str, Any] = {}
    for length in PREFIX_LENGTHS:
        drawn = draw_prefix_cases(words, weights, length, cases, seed + length)
        result[f"prefix_{length}"] = {
            "cases": len(drawn),
            "distinct_prefixes": len({p for p, _ in drawn}),
            "rnn": hit_rates(drawn, model_top5),
            "trie": hit_rates(drawn, lambda p: trie.complete(p, 5)),
        }
    return result


def held_out_bits(network: nn.Module, codec: CharCodec, train_words: Sequence[str],
                  test_words: Sequence[str]) -> dict[str, Any] | None:
    """Bits per character of the model and of the trigram on `test_words`; None without held-out words."""
    if not test_words:
        return None
    trigram = CharTrigram(train_words, codec.alphabet)
    trigram_bits = bits_per_char(sum(trigram.word_bits(w) for w in test_words), test_words)
    return {"held_out_words": len(test_words), "rnn": round(model_bits_per_char(network, codec, test_words), 4),
            "trigram": round(trigram_bits, 4), "trigram_smoothing": "interpolated Witten-Bell, trained on the "
            "training words each once"}


def seed_check(network: nn.Module, codec: CharCodec) -> dict[str, dict[str, str]]:
    """Greedy and beam-1 completions of h, g, s (the student report's check), where the vocabulary allows."""
    out: dict[str, dict[str, str]] = {}
    for prefix in SEED_CHECK:
        if codec.unknown_characters(prefix):
            continue
        out[prefix] = {strategy: complete(network, codec, prefix, strategy=strategy, num_completions=1,
                                          max_length=20)[0].text for strategy in ("greedy", "beam")}
    return out


def headline(hits: dict[str, Any], bits: dict[str, Any] | None) -> dict[str, float]:
    """Flat scalars for `GET /models/rnn` (each model figure next to its baseline's)."""
    flat: dict[str, float] = {}
    for length in PREFIX_LENGTHS:
        entry = hits[f"prefix_{length}"]
        for k in ("top1", "top5"):
            flat[f"hit_{k}_prefix{length}"] = entry["rnn"][k]
            flat[f"trie_hit_{k}_prefix{length}"] = entry["trie"][k]
    if bits is not None:
        flat["held_out_bits_per_char"] = bits["rnn"]
        flat["trigram_bits_per_char"] = bits["trigram"]
    return flat
