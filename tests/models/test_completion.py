"""The character codec, the CharRNN network and decoding (beam, greedy, sample), on real networks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from models.chars import CharCodec, OutOfVocabularyError, chars_preset
from models.completion import complete, word_log_probs
from models.networks import build_network
from models.preprocessing import example_input
from models.registry import ModelRegistry, layer_summary
from models.runtime import load_model

CODEC = CharCodec(chars_preset("ab"))


@pytest.fixture(scope="module")
def seed_model():
    return load_model(ModelRegistry(), "rnn", "seed", torch.device("cpu"))


def tiny_network(cell: str, seed: int = 0, embedding_dim: int = 4) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("char-rnn", vocab_size=CODEC.vocab_size, embedding_dim=embedding_dim, hidden_size=8,
                         num_layers=2, cell=cell).eval()


def test_codec_normalises_encodes_and_decodes():
    codec = CharCodec(chars_preset("olleh'"))
    assert codec.alphabet == "'ehlo" and codec.tokens[:3] == ["<pad>", "<s>", "</s>"]
    ids = codec.encode("HEL", end=True)
    assert ids[0] == codec.start and ids[-1] == codec.end and codec.decode(ids) == "hel"
    assert codec.unknown_characters("Hex1x") == ["x", "1"]
    with pytest.raises(OutOfVocabularyError, match="'x'"):
        codec.encode("hex")
    tokens, lengths = codec.batch(["he", "hello"])
    assert tokens.shape == (2, 7) and lengths.tolist() == [4, 7] and tokens[0, 4:].tolist() == [codec.pad] * 3


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_packed_batch_matches_one_word_at_a_time(cell):
    network = tiny_network(cell, embedding_dim=0 if cell == "rnn" else 4)
    tokens, lengths = CODEC.batch(["ab", "babba", "a"])
    with torch.no_grad():
        batched, _ = network(tokens, lengths=lengths)
        for row, length in enumerate(lengths.tolist()):
            alone, _ = network(tokens[row : row + 1, :length])
            torch.testing.assert_close(batched[row, :length], alone[0])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_wide_beam_finds_the_exhaustive_top_words(cell):
    network = tiny_network(cell, seed=3)
    log_probs = {}
    for length in range(0, 4):  # every word over "ab" of at most 3 characters after the prefix "a"
        for rest in itertools.product("ab", repeat=length):
            word = "a" + "".join(rest)
            total, _ = word_log_probs(network, CODEC, [word])
            prefix_total, _ = word_log_probs(network, CODEC, ["a"])
            # ln P(word </s> | a) = ln P(<s> word </s>) - ln P(a | <s>)
            log_probs[word] = float(total) - (float(prefix_total) - _end_log_prob(network, "a"))
    found = complete(network, CODEC, "a", num_completions=4, max_length=4, beam_width=16)
    expected = sorted((w for w in log_probs), key=lambda w: -log_probs[w])[:4]
    assert [c.text for c in found] == expected
    for c in found:
        assert c.ended and math.isclose(c.log_prob, log_probs[c.text], abs_tol=1e-4)


def _end_log_prob(network: torch.nn.Module, prefix: str) -> float:
    with torch.no_grad():
        logits, _ = network(torch.tensor([CODEC.encode(prefix)]))
        logits = logits[0, -1].clone()
        logits[[CODEC.pad, CODEC.start]] = -math.inf
        return float(torch.log_softmax(logits, dim=0)[CODEC.end])


def test_seed_model_reproduces_the_report(seed_model):
    codec = CharCodec(seed_model.preprocessing)
    for prefix, word in {"h": "hello", "g": "green", "s": "start"}.items():
        for strategy in ("greedy", "beam"):
            best = complete(seed_model.network, codec, prefix, strategy=strategy, num_completions=3)[0]
            assert best.text == word and best.ended and best.probability > 0.5


def test_beam_probabilities_are_the_models_and_ordered(seed_model):
    codec = CharCodec(seed_model.preprocessing)
    found = complete(seed_model.network, codec, "h", num_completions=5, max_length=8)
    probabilities = [c.probability for c in found]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    whole, _ = word_log_probs(seed_model.network, codec, ["hello"])
    prefix_log_prob = float(whole) - found[0].log_prob  # ln P(h | <s>) must not depend on the word
    other, _ = word_log_probs(seed_model.network, codec, [found[1].text])
    assert math.isclose(float(other) - found[1].log_prob, prefix_log_prob, abs_tol=1e-4)


def test_sampling_is_reproducible_and_cold_sampling_is_greedy(seed_model):
    codec = CharCodec(seed_model.preprocessing)
    a = complete(seed_model.network, codec, "g", strategy="sample", num_completions=5, seed=7, temperature=2.0)
    b = complete(seed_model.network, codec, "g", strategy="sample", num_completions=5, seed=7, temperature=2.0)
    assert a == b
    cold = complete(seed_model.network, codec, "g", strategy="sample", num_completions=3, seed=1, temperature=0.01)
    assert [c.text for c in cold] == ["green"]
    top1 = complete(seed_model.network, codec, "s", strategy="sample", num_completions=4, top_k=1, seed=2)
    assert [c.text for c in top1] == ["start"]


def test_max_length_cuts_words_and_says_so(seed_model):
    codec = CharCodec(seed_model.preprocessing)
    for strategy in ("greedy", "sample"):
        found = complete(seed_model.network, codec, "h", strategy=strategy, max_length=3, num_completions=1, seed=0)
        assert found[0].text == "hel" and not found[0].ended
    # beam prefers words that end within max_length, however unlikely, and offers cut ones only to fill up
    found = complete(seed_model.network, codec, "h", max_length=2, num_completions=20, beam_width=20)
    ended = [c for c in found if c.ended]
    assert len(found) == 20 and len(ended) == 11 and found[:11] == ended  # "h" and "h?" (10 letters) end
    assert all(len(c.text) == 2 for c in found[11:])
    with pytest.raises(ValueError, match="max_length"):
        complete(seed_model.network, codec, "hel", max_length=3)
    with pytest.raises(ValueError, match="strategy"):
        complete(seed_model.network, codec, "h", strategy="nucleus")


def test_layer_summary_of_a_char_model(seed_model):
    summary = layer_summary(seed_model.network, example_input(seed_model.preprocessing))
    assert [row["type"] for row in summary["layers"]] == ["OneHot", "RNN", "Dropout", "Linear"]
    assert summary["layers"][1]["output_shape"] == [-1, 8, 12]
    assert summary["total_parameters"] == seed_model.manifest.parameters
