"""Compose (docker-compose.yml), checked offline: no Docker engine. `docker compose config` (or Debian's
`docker-compose config`) with and without the `fleet` profile, and that profile's nginx config
(deploy/nginx/fleet.conf), with `nginx -t` where nginx is installed (in CI `.ci/run` installs both).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings

from tests.deploy.facts import REPO, COMPOSE_FILE, NGINX_CONF, FLEET_REPLICAS, FLEET_LB, ENV_PREFIX, IMAGE_PORT, IMAGE_STORE, missing


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
    """The resolved compose file (`config`), with the defaults of its variables (no .env, no PORT...)."""
    env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    env_file.write_text("")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("COMPOSE_", ENV_PREFIX)) and key not in {"PORT", "GPU_PORT", "FLEET_PORT"}}

    def config(*profiles: str) -> dict[str, Any]:
        options = [arg for profile in profiles for arg in ("--profile", profile)]
        done = subprocess.run([*compose, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *options, "config"],
                              capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
        assert done.returncode == 0, done.stderr
        return yaml.safe_load(done.stdout)

    return config


def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """{target: source} of a service's volumes, from the short (1.29) or long (v2) syntax."""
    out = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        out[target] = source
    return out


def published_ports(service: dict[str, Any]) -> dict[int, str]:
    """{container port: host port} of a service."""
    out = {}
    for port in service.get("ports", []):
        if isinstance(port, str):
            host, container = port.rsplit(":", 1)
            out[int(container)] = host.rsplit(":", 1)[-1]
        else:
            out[int(port["target"])] = str(port["published"])
    return out


def test_compose_parses_without_the_fleet(compose_config):
    services = compose_config()["services"]
    assert {"modelhouse"} <= set(services)
    # docker compose v2 leaves profiled services out here; docker-compose 1.29 lists them with their profile
    for name in (*FLEET_REPLICAS, FLEET_LB):
        if name in services:
            assert services[name]["profiles"] == ["fleet"]
    assert published_ports(services["modelhouse"]) == {IMAGE_PORT: "8000"}


def test_compose_fleet_two_replicas_behind_nginx(compose_config):
    plain, fleet = compose_config()["services"], compose_config("fleet")["services"]
    cpu = fleet["modelhouse"]
    assert cpu == plain["modelhouse"]  # the CPU service itself is the same with the profile
    for name in FLEET_REPLICAS:
        replica = fleet[name]
        assert replica["profiles"] == ["fleet"]
        for key in ("image", "environment", "healthcheck", "stop_grace_period"):
            assert replica[key] == cpu[key], (name, key)
        assert mounts_of(replica)[IMAGE_STORE] == mounts_of(cpu)[IMAGE_STORE] == "models"  # one store
        assert not replica.get("ports")  # reached through the balancer only
        assert "/readyz" in " ".join(replica["healthcheck"]["test"])
    lb = fleet[FLEET_LB]
    assert lb["profiles"] == ["fleet"] and lb["image"].startswith("nginx:")
    assert published_ports(lb) == {80: "8080"}
    assert Path(mounts_of(lb)["/etc/nginx/conf.d/default.conf"]) == NGINX_CONF
    assert {name: dep["condition"] for name, dep in lb["depends_on"].items()} == {
        name: "service_healthy" for name in FLEET_REPLICAS}


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
