"""Compose (docker-compose.yml), checked offline: no Docker engine. `docker compose config` (or Debian's
`docker-compose config`) with and without the `fleet` profile (its replicas on an S3 store in MinIO), and
that profile's nginx config (deploy/nginx/fleet.conf), with `nginx -t` where nginx is installed (in CI
`.ci/run` installs both).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.settings import Settings

from tests.deploy.facts import REPO, COMPOSE_FILE, NGINX_CONF, FLEET_REPLICAS, FLEET_LB, ENV_PREFIX, IMAGE_PORT, IMAGE_STORE, missing
from tests.deploy.facts import FLEET_MINIO, FLEET_BUCKET_INIT, FLEET_STORE_INIT, FLEET_SERVICES, S3_ENV, dockerfile


@pytest.fixture(scope="module")
def compose() -> list[str]:
    """`docker compose` (the v2 plugin) when it works, else Debian's `docker-compose` (1.29)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    missing("docker compose or docker-compose is needed: apt-get install docker-compose")
    raise AssertionError  # unreachable


@pytest.fixture(scope="module")
def compose_config(compose, tmp_path_factory) -> Callable[..., dict[str, Any]]:
    """The resolved compose file (`config`), with the defaults of its variables (no .env, no PORT...), or
    with the `variables` given."""
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("COMPOSE_", ENV_PREFIX, "MINIO_"))
           and key not in {"PORT", "GPU_PORT", "FLEET_PORT"}}

    def config(*profiles: str, **variables: str) -> dict[str, Any]:
        options = [arg for profile in profiles for arg in ("--profile", profile)]
        done = subprocess.run([*compose, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *options, "config"],
                              capture_output=True, text=True, timeout=120, env={**env, **variables}, cwd=REPO)
        assert done.returncode == 0, done.stderr
        return yaml.safe_load(done.stdout)

    return config


def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """{target: source} of a service's volumes, from the short (1.29) or long (v2) syntax (no tmpfs)."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        elif volume.get("type") == "tmpfs":
            continue
        else:
            source, target = volume["source"], volume["target"]
        out[target] = source
    return out


def tmpfs_of(service: dict[str, Any]) -> set[str]:
    """The paths of a service's tmpfs mounts (`tmpfs:`, a string or a list, or `type: tmpfs` volumes)."""
    entries = service.get("tmpfs") or []
    paths = {entry.split(":")[0] for entry in ([entries] if isinstance(entries, str) else entries)}
    return paths | {v["target"] for v in service.get("volumes", []) if isinstance(v, dict) and v.get("type") == "tmpfs"}


def port_bindings(service: dict[str, Any]) -> dict[int, tuple[str, str]]:
    """{container port: (host IP, "" for every address, host port)} of a service."""
    out = {}
    for port in service.get("ports", []):
        if isinstance(port, str):
            host, container = port.split("/")[0].rsplit(":", 1)
            address, _, published = host.rpartition(":")
            out[int(container)] = (address, published)
        else:
            out[int(port["target"])] = (port.get("host_ip", ""), str(port["published"]))
    return out


def published_ports(service: dict[str, Any]) -> dict[int, str]:
    """{container port: host port} of a service."""
    return {container: published for container, (_, published) in port_bindings(service).items()}


def test_compose_parses_without_the_fleet(compose_config):
    services = compose_config()["services"]
    assert {"modelhouse"} <= set(services)
    # docker compose v2 leaves profiled services out here; docker-compose 1.29 lists them with their profile
    for name in FLEET_SERVICES:
        if name in services:
            assert services[name]["profiles"] == ["fleet"]
    assert published_ports(services["modelhouse"]) == {IMAGE_PORT: "8000"}


def test_compose_fleet_two_replicas_behind_nginx(compose_config):
    plain, fleet = compose_config()["services"], compose_config("fleet")["services"]
    cpu = fleet["modelhouse"]
    assert cpu == plain["modelhouse"]  # the CPU service itself is the same with the profile
    assert mounts_of(cpu)[IMAGE_STORE] == "models"  # on its own volume, not the fleet's store
    for name in FLEET_REPLICAS:
        replica = fleet[name]
        assert replica["profiles"] == ["fleet"]
        for key in ("image", "build", "healthcheck", "stop_grace_period"):
            assert replica[key] == cpu[key], (name, key)
        # the CPU service's settings, and the store's on top of them
        assert {key: replica["environment"].get(key) for key in cpu["environment"]} == cpu["environment"], name
        assert not replica.get("ports")  # reached through the balancer only
        assert "/readyz" in " ".join(replica["healthcheck"]["test"])
    lb = fleet[FLEET_LB]
    assert lb["profiles"] == ["fleet"] and lb["image"].startswith("nginx:")
    assert published_ports(lb) == {80: "8080"}
    assert Path(mounts_of(lb)["/etc/nginx/conf.d/default.conf"]) == NGINX_CONF
    assert {name: dep["condition"] for name, dep in lb["depends_on"].items()} == {
        name: "service_healthy" for name in FLEET_REPLICAS}


