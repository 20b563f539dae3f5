"""Kubernetes (deploy/k8s), checked offline: no cluster. `kubectl kustomize` renders the base and each
overlay, kubernetes-validate checks every document against the bundled, strict schemas of one Kubernetes
version, and the properties that matter are asserted against the image (Dockerfile), the app's routes and
its `Settings`.

A missing tool skips its tests on a developer machine but FAILS them in CI (CI=true), where `.ci/run`
installs kubectl. KUBECTL=/path/to/kubectl picks another kubectl (e.g. Debian's 1.20, whose kustomize is the
oldest the manifests are written for).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.settings import Settings
from app.workers import STOP_GRACE_S

from tests.deploy.facts import KUSTOMIZATIONS, KUBERNETES_VERSION, ENV_PREFIX, IMAGE_PORT, IMAGE_UID, IMAGE_GID, IMAGE_STORE, HEALTH_ROUTES, missing, dockerfile
from tests.deploy.facts import K8S, S3_CREDENTIALS, S3_ENV, S3_STORE_SETTINGS, PENDING_SETTINGS, is_service_variable


def test_dockerfile_facts_agree():
    """The figures the manifests are checked against: the CMD's port is the exposed one."""
    assert f'"--port", "{IMAGE_PORT}"' in dockerfile(r"^(CMD .*)$")
    assert {"/healthz", "/readyz", "/metrics"} <= HEALTH_ROUTES


# ---- Kubernetes ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kubectl() -> str:
    path = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not path:
        missing("kubectl is needed for `kubectl kustomize`: apt-get install kubernetes-client")
    return path


@pytest.fixture(scope="module")
def rendered(kubectl: str) -> Callable[[str], list[dict[str, Any]]]:
    """`kubectl kustomize <dir>` of a kustomization, as documents (rendered once per name)."""
    cache: dict[str, list[dict[str, Any]]] = {}

    def render(name: str) -> list[dict[str, Any]]:
        if name not in cache:
            done = subprocess.run([kubectl, "kustomize", str(KUSTOMIZATIONS[name])], capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            cache[name] = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
        return cache[name]

    return render


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is needed (the dev extra: pip install -e '.[dev]')")
    return kubernetes_validate


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "modelhouse"]
    return container


