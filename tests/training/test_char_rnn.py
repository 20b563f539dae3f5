"""training.char_rnn: the seed toy is reproduced, a one-epoch english smoke run and a word file register
loadable versions whose manifests carry vocabulary, corpus lineage and metrics beside their baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.chars import CharCodec
from models.completion import complete
from models.registry import ModelRegistry
from models.runtime import load_model
from training.char_rnn import main

SMOKE = ["--epochs", "1", "--samples-per-epoch", "512", "--batch-size", "64", "--eval-cases", "20", "--no-progress"]


def run(tmp_path: Path, *args: str) -> ModelRegistry:
    assert main([*args, "--store", str(tmp_path / "store"), "--out-dir", str(tmp_path / "run")]) == 0
    return ModelRegistry(tmp_path / "store")


def test_seed_corpus_reproduces_the_report_and_takes_the_seed_alias(tmp_path: Path):
    registry = run(tmp_path, "--corpus", "seed", "--no-progress")
    manifest = registry.manifest("rnn", "seed")
    assert manifest.kind == "text-completion" and manifest.serving.default_top_k is None
    assert manifest.architecture.args == {"vocab_size": 13, "embedding_dim": 0, "hidden_size": 12,
                                          "num_layers": 1, "cell": "rnn", "dropout": 0.0, "pad_index": 0}
    config = manifest.training["config"]
    assert (config["optimizer"], config["lr"], config["epochs"]) == ("adam", 0.01, 100)
    assert manifest.metrics["seed_check"] == {p: {"greedy": w, "beam": w}
                                              for p, w in {"h": "hello", "g": "green", "s": "start"}.items()}
    assert "production" not in registry.aliases("rnn")


def test_english_smoke_run_registers_a_loadable_version(tmp_path: Path):
    registry = run(tmp_path, *SMOKE, "--limit", "400", "--cell", "lstm", "--hidden-size", "32", "--promote")
    manifest = registry.manifest("rnn", "production")
    preprocessing = manifest.preprocessing
    assert preprocessing["kind"] == "chars" and preprocessing["lowercase"] and preprocessing["start"] == 1
    assert manifest.labels == preprocessing["tokens"]
    corpus = manifest.lineage["corpus"]
    assert corpus["name"] == "wordfreq-en-top50000" and len(corpus["sha256"]) == 64 and corpus["words"] > 45_000
    assert manifest.lineage["words_used"] == 400 and manifest.lineage["split"]["test"] == 20
    metrics = manifest.metrics
    assert set(metrics["hit_rate"]["prefix_3"]) == {"cases", "distinct_prefixes", "rnn", "trie"}
    assert metrics["bits_per_char"]["held_out_words"] == 20 and metrics["bits_per_char"]["trigram"] > 0
    assert set(manifest.artifacts) == {"learning_curves.png", "history.json", "history.csv"}
    model = load_model(registry, "rnn", "production", torch.device("cpu"))
    found = complete(model.network, CharCodec(model.preprocessing), "th", num_completions=2)
    assert len(found) == 2 and all(c.text.startswith("th") for c in found)


def test_word_file_corpus_with_counts(tmp_path: Path):
    words = tmp_path / "words.txt"
    words.write_text("Apple 30\nbanana 20\ncherry\napple 5\n\nberry 2\ndate 4\n")
    registry = run(tmp_path, "--corpus", str(words), *SMOKE, "--hidden-size", "16", "--dev-fraction", "0.2",
                   "--test-fraction", "0.2", "--alias", "words")
    manifest = registry.manifest("rnn", "words")
    assert manifest.lineage["corpus"]["name"] == "words.txt" and manifest.lineage["corpus"]["words"] == 5
    assert manifest.preprocessing["alphabet"] == "abcdehlnprty"
    assert manifest.version.endswith("-char-rnn"), "the registry names the version: <UTC time>-<architecture>"


def test_bad_choices_and_missing_files_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        main(["--cell", "transformer"])
    assert "choose from 'gru', 'lstm', 'rnn'" in capsys.readouterr().err
    assert main(["--corpus", str(tmp_path / "missing.txt"), "--no-register"]) == 2
    assert "missing.txt does not exist" in capsys.readouterr().err
