"""Word completion: `python -m bench.rnn [--recompute] [--requests 300]`.

Reports, for the production `rnn` model: completion hit rates (top-1/top-5 from 2- and 3-letter prefixes
of words drawn by frequency) beside the exact frequency trie, held-out bits per character beside the
smoothed character trigram (from the manifest, or recomputed with --recompute on the same corpus and split),
the latency of beam-5 `POST /rnn/complete` requests through the real app (in-process HTTP, httpx
ASGITransport, one request at a time), and the seed check h/g/s -> hello/green/start (version `seed`).
Writes bench/results/rnn.md (committed, headed by date, commit, machine and command) and rnn.json (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from app.main import create_app
from app.settings import Settings
from bench.report import command_line, markdown_table, publish
from models.chars import CharCodec
from models.registry import DEFAULT_ROOT, ModelRegistry
from models.runtime import load_model
from training.char_rnn_metrics import PREFIX_LENGTHS, SEED_CHECK, completion_hit_rates, held_out_bits
from training.data.words import load_corpus, split_words
from training.runtime import seed_everything


def recompute_metrics(registry: ModelRegistry, ref: str) -> dict[str, Any]:
    """Rebuild the training run's corpus and split from the manifest and measure again."""
    model = load_model(registry, "rnn", ref, torch.device("cpu"))
    config = model.manifest.training["config"]
    corpus = load_corpus(config["corpus"], config["words"])
    if corpus.sha256 != model.manifest.lineage["corpus"]["sha256"]:
        raise SystemExit(f"corpus {corpus.name} differs from the one the model was trained on (sha256)")
    pairs = [(w, f) for w, f in zip(corpus.words, corpus.weights) if len(w) <= config["max_length"]]
    pairs = pairs[: config["limit"] or None]
    words, weights = [w for w, _ in pairs], [f for _, f in pairs]
    split = split_words(len(words), config["dev_fraction"], config["test_fraction"], seed_everything(config["seed"]))
    codec = CharCodec(model.preprocessing)
    train = [words[i] for i in split.train]
    hits = completion_hit_rates(model.network, codec, train, [weights[i] for i in split.train],
                                cases=config["eval_cases"], seed=config["seed"], max_length=config["max_length"])
    return {"hit_rate": hits, "bits_per_char": held_out_bits(model.network, codec, train,
                                                             [words[i] for i in split.test])}


async def http_checks(store: Path, requests: int) -> dict[str, Any]:
    """Latency of beam-5 completions and the seed check, through the ASGI app."""
    app = create_app(Settings(store_dir=store, device="cpu", preload=False, log_level="WARNING"))
    prefixes = ["th", "pro", "com", "wh", "inf", "hel", "st", "con", "re", "ma", "sh", "bea", "qu", "pl", "gr"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        seed = {}
        for prefix, expected in SEED_CHECK.items():
            body = (await client.post("/rnn/complete", json={"prefix": prefix, "version": "seed"})).json()
            seed[prefix] = {"got": body["completions"][0]["text"], "expected": expected}
        for prefix in prefixes:  # warm-up: model load, first calls
            (await client.post("/rnn/complete", json={"prefix": prefix, "num_completions": 5})).raise_for_status()
        latencies = []
        for i in range(requests):
            started = time.perf_counter()
            response = await client.post("/rnn/complete", json={"prefix": prefixes[i % len(prefixes)],
                                                                 "num_completions": 5, "strategy": "beam"})
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
        example = (await client.post("/rnn/complete", json={"prefix": "hel", "num_completions": 5})).json()
    latencies.sort()
    return {"seed_check": seed, "example": example, "requests": requests,
            "latency_ms": {"p50": round(statistics.median(latencies), 2),
                           "p99": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
                           "mean": round(statistics.fmean(latencies), 2)}}


def report(version: str, metrics: dict[str, Any], http: dict[str, Any], source: str) -> str:
    hits = []
    for length in PREFIX_LENGTHS:
        entry = metrics["hit_rate"][f"prefix_{length}"]
        rnn, trie = entry["rnn"], entry["trie"]
        hits.append([f"{length} letters", entry["cases"], f"{rnn['top1']:.1%}", f"{trie['top1']:.1%}",
                     f"{rnn['top5']:.1%}", f"{trie['top5']:.1%}", f"{rnn['top5'] / trie['top5']:.1%}"])
    bits = metrics["bits_per_char"]
    lines = [f"## `rnn` production ({version}); metrics {source}", "",
             markdown_table(["prefix", "cases", "RNN top-1", "trie top-1", "RNN top-5", "trie top-5", "top-5 RNN/trie"],
                            hits, align="r" * 7),
             "", markdown_table(["held-out words", "RNN bits/char", "trigram bits/char"],
                                [[bits["held_out_words"], f"{bits['rnn']:.3f}", f"{bits['trigram']:.3f}"]], align="rrr"),
             "",
             f"beam-5 `POST /rnn/complete`, {http['requests']} sequential requests in-process: "
             f"p50 {http['latency_ms']['p50']:.1f} ms, p99 {http['latency_ms']['p99']:.1f} ms, "
             f"mean {http['latency_ms']['mean']:.1f} ms", "",
             "seed check (version `seed`): " + ", ".join(
                 f"{p} -> {r['got']} ({'ok' if r['got'] == r['expected'] else 'expected ' + r['expected']})"
                 for p, r in http["seed_check"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    parser = argparse.ArgumentParser(prog="python -m bench.rnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--recompute", action="store_true", help="measure hit rates and bits/char again")
    parser.add_argument("--requests", type=int, default=300, help="timed beam-5 requests")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the service's default is 1)")
    args = parser.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    torch.set_num_threads(args.threads)
    registry = ModelRegistry(args.store)
    manifest = registry.manifest("rnn", "production")
    metrics = recompute_metrics(registry, "production") if args.recompute else manifest.metrics
    http = asyncio.run(http_checks(args.store, args.requests))
    torch.set_num_threads(args.threads)  # create_app applies the service's setting; keep ours for the record
    text = report(manifest.version, metrics, http, "recomputed" if args.recompute else "from the manifest")
    publish("rnn", "python -m bench.rnn: word completion", text,
            {"version": manifest.version, "metrics": metrics, **http},
            command=command_line(parser.prog, argv), started=started)
    seed_ok = all(r["got"] == r["expected"] for r in http["seed_check"].values())
    return 0 if seed_ok else 1


if __name__ == "__main__":
    sys.exit(main())