def s3_environment(service: dict[str, Any]) -> dict[str, str]:
    return {key: service["environment"][key] for key in S3_ENV}


def test_compose_fleet_s3_store(compose_config):
    """minio holds the store; store-bucket creates its bucket, store-init seeds it from the image; the
    replicas wait for both, and use it with a cache of their own."""
    fleet = compose_config("fleet")["services"]
    minio, bucket_init, store_init = fleet[FLEET_MINIO], fleet[FLEET_BUCKET_INIT], fleet[FLEET_STORE_INIT]
    for service in (minio, bucket_init, store_init):
        assert service["profiles"] == ["fleet"]

    # MinIO: a pinned release, its data on a named volume, healthy once `mc ready` says so
    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ", minio["image"]), minio["image"]
    command = minio["command"] if isinstance(minio["command"], list) else shlex.split(minio["command"])
    assert command[:2] == ["server", "/data"] and "--address" not in command  # the S3 API on its default :9000
    assert command[command.index("--console-address") + 1] == ":9001"
    assert mounts_of(minio)["/data"] in compose_config("fleet")["volumes"]
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert port_bindings(minio) == {9000: ("127.0.0.1", "9000"), 9001: ("127.0.0.1", "9001")}  # loopback only
    root = {key: minio["environment"][key] for key in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")}
    assert len(root["MINIO_ROOT_USER"]) >= 3 and len(root["MINIO_ROOT_PASSWORD"]) >= 8  # MinIO refuses shorter

    # every replica: the same store URL, MinIO's S3 endpoint on the compose network and its root keys
    stores = {fleet[name]["environment"][f"{ENV_PREFIX}STORE"] for name in FLEET_REPLICAS}
    (store,) = stores
    url = urlsplit(store)
    assert url.scheme == "s3" and url.netloc and url.path.strip("/"), store
    endpoint = urlsplit(fleet[FLEET_REPLICAS[0]]["environment"]["AWS_ENDPOINT_URL"])
    assert (endpoint.scheme, endpoint.hostname, endpoint.port) == ("http", FLEET_MINIO, 9000)
    expected_s3 = s3_environment(fleet[FLEET_REPLICAS[0]])
    assert (expected_s3["AWS_ACCESS_KEY_ID"], expected_s3["AWS_SECRET_ACCESS_KEY"]) == (
        root["MINIO_ROOT_USER"], root["MINIO_ROOT_PASSWORD"])
    assert expected_s3["AWS_DEFAULT_REGION"]
    cache_dirs = set()
    for name in FLEET_REPLICAS:
        replica = fleet[name]
        environment = replica["environment"]
        assert s3_environment(replica) == expected_s3, name
        assert float(environment[f"{ENV_PREFIX}ALIAS_POLL_S"]) > 0
        cache_dir = environment[f"{ENV_PREFIX}CACHE_DIR"]
        assert cache_dir in tmpfs_of(replica), name  # writable by the image's user (mode 1777), per container
        assert cache_dir != IMAGE_STORE and IMAGE_STORE not in mounts_of(replica)  # not the `models` volume
        assert {dep: spec["condition"] for dep, spec in replica["depends_on"].items()} == {
            FLEET_STORE_INIT: "service_completed_successfully"}, name
        cache_dirs.add(cache_dir)
    # each replica names itself in the store's heartbeats (<hostname>-<pid>), not by a container id
    assert sorted(fleet[name]["hostname"] for name in FLEET_REPLICAS) == sorted(FLEET_REPLICAS)

    # store-bucket: `mc` makes the replicas' bucket on the same endpoint, idempotently, after MinIO is healthy
    assert re.fullmatch(r"minio/mc:RELEASE\.[0-9TZ-]+", bucket_init["image"]), bucket_init["image"]
    script = " ".join(bucket_init["entrypoint"] + bucket_init["command"]) if isinstance(bucket_init["command"], list) \
        else f"{bucket_init.get('entrypoint')} {bucket_init['command']}"
    alias = re.search(r"mc alias set (\S+) (\S+) ", script)
    assert alias and alias.group(2) == f"http://{FLEET_MINIO}:9000", script
    assert f"mc mb --ignore-existing {alias.group(1)}/{url.netloc}" in script
    assert {key: bucket_init["environment"][key] for key in root} == root
    assert {dep: spec["condition"] for dep, spec in bucket_init["depends_on"].items()} == {FLEET_MINIO: "service_healthy"}

    # store-init: the image's registry CLI uploads the image's store to the replicas' URL, once the bucket exists
    cpu = fleet["modelhouse"]
    assert store_init["image"] == cpu["image"] and store_init["build"] == cpu["build"]
    assert store_init["command"] == ["python", "-m", "models.registry", "--store", IMAGE_STORE, "upload", store]
    assert s3_environment(store_init) == expected_s3
    assert {dep: spec["condition"] for dep, spec in store_init["depends_on"].items()} == {
        FLEET_BUCKET_INIT: "service_completed_successfully"}
    for one_shot in (bucket_init, store_init):  # run to completion, not restarted
        assert one_shot.get("restart", "no") == "no"


def test_compose_fleet_credentials_from_variables(compose_config):
    """MINIO_ROOT_USER and MINIO_ROOT_PASSWORD reach MinIO, the bucket's creation and every S3 client."""
    fleet = compose_config("fleet", MINIO_ROOT_USER="fleet-user", MINIO_ROOT_PASSWORD="s3cret-from-env",
                           MINIO_PORT="19000", MINIO_CONSOLE_PORT="19001")["services"]
    for name in (FLEET_MINIO, FLEET_BUCKET_INIT):
        assert (fleet[name]["environment"]["MINIO_ROOT_USER"], fleet[name]["environment"]["MINIO_ROOT_PASSWORD"]) == (
            "fleet-user", "s3cret-from-env"), name
    for name in (FLEET_STORE_INIT, *FLEET_REPLICAS):
        environment = fleet[name]["environment"]
        assert (environment["AWS_ACCESS_KEY_ID"], environment["AWS_SECRET_ACCESS_KEY"]) == (
            "fleet-user", "s3cret-from-env"), name
    assert published_ports(fleet[FLEET_MINIO]) == {9000: "19000", 9001: "19001"}


def test_store_init_runs_the_registry_cli(compose_config):
    """store-init's command parses with the image's registry CLI (models/registry/__main__.py), its
    `--store` is the image's store (Dockerfile) and its target the replicas' store."""
    from models.registry.__main__ import build_parser

    fleet = compose_config("fleet")["services"]
    command = fleet[FLEET_STORE_INIT]["command"]
    assert command[:3] == ["python", "-m", "models.registry"]
    assert dockerfile(r"^COPY .*\bmodels/store/ (\S+?)/?$") == IMAGE_STORE  # where the image has its models
    args = build_parser().parse_args(command[3:])
    assert args.command == "upload" and str(args.store) == IMAGE_STORE
    assert str(args.url) == fleet[FLEET_REPLICAS[0]]["environment"][f"{ENV_PREFIX}STORE"] and not args.tasks


def nginx_directives(text: str, name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^\s*{name}\s+([^;]*);", text, re.MULTILINE)]


def test_nginx_fleet_conf():
    text = NGINX_CONF.read_text()
    upstream = re.search(r"^upstream\s+(\S+)\s*\{(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    assert upstream, "no upstream block"
    servers = [s.split()[0] for s in nginx_directives(upstream.group(2), "server")]
    assert servers == [f"{name}:{IMAGE_PORT}" for name in FLEET_REPLICAS]
    assert nginx_directives(text, "proxy_pass") == [f"http://{upstream.group(1)}"]
    # keep-alive to the replicas, closed by nginx before the service would close it
    assert nginx_directives(upstream.group(2), "keepalive")
    (idle,) = nginx_directives(upstream.group(2), "keepalive_timeout")
    assert float(idle.rstrip("s")) < Settings.model_fields["keep_alive_timeout_s"].default
    assert nginx_directives(text, "proxy_http_version") == ["1.1"]
    assert 'Connection ""' in nginx_directives(text, "proxy_set_header")
    assert any(h.startswith("X-Request-ID ") for h in nginx_directives(text, "proxy_set_header"))
    # the service's body limit
    (body,) = nginx_directives(text, "client_max_body_size")
    assert int(body.rstrip("m")) * 1024 * 1024 == Settings.model_fields["max_request_bytes"].default
    # a POST that reached a replica is never sent to the other one
    (retry,) = nginx_directives(text, "proxy_next_upstream")
    assert "non_idempotent" not in retry.split()


def test_nginx_accepts_fleet_conf(tmp_path):
    """`nginx -t` on the fleet config inside a minimal nginx.conf, as the official image includes it (in
    `http { }`). Its upstream names resolve only on the compose network: 127.0.0.1 stands in for them."""
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if not nginx:
        missing("nginx is needed for `nginx -t`: apt-get install nginx")
    names = "|".join(map(re.escape, FLEET_REPLICAS))
    conf = re.sub(rf"\bserver\s+(?:{names}):", "server 127.0.0.1:", NGINX_CONF.read_text())
    assert conf.count("server 127.0.0.1:") == len(FLEET_REPLICAS)
    (tmp_path / "fleet.conf").write_text(conf)
    temp_paths = "".join(f"    {kind}_temp_path {tmp_path / kind};\n"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{\n{temp_paths}    include {tmp_path / 'fleet.conf'};\n}}\n")
    done = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                           "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
