"""Train a character-level word-completion model and register it (task `rnn`): `python -m training.char_rnn`.

`--corpus english` (default): the most frequent English words of the `wordfreq` package (shipped with it,
no download), frequency-weighted. `--corpus seed`: the student report's toy (hello, green, start; one-layer
RNN, hidden 12, one-hot input, Adam lr 0.01, 100 epochs), registered under the alias `seed`.
`--corpus FILE`: one word per line, optional count. Every recipe value can be overridden; `--help` lists them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.chars import CharCodec, chars_preset
from models.devices import DEVICE_CHOICES, select_device
from models.networks import build_network, count_parameters
from models.networks.char_rnn import CELLS
from models.registry import DEFAULT_ROOT
from models.registry.synced import STORE_HELP, open_registry, store_argument
from training.artifacts import training_record, write_run_artifacts
from training.char_rnn_metrics import completion_hit_rates, headline, held_out_bits, seed_check
from training.data.words import WordCorpus, load_corpus, split_words
from training.cli import run_cli, run_dir
from training.engine import (OPTIMIZERS, SCHEDULERS, EarlyStopping, FitResult, batch_count, build_optimizer,
                             build_schedule, fit)
from training.runtime import start_run

log = logging.getLogger("training.char_rnn")
TASK = "rnn"
# Per-corpus defaults of every knob left unset on the command line ("file" is any word-list path).
RECIPES: dict[str, dict[str, Any]] = {
    "seed": dict(cell="rnn", embedding_dim=0, hidden_size=12, num_layers=1, dropout=0.0, optimizer="adam", lr=0.01,
                 weight_decay=0.0, scheduler="none", epochs=100, batch_size=1, samples_per_epoch=0,
                 early_stopping=0, dev_fraction=0.0, test_fraction=0.0, alias="seed", eval_cases=30),
    "english": dict(cell="gru", embedding_dim=32, hidden_size=384, num_layers=1, dropout=0.0, optimizer="adam",
                    lr=3e-3, weight_decay=0.0, scheduler="onecycle", epochs=10, batch_size=256,
                    samples_per_epoch=100_000, early_stopping=3, dev_fraction=0.05, test_fraction=0.05, alias=None,
                    eval_cases=2000),
}
RECIPES["file"] = RECIPES["english"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.char_rnn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default="english", help="seed | english | path to a word list (default english)")
    p.add_argument("--words", type=int, default=50_000, help="english: how many of the most frequent words")
    p.add_argument("--cell", choices=sorted(CELLS))
    p.add_argument("--embedding-dim", type=int, help="0: one-hot input")
    p.add_argument("--hidden-size", type=int)
    p.add_argument("--num-layers", type=int)
    p.add_argument("--dropout", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=float)
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--scheduler", choices=SCHEDULERS)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--samples-per-epoch", type=int, help="words drawn per epoch by weight**power; 0: each word once")
    p.add_argument("--frequency-power", type=float, default=0.75,
                   help="training words are drawn with probability ~ frequency**power (ranking is unchanged)")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="epochs without dev-loss gain; 0 disables")
    p.add_argument("--min-delta", type=float, default=1e-4)
    p.add_argument("--dev-fraction", type=float, help="words held out for early stopping")
    p.add_argument("--test-fraction", type=float, help="words held out for bits per character")
    p.add_argument("--eval-cases", type=int, help="prefix cases drawn per prefix length for hit rates")
    p.add_argument("--max-length", type=int, default=24, help="longest word considered (longer ones are dropped)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    p.add_argument("--limit", type=int, default=0, help="use only the N most frequent words: smoke tests")
    p.add_argument("--out-dir", type=Path, default=None, help="run folder (default runs/char_rnn/<time>)")
    p.add_argument("--store", type=store_argument, default=str(DEFAULT_ROOT), help=STORE_HELP)
    p.add_argument("--alias", help="alias to point at the new version (seed corpus: 'seed')")
    p.add_argument("--promote", action="store_true", help="make the new version production")
    p.add_argument("--no-register", dest="register", action="store_false")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def resolve_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Fill every unset knob from the corpus's recipe; fail early on values that cannot work."""
    kind = args.corpus if args.corpus in ("seed", "english") else "file"
    for key, value in RECIPES[kind].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.hidden_size < 1 or args.num_layers < 1 or args.embedding_dim < 0 or args.batch_size < 1:
        raise ValueError("hidden-size, num-layers and batch-size must be >= 1, embedding-dim >= 0")
    if not 0 <= args.dev_fraction + args.test_fraction < 1:
        raise ValueError("dev-fraction + test-fraction must be in [0, 1)")
    return args


