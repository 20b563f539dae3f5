"""Guarded rollouts in the store: the history log, gated and forced promotion, rollback (CLI), canaries
and shadows in rollouts.json, and the modes of every file they write. The gates themselves: test_gates.py."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from models.registry import (ChecksumMismatchError, InvalidManifestError, InvalidRolloutError, ModelRegistry,
                             PromotionRefusedError, UnknownTaskError, UnknownVersionError, load_network)
from models.registry.__main__ import main as cli
from models.registry.history import HISTORY_FILE
from models.registry.rollouts import ROLLOUTS_FILE, AliasRollout, Canary

CPU = torch.device("cpu")
KEEP = {"kind", "architecture", "labels", "preprocessing", "metrics", "evaluation", "training", "lineage", "serving"}
CANARY = {"percent": 10.0, "max_error_rate": 0.05, "max_p99_ms": 250.0, "window": 20}


def register_digits(registry: ModelRegistry, version: str, **changes: Any) -> str:
    """A copy of the committed digits network registered as `version`, its manifest fields overridden by `changes`."""
    manifest, network = load_network(registry, "digits", "production", CPU)
    return registry.register("digits", network, {**manifest.model_dump(include=KEEP), **changes}, version=version)


def with_accuracy(registry: ModelRegistry, accuracy: float) -> dict[str, Any]:
    return {"metrics": {**registry.manifest("digits").metrics, "test_accuracy": accuracy}}


# ---- history ---------------------------------------------------------------------------
def test_events_are_appended_and_read_oldest_first(registry: ModelRegistry):
    assert registry.history("digits") == []
    first = registry.record_event("digits", "promote", actor="alice", alias="production", from_version="a",
                                  to_version="b", reason="retrained", forced=False)
    second = registry.record_event("digits", "shadow_start", actor="ci", alias="production", percent=5.0)
    assert registry.history("digits") == [first, second]
    assert list(first) == ["time", "event", "task", "alias", "from", "to", "reason", "actor", "forced"]
    assert first["time"].endswith("+00:00") and first["from"] == "a" and first["to"] == "b"
    lines = (registry.task_dir("digits") / HISTORY_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [first, second]


def test_bad_events_are_refused_before_anything_is_written(registry: ModelRegistry):
    with pytest.raises(ValueError, match="unknown history event 'deploy'; valid: promote, rollback"):
        registry.record_event("digits", "deploy", actor="alice")
    with pytest.raises(ValueError, match="reserved keys"):
        registry.record_event("digits", "promote", actor="alice", time="yesterday")
    with pytest.raises(ValueError, match="actor"):
        registry.record_event("digits", "promote", actor="")
    with pytest.raises(UnknownTaskError):
        registry.record_event("speech", "promote", actor="alice")
    assert not (registry.task_dir("digits") / HISTORY_FILE).exists()


def test_a_torn_last_line_is_skipped_and_the_next_event_starts_a_line_of_its_own(registry: ModelRegistry):
    kept = registry.record_event("digits", "promote", actor="alice", alias="production")
    path = registry.task_dir("digits") / HISTORY_FILE
    with open(path, "a") as handle:
        handle.write('{"time": "2026-12-01T10:00:00", "event": "prom')  # a crash in mid-append
    assert registry.history("digits") == [kept]
    after = registry.record_event("digits", "rollback", actor="bob", alias="production")
    assert registry.history("digits") == [kept, after]
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 3


def test_the_lock_is_reentrant_in_a_thread_and_excludes_other_threads(registry: ModelRegistry):
    finished = threading.Event()

    def other_writer() -> None:
        registry.record_event("digits", "promote", actor="other", alias="production")
        finished.set()

    with registry.alias_lock("digits"):
        registry.record_event("digits", "promote", actor="holder", alias="production")  # takes it again
        thread = threading.Thread(target=other_writer)
        thread.start()
        assert not finished.wait(0.3), "another thread wrote while the lock was held"
    thread.join(timeout=10)
    assert finished.is_set()
    assert [e["actor"] for e in registry.history("digits")] == ["holder", "other"]


# ---- promote -----------------------------------------------------------------------------
def test_a_worse_candidate_is_refused_and_nothing_changes(registry: ModelRegistry):
    old = registry.resolve("digits")
    worse = register_digits(registry, "worse", **with_accuracy(registry, 0.9))
    with pytest.raises(PromotionRefusedError, match="promoting digits/worse to production is refused: "
                                                    "test_accuracy 0.9 is worse") as refused:
        registry.promote("digits", worse, actor="alice")
    assert len(refused.value.reasons) == 1 and refused.value.details == {"reasons": refused.value.reasons}
    assert registry.resolve("digits") == old and registry.history("digits") == []
    assert registry.promote("digits", worse, "staging", actor="alice") == worse, "a new alias has no incumbent"
    assert registry.promote("digits", worse, actor="alice", tolerance=0.1) == worse
    assert [e["event"] for e in registry.history("digits")] == ["promote", "promote"]


def test_a_forced_promotion_records_what_it_overrode(registry: ModelRegistry):
    old = registry.resolve("digits")
    worse = register_digits(registry, "worse", **with_accuracy(registry, 0.9))
    done = registry.promote_detailed("digits", worse, actor="alice", force=True, reason="hotfix")
    assert (done.version, done.previous, done.forced) == (worse, old, True)
    assert len(done.overridden) == 1 and done.overridden[0].startswith("test_accuracy 0.9 is worse")
    [event] = registry.history("digits")
    assert {k: event[k] for k in ("event", "alias", "from", "to", "reason", "actor", "forced")} == {
        "event": "promote", "alias": "production", "from": old, "to": worse, "reason": "hotfix", "actor": "alice",
        "forced": True}
    assert event["overridden"] == list(done.overridden)
    registry.promote("digits", old, actor="bob")  # better again: passes
    assert registry.history("digits")[-1]["overridden"] == [] and registry.history("digits")[-1]["forced"] is False


def test_verification_fails_before_the_gates(registry: ModelRegistry):
    worse = register_digits(registry, "worse", **with_accuracy(registry, 0.9))
    (registry.version_dir("digits", worse) / "weights.safetensors").write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatchError):
        registry.promote("digits", worse, actor="alice", force=True)
    assert registry.history("digits") == []


def test_promoting_the_canary_completes_it(registry: ModelRegistry):
    old = registry.resolve("digits")
    candidate = register_digits(registry, "candidate")
    registry.start_canary("digits", "production", candidate, **CANARY, actor="alice")
    registry.start_shadow("digits", "production", candidate, percent=50, actor="alice")
    registry.promote("digits", candidate, actor="bob")
    assert registry.rollouts("digits") == {}
    events = [(e["event"], e["from"], e["to"], e["actor"]) for e in registry.history("digits")]
    assert events[-3:] == [("promote", old, candidate, "bob"), ("canary_complete", old, candidate, "bob"),
                           ("shadow_end", old, candidate, "bob")]


# ---- rollback and history (CLI) ------------------------------------------------------------
def test_cli_promote_history_and_rollback(store: Path, registry: ModelRegistry, capsys: pytest.CaptureFixture[str]):
    old = registry.resolve("digits")
    worse = register_digits(registry, "worse", **with_accuracy(registry, 0.9))
    args = ["--store", str(store)]
    assert cli([*args, "rollback", "digits"]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err
    assert cli([*args, "promote", "digits", worse]) == 2
    assert "test_accuracy 0.9 is worse" in capsys.readouterr().err and registry.resolve("digits") == old
    assert cli([*args, "promote", "digits", worse, "--force", "--reason", "try it"]) == 0
    assert cli([*args, "rollback", "digits", "--reason", "it was worse"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"digits: production -> {old} (was {worse})"
    assert registry.resolve("digits") == old
    assert cli([*args, "rollback", "digits"]) == 0, "a second rollback undoes the first"
    assert registry.resolve("digits") == worse
    capsys.readouterr()
    assert cli([*args, "history", "digits"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all("by cli:" in line for line in lines)
    assert f"promote          production  {old} -> {worse}  by cli:" in lines[0]
    assert lines[0].endswith("try it  [forced over: test_accuracy 0.9 is worse than the incumbent's 0.9953 by "
                             "0.0953 (higher is better; tolerance 0)]")
    assert f"rollback         production  {worse} -> {old}" in lines[1] and lines[1].endswith(": it was worse")
    assert cli([*args, "history", "digits", "--json"]) == 0
    raw = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in raw] == ["promote", "rollback", "rollback"] and raw == registry.history("digits")


def test_rollback_refuses_when_aliases_changed_outside_the_registry(store: Path, registry: ModelRegistry,
                                                                    capsys: pytest.CaptureFixture[str]):
    old = registry.resolve("digits")
    candidate = register_digits(registry, "candidate")
    registry.promote("digits", candidate, actor="alice")
    (registry.task_dir("digits") / "aliases.json").write_text(json.dumps({"production": old}))
    assert cli(["--store", str(store), "rollback", "digits"]) == 2
    assert "changed outside the registry" in capsys.readouterr().err
    assert cli(["--store", str(store), "rollback", "digits", "--alias", "staging"]) == 2
    assert "no alias 'staging'" in capsys.readouterr().err


# ---- rollouts ------------------------------------------------------------------------------
def test_canary_start_replace_and_end(registry: ModelRegistry):
    old = registry.resolve("digits")
    first, second = register_digits(registry, "first"), register_digits(registry, "second")
    canary = registry.start_canary("digits", "production", first, **CANARY, actor="alice", reason="try")
    assert canary == Canary(first, 10.0, 0.05, 250.0, 20, canary.started_at, "alice")
    assert registry.rollouts("digits") == {"production": AliasRollout(canary, None)}
    stored = json.loads((registry.task_dir("digits") / ROLLOUTS_FILE).read_text())
    assert stored == {"production": {"canary": {**CANARY, "version": first, "started_at": canary.started_at,
                                                "actor": "alice"}}}
    replacement = registry.start_canary("digits", "production", second, **{**CANARY, "percent": 25}, actor="bob")
    assert registry.rollouts("digits")["production"].canary == replacement
    assert registry.end_canary("digits", "production", actor="x", reason="stale", only_if=canary) is None
    stats = {"requests": 40, "errors": 9}
    assert registry.end_canary("digits", "production", actor="auto-rollback", reason="error rate 0.225 > 0.05",
                               rolled_back=True, stats=stats) == replacement
    assert registry.end_canary("digits", "production", actor="x", reason="again") is None
    assert registry.rollouts("digits") == {} and registry.resolve("digits") == old
    events = registry.history("digits")
    assert [(e["event"], e["to"], e["actor"]) for e in events] == [
        ("canary_start", first, "alice"), ("canary_end", first, "bob"), ("canary_start", second, "bob"),
        ("canary_rollback", second, "auto-rollback")]
    assert events[0]["from"] == old and events[0]["window"] == 20 and events[0]["reason"] == "try"
    assert events[1]["reason"] == f"replaced by a canary of {second}" and events[3]["stats"] == stats


@pytest.mark.parametrize(("change", "message"), [
    ({"percent": 0}, "percent must be > 0 and < 100"), ({"percent": 100}, "percent must be > 0 and < 100"),
    ({"percent": math.nan}, "percent must be > 0 and < 100"), ({"max_error_rate": 1.5}, "between 0 and 1"),
    ({"max_p99_ms": 0}, "max_p99_ms must be a number > 0"), ({"window": 0}, "window must be a whole number"),
    ({"window": True}, "window must be a whole number"), ({"window": 2.5}, "window must be a whole number"),
])
def test_canary_values_out_of_range_name_the_range(registry: ModelRegistry, change: dict, message: str):
    candidate = register_digits(registry, "candidate")
    with pytest.raises(InvalidRolloutError, match=message):
        registry.start_canary("digits", "production", candidate, **{**CANARY, **change}, actor="alice")
    assert registry.rollouts("digits") == {} and registry.history("digits") == []


def test_canary_needs_an_alias_another_version_and_the_same_labels(registry: ModelRegistry):
    incumbent = registry.resolve("digits")
    with pytest.raises(InvalidRolloutError, match="already serves: a canary needs another version"):
        registry.start_canary("digits", "production", incumbent, **CANARY, actor="alice")
    with pytest.raises(UnknownVersionError, match="no alias 'staging' to run a canary on; aliases: production"):
        registry.start_canary("digits", "staging", incumbent, **CANARY, actor="alice")
    relabelled = register_digits(registry, "relabelled", labels=[f"digit {i}" for i in range(10)],
                                 **with_accuracy(registry, 0.5))
    with pytest.raises(PromotionRefusedError, match="a canary of digits/relabelled on production is refused: "
                                                    "labels differ"):
        registry.start_canary("digits", "production", relabelled, **CANARY, actor="alice")
    canary = registry.start_canary("digits", "production", relabelled, **CANARY, actor="alice", force=True)
    assert canary.version == relabelled, "a worse metric is no reason to refuse a canary"
    assert registry.history("digits")[-1]["forced"] is True


def test_shadow_start_and_end(registry: ModelRegistry):
    candidate = register_digits(registry, "candidate")
    for percent in (0, 100.5, math.inf):
        with pytest.raises(InvalidRolloutError, match=r"percent must be > 0 and <= 100"):
            registry.start_shadow("digits", "production", candidate, percent=percent, actor="alice")
    with pytest.raises(InvalidRolloutError, match="a shadow needs another version"):
        registry.start_shadow("digits", "production", "production", percent=50, actor="alice")
    shadow = registry.start_shadow("digits", "production", candidate, percent=100, actor="alice")
    canary = registry.start_canary("digits", "production", candidate, **CANARY, actor="alice")
    assert registry.rollouts("digits") == {"production": AliasRollout(canary, shadow)}
    assert registry.end_shadow("digits", "production", actor="bob", reason="enough", stats={"agreement": 1.0}) == shadow
    assert registry.rollouts("digits") == {"production": AliasRollout(canary, None)}
    assert registry.end_shadow("digits", "production", actor="bob", reason="again") is None
    assert [e["event"] for e in registry.history("digits")] == ["shadow_start", "canary_start", "shadow_end"]
    assert registry.history("digits")[-1]["stats"] == {"agreement": 1.0}


def test_a_bad_rollouts_file_is_named(registry: ModelRegistry):
    path = registry.task_dir("digits") / ROLLOUTS_FILE
    path.write_text(json.dumps({"production": {"canary": {"version": "x", "percent": "lots"}}}))
    with pytest.raises(InvalidManifestError, match=f"{path}: production.canary.percent"):
        registry.rollouts("digits")
    path.write_text(json.dumps({"../up": {}}))
    with pytest.raises(InvalidManifestError, match="alias names"):
        registry.rollouts("digits")


def test_every_file_written_is_readable_by_another_user(registry: ModelRegistry):
    old_umask = os.umask(0o022)
    try:
        candidate = register_digits(registry, "candidate")
        registry.start_canary("digits", "production", candidate, **CANARY, actor="alice")
        registry.promote("digits", candidate, actor="alice")
    finally:
        os.umask(old_umask)
    directory = registry.task_dir("digits")
    for name in ("aliases.json", HISTORY_FILE, ROLLOUTS_FILE, ".aliases.lock"):
        assert oct((directory / name).stat().st_mode & 0o777) == oct(0o644), name
