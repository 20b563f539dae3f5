"""The store as a URL: a registry in a real S3 server (rclone serve s3), mirrored and verified locally.

Not covered here, on purpose: a conditional write that loses a race (If-Match answered 412). rclone
ignores conditional writes, so against it the last writer wins; AWS S3 and MinIO honour them
(docs/deployment.md says what can race).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from models.registry import ModelRegistry, StoreUnavailableError
from models.registry.errors import InvalidStoreURLError
from models.registry.synced import SyncedRegistry, local_path, open_registry
from tests.app.test_rollouts import register_copy
from tests.conftest import REPO


def s3_client():
    return boto3.client("s3", config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                            response_checksum_validation="when_required"))


def put_version(source: ModelRegistry, version: str, *, as_version: str, corrupt: str | None = None,
                manifest: bool = True) -> None:
    """Upload `source`'s digits/`version` as `as_version` with boto3 itself (what any other tool could
    write), with one byte of file `corrupt` flipped; without `manifest`, everything but the manifest."""
    client, directory = s3_client(), source.root / "digits" / version
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        if path.name == "manifest.json":
            if not manifest:
                continue
            record = json.loads(data)
            record["version"] = as_version
            data = json.dumps(record).encode()
        if path.name == corrupt:
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
        client.put_object(Bucket="models", Key=f"store/digits/{as_version}/{path.name}", Body=data)


def point_alias(version: str) -> None:
    s3_client().put_object(Bucket="models", Key="store/digits/aliases.json",
                           Body=json.dumps({"production": version}).encode())


def test_store_urls_name_a_directory_or_a_bucket_and_anything_else_is_refused(tmp_path):
    assert local_path(str(tmp_path)) == tmp_path and local_path(f"file://{tmp_path}") == tmp_path
    assert local_path("s3://bucket/prefix") is None
    for bad in ("s3://", "http://host/x", "file://elsewhere/x", "s3://bucket?x=1"):
        with pytest.raises(InvalidStoreURLError, match="s3://bucket"):
            local_path(bad)
    assert type(open_registry(f"file://{tmp_path}")) is ModelRegistry


def test_a_mirror_holds_the_stores_versions_verified_and_serves_its_aliases(s3_store, registry, tmp_path):
    mirror = open_registry(s3_store, tmp_path / "mirror", sync=True)
    assert isinstance(mirror, SyncedRegistry)
    assert mirror.tasks() == ["digits"] and mirror.aliases("digits") == registry.aliases("digits")
    for version in mirror.versions("digits"):
        mirror.verify_version("digits", version)
    assert mirror.routes() == registry.routes()


def test_a_version_registered_and_promoted_through_one_mirror_reaches_another(s3_store, tmp_path):
    a = open_registry(s3_store, tmp_path / "a", sync=True)
    b = open_registry(s3_store, tmp_path / "b", sync=True)
    before = b.aliases("digits")["production"]
    candidate = register_copy(a, "candidate")
    a.promote("digits", candidate, actor="test")
    assert b.aliases("digits")["production"] == before  # until it polls
    assert b.mirror.sync() == [("digits", "production", candidate)]
    assert b.aliases("digits")["production"] == candidate and candidate in b.versions("digits")
    last = b.history("digits")[-1]
    assert (last["event"], last["actor"], last["from"], last["to"]) == ("promote", "test", before,
                                                                                        candidate)
    b.rollback("digits", actor="test-b")  # through b, back to a
    a.mirror.sync()
    assert a.aliases("digits")["production"] == before
    assert [e["event"] for e in a.history("digits")[-2:]] == ["promote", "rollback"]


def test_a_corrupted_version_is_refused_and_the_alias_keeps_serving_what_it_had(s3_store, registry, tmp_path):
    mirror = open_registry(s3_store, tmp_path / "mirror", sync=True)
    good = mirror.aliases("digits")["production"]
    put_version(registry, good, as_version="corrupted", corrupt="weights.safetensors")
    point_alias("corrupted")
    assert mirror.mirror.sync() == []
    assert mirror.aliases("digits") == {"production": good} and "corrupted" not in mirror.versions("digits")
    assert "sha256 of weights.safetensors" in mirror.mirror.refused["digits"]["corrupted"]
    assert mirror.mirror.store_aliases["digits"] == {"production": "corrupted"}
    point_alias(good)
    mirror.mirror.sync()
    assert mirror.mirror.store_aliases["digits"] == {"production": good}


def test_a_version_without_its_manifest_is_not_there_yet_and_appears_once_it_is(s3_store, registry, tmp_path):
    mirror = open_registry(s3_store, tmp_path / "mirror", sync=True)
    good = mirror.aliases("digits")["production"]
    put_version(registry, good, as_version="uploading", manifest=False)
    point_alias("uploading")
    mirror.mirror.sync()
    assert mirror.aliases("digits") == {"production": good} and not mirror.mirror.refused.get("digits")
    put_version(registry, good, as_version="uploading")  # the manifest comes last
    assert mirror.mirror.sync() == [("digits", "production", "uploading")]
    weights = (mirror.root / "digits" / "uploading" / "weights.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == mirror.manifest("digits", "uploading").weights.sha256


def test_while_the_store_is_down_reads_come_from_the_mirror_and_changes_are_refused_unchanged(s3_server, s3_store,
                                                                                              tmp_path):
    mirror = open_registry(s3_store, tmp_path / "mirror", sync=True)
    candidate = register_copy(mirror, "candidate")
    aliases = mirror.aliases("digits")
    s3_server.stop()
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        mirror.mirror.sync()
    assert time.monotonic() - started < 15
    with pytest.raises(StoreUnavailableError):
        mirror.promote("digits", candidate, actor="test")
    assert mirror.aliases("digits") == aliases and mirror.versions("digits")  # still readable
    s3_server.start()
    mirror.promote("digits", candidate, actor="test")
    assert open_registry(s3_store, tmp_path / "other", sync=True).aliases("digits")["production"] == candidate


def test_the_cli_uploads_a_local_store_and_works_on_the_url(s3_server, store, tmp_path):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "models.registry", *args], cwd=REPO, capture_output=True,
                              text=True, timeout=120)

    uploaded = cli("--store", str(store), "upload", "s3://models/cli", "digits")
    assert uploaded.returncode == 0 and "uploaded digits/" in uploaded.stdout, uploaded.stderr
    assert "uploaded" not in cli("--store", str(store), "upload", "s3://models/cli", "digits").stdout  # idempotent
    listed = cli("--store", "s3://models/cli", "--cache-dir", str(tmp_path / "cache"), "list")
    assert listed.returncode == 0 and "[production]" in listed.stdout, listed.stderr
    bad = cli("--store", str(store), "upload", str(tmp_path / "elsewhere"))
    assert bad.returncode == 2 and "object store" in bad.stderr
    assert "schemes are file, s3" in cli("--store", "ftp://x/y", "list").stderr