class NextCharLoss(nn.Module):
    """Teacher forcing for `fit`: a padded batch of <s> w </s> in, logits of every real next token out (N x V)."""

    def __init__(self, network: nn.Module, pad: int) -> None:
        super().__init__()
        self.network, self.pad = network, pad

    def forward(self, tokens: Tensor) -> Tensor:
        mask = tokens[:, 1:] != self.pad
        logits, _ = self.network(tokens[:, :-1], lengths=mask.sum(dim=1))
        return logits[mask]


def word_batches(codec: CharCodec, words: list[str], order: list[int], batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """(padded tokens, flat next-token targets) for the words at `order`, `batch_size` at a time."""
    for start in range(0, len(order), batch_size):
        tokens, _ = codec.batch([words[i] for i in order[start : start + batch_size]])
        yield tokens, tokens[:, 1:][tokens[:, 1:] != codec.pad]


def training_order(train: list[int], weights: Tensor, samples: int, generator: torch.Generator, *,
                   lengths: list[int] | None = None, batch_size: int = 1) -> list[int]:
    """One epoch's word indices: `samples` draws by weight (with replacement), or each word once, shuffled.

    With `lengths` (of every word), draws are bucketed: sorted by length, cut into batches, and the batches
    shuffled, so a batch holds words of similar length and the recurrence runs over little padding.
    """
    if samples <= 0:
        return [train[i] for i in torch.randperm(len(train), generator=generator).tolist()]
    picks = [train[i] for i in torch.multinomial(weights, samples, replacement=True, generator=generator).tolist()]
    if lengths is None:
        return picks
    picks.sort(key=lambda i: lengths[i])
    batches = [picks[start : start + batch_size] for start in range(0, len(picks), batch_size)]
    return [i for b in torch.randperm(len(batches), generator=generator).tolist() for i in batches[b]]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train, measure beside the baselines, write artifacts, register. Returns a summary dict."""
    args = resolve_recipe(args)
    start = start_run(args.seed, args.threads)
    generator = start.generator
    device = select_device(args.device)
    corpus = load_corpus(args.corpus, args.words)
    words = [w for w in corpus.words if len(w) <= args.max_length][: args.limit or None]
    weights = [f for w, f in zip(corpus.words, corpus.weights) if len(w) <= args.max_length][: args.limit or None]
    codec = CharCodec(chars_preset(corpus.alphabet))
    split = split_words(len(words), args.dev_fraction, args.test_fraction, generator)
    dev = split.dev or split.train  # the seed toy has no words to spare: it is checked on what it learned
    word_lengths = [len(w) for w in words]
    train_weights = torch.tensor([weights[i] for i in split.train], dtype=torch.float64) ** args.frequency_power
    out_dir = run_dir(args.out_dir, "char_rnn")

    arch_args = {"vocab_size": codec.vocab_size, "embedding_dim": args.embedding_dim, "hidden_size": args.hidden_size,
                 "num_layers": args.num_layers, "cell": args.cell, "dropout": args.dropout, "pad_index": codec.pad}
    network = build_network("char-rnn", **arch_args)
    model = NextCharLoss(network, codec.pad).to(device)
    samples = args.samples_per_epoch or len(split.train)
    steps = batch_count(samples, args.batch_size)
    optimizer = build_optimizer(args.optimizer, model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = build_schedule(args.scheduler, optimizer, epochs=args.epochs, steps_per_epoch=steps, max_lr=args.lr)
    log.info("%s %dx%d: %d parameters; %s: %d train / %d dev / %d test words; alphabet %r; device %s", args.cell,
             args.num_layers, args.hidden_size, count_parameters(network), corpus.name, len(split.train),
             len(split.dev), len(split.test), codec.alphabet, device)
    result = fit(
        model,
        train_batches=lambda: word_batches(codec, words, training_order(
            split.train, train_weights, args.samples_per_epoch, generator, lengths=word_lengths,
            batch_size=args.batch_size), args.batch_size),
        dev_batches=lambda: word_batches(codec, words, dev, 1024),
        steps_per_epoch=steps, optimizer=optimizer, schedule=schedule, epochs=args.epochs, device=device,
        early_stopping=EarlyStopping(args.early_stopping, args.min_delta), train_loss=nn.CrossEntropyLoss(),
        progress=args.progress, checkpoint=out_dir / "checkpoint.pt", generator=generator,
    )
    network.eval()
    train_words, train_word_weights = [words[i] for i in split.train], [weights[i] for i in split.train]
    hits = completion_hit_rates(network, codec, train_words, train_word_weights, cases=args.eval_cases,
                                seed=args.seed, max_length=args.max_length)
    bits = held_out_bits(network, codec, train_words, [words[i] for i in split.test])
    checks = seed_check(network, codec)
    wall = start.elapsed()
    metrics = {**headline(hits, bits), "hit_rate": hits, "bits_per_char": bits, "seed_check": checks,
               "best_dev_loss_nats_per_char": round(min(r["dev_loss"] for r in result.history), 6)}
    print(json.dumps({"hit_rate": hits, "bits_per_char": bits, "seed_check": checks}, indent=2))
    title = (f"char-rnn {args.cell} {args.num_layers}x{args.hidden_size}, {args.corpus}, seed {args.seed} "
             "(accuracy: next character)")
    artifacts = write_run_artifacts(out_dir, result.history, title=title)
    summary = {**headline(hits, bits), "epochs_run": result.epochs_run, "train_seconds": round(result.seconds, 1),
               "wall_seconds": round(wall, 1), "out_dir": str(out_dir), "version": None}
    if args.register:
        manifest = build_manifest(args, arch_args, codec, corpus, words, split, metrics, result, wall, device,
                                  start.commit)
        registry = open_registry(args.store)
        summary["version"] = registry.register(TASK, network.cpu(), manifest, artifacts=artifacts)
        aliases = [a for a in (args.alias, "production" if args.promote else None) if a]
        for alias in aliases:
            registry.promote(TASK, summary["version"], alias, actor="trainer:char_rnn")
        log.info("registered %s/%s (aliases: %s)", TASK, summary["version"], ", ".join(aliases) or "none")
    print(json.dumps(summary))
    return summary


def build_manifest(args: argparse.Namespace, arch_args: dict[str, Any], codec: CharCodec, corpus: WordCorpus,
                   words: list[str], split: Any, metrics: dict[str, Any], result: FitResult, wall: float,
                   device: torch.device, commit: str | None) -> dict[str, Any]:
    """The descriptive manifest fields of a trained completion model (the registry fills in the rest)."""
    return {
        "kind": "text-completion",
        "architecture": {"name": "char-rnn", "args": arch_args},
        "labels": codec.tokens,
        "preprocessing": codec.preset,
        "metrics": metrics,
        # held-out bits per character when the corpus has a test split; the demo corpus has none
        "evaluation": ({"metric": "held_out_bits_per_char", "higher_is_better": False}
                       if "held_out_bits_per_char" in metrics
                       else {"metric": "hit_top1_prefix2", "higher_is_better": True}),
        "training": training_record(args, device=device, wall_seconds=wall, result=result),
        "lineage": {"corpus": {"name": corpus.name, "source": corpus.source, "words": len(corpus.words),
                               "sha256": corpus.sha256, "format": "word<TAB>weight lines, %.6g, in corpus order"},
                    "words_used": len(words), "split": {"train": len(split.train), "dev": len(split.dev),
                                                        "test": len(split.test), "seed": args.seed},
                    "code_commit": commit},
    }


def main(argv: list[str] | None = None) -> int:
    """The command line; the exit status is `training.cli.run_cli`'s (0, or 2 with the error on stderr)."""
    return run_cli(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