def port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port (a number, or the name of one of the container's ports) as a number."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_kustomization_renders_valid_documents(name, rendered, kubernetes_validate):
    docs = rendered(name)
    kinds = sorted(doc["kind"] for doc in docs)
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    if name == "rwx-volume":
        expected.append("PersistentVolumeClaim")
    assert kinds == sorted(expected)
    for doc in docs:
        # raises kubernetes_validate.ValidationError (unknown field, wrong type, missing required field)
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_validation_is_strict_and_offline(kubernetes_validate):
    """The validator catches a misspelt field (strict), from the schemas bundled with the package."""
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
                  "spec": {"replica": 2, "selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}},
                                        "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_deployment(name, rendered):
    docs = rendered(name)
    deployment = only(docs, "Deployment")
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    assert spec["replicas"] == 2
    assert selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    container = server_container(deployment)
    assert container["image"] == "modelhouse:cpu"
    (port,) = container["ports"]
    assert port["containerPort"] == IMAGE_PORT

    probes = {probe: container[probe]["httpGet"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe, get in probes.items():
        assert get["path"] in HEALTH_ROUTES, probe
        assert port_number(container, get["port"]) == IMAGE_PORT, probe
    # a cold start (every model loaded before the port listens) gets minutes, not the liveness probe's 30 s
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in HEALTH_ROUTES and annotations["prometheus.io/port"] == str(IMAGE_PORT)

    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (IMAGE_UID, IMAGE_GID)
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    for each in [container, *pod.get("initContainers", [])]:
        security = each["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, each["name"]
        assert security["allowPrivilegeEscalation"] is False, each["name"]
        assert security["capabilities"]["drop"] == ["ALL"], each["name"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(each["resources"][kind]), (each["name"], kind)

    # one worker process per CPU of the limit (the default would count the node's cores)
    config = only(docs, "ConfigMap")
    assert config["data"]["MODELHOUSE_WORKERS"] == str(container["resources"]["limits"]["cpu"])
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]
    (env_from,) = container["envFrom"]
    assert env_from["configMapRef"]["name"] == config["metadata"]["name"]  # the generated (hashed) name

    # the admin token, from an optional Secret: without it the service runs with mutations disabled
    env = {e["name"]: e for e in container["env"]}
    token = env["MODELHOUSE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["optional"] is True and token["name"] and token["key"]
    for variable in env:
        assert is_service_variable(variable), f"{variable}: not a setting of the service"

    # the launcher's grace for its workers after SIGTERM, after the preStop pause, before the SIGKILL
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= STOP_GRACE_S + int(pause[1]) + 5

    # the root filesystem is read-only: tempfile (the Prometheus multiprocess directory) needs /tmp
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    if name in ("base", "s3-store"):  # the image's own store, read-only like the rest of the root filesystem
        assert IMAGE_STORE not in mounts


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_config_map_holds_real_settings(name, rendered, monkeypatch):
    data = only(rendered(name), "ConfigMap")["data"]
    for variable in data:
        assert is_service_variable(variable), f"{variable}: no such setting"
    assert data["MODELHOUSE_STORE_DIR"] == IMAGE_STORE
    for variable in [v for v in os.environ if v.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(variable)
    for variable, value in data.items():
        monkeypatch.setenv(variable, value)
    settings = Settings()  # every value parses as the service would read it
    assert str(settings.store_dir) == IMAGE_STORE and settings.device == "cpu"
    assert settings.workers == int(data["MODELHOUSE_WORKERS"])


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_service_hpa_and_pdb_select_the_deployment(name, rendered):
    docs = rendered(name)
    deployment = only(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = server_container(deployment)

    service = only(docs, "Service")
    assert selects(service["spec"]["selector"], labels)
    (port,) = service["spec"]["ports"]
    assert port_number(container, port["targetPort"]) == IMAGE_PORT

    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)

    hpa = only(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"


def test_rwx_overlay_shares_one_writable_store(rendered):
    docs = rendered("rwx-volume")
    claim = only(docs, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in server_container(only(docs, "Deployment"))["volumeMounts"]}
    store = volumes[mounts[IMAGE_STORE]]
    assert store["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert pod["securityContext"]["fsGroup"] == IMAGE_GID  # the claim is writable by the image's group
    (seed,) = pod["initContainers"]
    assert seed["image"] == "modelhouse:cpu"
    (seed_mount,) = seed["volumeMounts"]
    # the claim elsewhere, so that the image's copy stays visible at the store path
    assert seed_mount["name"] == mounts[IMAGE_STORE] and seed_mount["mountPath"] != IMAGE_STORE
    assert seed["command"][-2:] == [IMAGE_STORE, seed_mount["mountPath"]]


def test_seed_store_copies_what_the_claim_lacks(rendered, tmp_path):
    """The overlay's init container, run here on small stores: missing entries copied, existing ones kept."""
    (seed,) = only(rendered("rwx-volume"), "Deployment")["spec"]["template"]["spec"]["initContainers"]
    image, claim = tmp_path / "image", tmp_path / "claim"
    for path, text in {"digits/v1/manifest.json": "{}", "digits/aliases.json": '{"production": "v1"}',
                       "rnn/aliases.json": '{"production": "new"}', "routes.json": '{"/digits": "digits"}',
                       ".aliases.lock": "", "_replicas/x.json": "{}"}.items():
        (image / path).parent.mkdir(parents=True, exist_ok=True)
        (image / path).write_text(text)
    (claim / "rnn").mkdir(parents=True)
    (claim / "rnn" / "aliases.json").write_text('{"production": "promoted"}')
    command = [sys.executable if seed["command"][0] == "python" else seed["command"][0],
               *seed["command"][1:-2], str(image), str(claim)]

    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.split("\n")[:-1] == ["seeded digits", "seeded routes.json"]
    assert (claim / "digits" / "v1" / "manifest.json").read_text() == "{}"
    assert (claim / "routes.json").read_text() == '{"/digits": "digits"}'
    assert (claim / "rnn" / "aliases.json").read_text() == '{"production": "promoted"}'  # kept
    assert sorted(p.name for p in claim.iterdir()) == [".seed.lock", "digits", "rnn", "routes.json"]

    again = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout == "", again.stderr


# ---- The S3 store (overlays/s3-store) ---------------------------------------------------------------

def test_s3_overlay_store_credentials_and_cache(rendered):
    docs = rendered("s3-store")
    deployment = only(docs, "Deployment")
    pod, container = deployment["spec"]["template"]["spec"], server_container(deployment)
    data = only(docs, "ConfigMap")["data"]

    # the store: s3://BUCKET/PREFIX, with the S3 client's endpoint and region beside it
    store = urlsplit(data[f"{ENV_PREFIX}STORE"])
    assert store.scheme == "s3" and re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", store.netloc), store
    assert store.path.strip("/") and not store.query and not store.fragment
    endpoint = urlsplit(data["AWS_ENDPOINT_URL"])
    assert endpoint.scheme in ("http", "https") and endpoint.hostname
    assert data["AWS_DEFAULT_REGION"]
    assert float(data[f"{ENV_PREFIX}ALIAS_POLL_S"]) > 0

    # the keys come from a Secret (not rendered here), never from the ConfigMap; both are required
    assert not set(S3_CREDENTIALS) & set(data)
    env = {e["name"]: e for e in container["env"]}
    refs = [env[name]["valueFrom"]["secretKeyRef"] for name in S3_CREDENTIALS]
    assert len({ref["name"] for ref in refs}) == 1 and len({ref["key"] for ref in refs}) == len(refs)
    assert not any(ref.get("optional") for ref in refs)
    assert "Secret" not in {doc["kind"] for doc in docs}
    assert set(S3_ENV) <= set(env) | set(data)
    assert f"{ENV_PREFIX}ADMIN_TOKEN" in env  # the base's env is kept (merged by name)

    # each replica's cache: an emptyDir of its own on MODELHOUSE_CACHE_DIR, next to /tmp; the root
    # filesystem stays read-only and the image's store is not mounted over
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    cache_dir = data[f"{ENV_PREFIX}CACHE_DIR"]
    cache = mounts[cache_dir]
    assert not cache.get("readOnly") and "emptyDir" in volumes[cache["name"]]
    assert cache["name"] != mounts["/tmp"]["name"]
    assert cache_dir not in ("/tmp", IMAGE_STORE) and not cache_dir.startswith(IMAGE_STORE + "/")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "persistentVolumeClaim" not in str(volumes) and not pod.get("initContainers")

    # the probes stay on /readyz and /healthz: /readyz answers 200 while the store is unreachable
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_s3_overlay_only_adds_to_the_base(rendered):
    """The overlay changes the store and nothing else: the base's settings and pod stand as they are."""
    base, s3 = rendered("base"), rendered("s3-store")
    base_data, s3_data = only(base, "ConfigMap")["data"], only(s3, "ConfigMap")["data"]
    assert {key: s3_data[key] for key in base_data} == base_data
    assert only(base, "ConfigMap")["metadata"]["name"] != only(s3, "ConfigMap")["metadata"]["name"]  # rolls the pods
    base_container, s3_container = server_container(only(base, "Deployment")), server_container(only(s3, "Deployment"))
    for key in ("image", "ports", "resources", "startupProbe", "readinessProbe", "livenessProbe", "securityContext"):
        assert s3_container[key] == base_container[key], key


def test_s3_store_settings_are_settings(rendered, monkeypatch):
    """The overlay's MODELHOUSE_* variables for the S3 store are Settings fields and parse as such. Skipped
    while Settings has none of them (the S3 store is not in the service yet); failed when it has some only."""
    if PENDING_SETTINGS == set(S3_STORE_SETTINGS):
        pytest.skip(f"Settings has none of the S3 store's settings yet: {', '.join(S3_STORE_SETTINGS)}")
    assert not PENDING_SETTINGS, f"Settings lacks {sorted(PENDING_SETTINGS)} (the S3 store's contract)"
    data = only(rendered("s3-store"), "ConfigMap")["data"]
    for variable in [v for v in os.environ if v.startswith(ENV_PREFIX) or v in S3_ENV]:
        monkeypatch.delenv(variable)
    for variable, value in data.items():
        monkeypatch.setenv(variable, value)
    settings = Settings()
    assert str(settings.store) == data[f"{ENV_PREFIX}STORE"]
    assert str(settings.cache_dir) == data[f"{ENV_PREFIX}CACHE_DIR"]
    assert settings.alias_poll_s == float(data[f"{ENV_PREFIX}ALIAS_POLL_S"])


def test_every_overlay_is_checked_and_listed():
    """Each overlay directory is rendered by these tests and named in the base's header comment."""
    overlays = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
    assert overlays == sorted(name for name in KUSTOMIZATIONS if name != "base")
    header = (K8S / "base" / "kustomization.yaml").read_text()
    for overlay in overlays:
        assert f"kubectl apply -k deploy/k8s/overlays/{overlay} " in header, overlay


# ---- Compose ----------------------------------------------------------------------------------------
