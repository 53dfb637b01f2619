"""The deployment files agree with memoryd and with each other.

No image is built or pulled here (`make lint` runs hadolint, kubernetes-validate and
yamllint on the same files): these tests read the Dockerfile, .dockerignore, the compose
stack, its nginx config and the Kubernetes manifests, and check what a linter cannot: the
ports, paths, names, timeouts and settings that must match across them and memoryd's own
configuration (every variable set anywhere is one memoryd reads, with a value it accepts).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from memoryd.config import Settings
from memoryd.errors import ConfigError
from tests.deploy.conftest import DEPLOY, NGINX_SITE, ROOT, load_yaml_documents
from tests.multinode.conftest import free_port

K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / "memoryd.env.example"
PORT = 8080
VALID_SECRET = "x" * 40


def memoryd_variables() -> set[str]:
    """Every environment variable memoryd reads (the pattern of tests/test_docs.py)."""
    text = (ROOT / "memoryd" / "config.py").read_text()
    names = set(re.findall(r'e\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', text))
    assert len(names) > 20
    return names


def accepted(env: dict[str, str]) -> Settings:
    """memoryd's own validation of a set of variables (raises ConfigError)."""
    return Settings.from_env(env)


def seconds(value: str | int) -> float:
    """``40s``, ``1m30s``, ``90`` -> seconds."""
    if isinstance(value, int):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s?)?", str(value).strip())
    assert parts and any(parts.groups()), f"not a duration: {value!r}"
    return int(parts[1] or 0) * 60.0 + int(parts[2] or 0)


# -- Dockerfile -----------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions, ``(INSTRUCTION, arguments)``, one list per stage."""
    logical: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append((instruction.upper(), args.strip()))
    return stages


def only(stage: list[tuple[str, str]], instruction: str) -> str:
    found = [args for name, args in stage if name == instruction]
    assert len(found) == 1, f"expected one {instruction} in the final stage, got {found}"
    return found[0]


def final_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def healthcheck_command() -> list[str]:
    args = only(final_stage(), "HEALTHCHECK")
    _, _, command = args.partition(" CMD ")
    return list(json.loads(command))


def test_the_dockerfile_builds_apart_and_runs_a_slim_non_root_image() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a build stage and the runtime image"
    bases = [stage[0][1].split()[0] for stage in stages]
    assert all(base.startswith("python:3.11-slim") for base in bases), bases
    build_names = [stage[0][1].split()[-1] for stage in stages[:-1]]

    final = final_stage()
    copies = [args for name, args in final if name == "COPY"]
    assert any(f"--from={n}" in c for c in copies for n in build_names), copies
    runs = " ".join(args for name, args in final if name == "RUN")
    for build_only in ("pip install", "gcc", "build-essential", "-dev "):
        assert build_only not in runs, f"the runtime image runs {build_only!r}"
    # Its one system package is a runtime one: ffmpeg, which voice transcription needs;
    # no recommends, no apt lists left in the layer.
    assert "apt-get install -y --no-install-recommends ffmpeg" in runs, runs
    assert "rm -rf /var/lib/apt/lists/*" in runs, runs

    user = only(final, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, "a numeric, non-root user"
    assert only(final, "EXPOSE") == str(PORT)
    assert only(final, "STOPSIGNAL") == "SIGTERM"
    assert json.loads(only(final, "ENTRYPOINT")) == ["memoryd"]
    assert json.loads(only(final, "CMD")) == ["serve", "--host", "0.0.0.0", "--port", str(PORT)]
    assert f"127.0.0.1:{PORT}/health" in " ".join(healthcheck_command())


async def _run_healthcheck(port: int) -> int:
    command = [
        part.replace(f"127.0.0.1:{PORT}", f"127.0.0.1:{port}") for part in healthcheck_command()
    ]
    assert command[0] == "python"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *command[1:],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(proc.wait(), 30)


@pytest.mark.parametrize("status", [200, 503])
async def test_the_image_healthcheck_passes_only_on_a_healthy_answer(status: int) -> None:
    """The HEALTHCHECK command itself (on another port): exit 0 on 200, not on 503 or on
    a closed port."""

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "x"}, status=status)

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        assert (await _run_healthcheck(port) == 0) is (status == 200)
    finally:
        await runner.cleanup()
    assert await _run_healthcheck(free_port()) != 0


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = "".join(
            ".*" if token == "**" else "[^/]*" if token == "*" else re.escape(token)
            for token in re.split(r"(\*\*|\*)", body)
        )
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("pyproject.toml", False),
        ("README.md", False),
        ("memoryd/cli.py", False),
        ("memoryd/storage/migrations/0001_initial.sql", False),
        ("memoryd/server/__pycache__/app.cpython-311.pyc", True),
        (".env", True),
        ("data/keys/jwt_rs256.pem", True),
        (".venv/bin/python", True),
        (".git/HEAD", True),
        ("deploy/memoryd.env", True),
        ("tests/conftest.py", True),
    ],
)
def test_the_build_context_holds_the_sources_and_no_secrets(path: str, excluded: bool) -> None:
    assert _dockerignore_excludes(path) is excluded


def test_the_dockerfile_copies_only_what_the_build_context_keeps() -> None:
    for stage in dockerfile_stages():
        for name, args in stage:
            if name == "COPY" and "--from=" not in args:
                *sources, _ = args.split()
                for source in sources:
                    assert (ROOT / source).exists(), source
                    assert not _dockerignore_excludes(source.rstrip("/")), source


# -- compose --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_yaml_documents(COMPOSE)
    return doc


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def memoryd_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("build", {}).get("dockerfile") == "Dockerfile"
    }


def nodes_of(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in memoryd_services(compose).items()
        if svc.get("command") in (None, ["serve", "--host", "0.0.0.0", "--port", str(PORT)])
    }


def test_the_stack_has_postgres_redis_two_nodes_and_nginx(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("pgvector/pgvector:pg")
    assert services["redis"]["image"].startswith("redis:")
    assert services["nginx"]["image"].startswith("nginx:")
    nodes = nodes_of(compose)
    assert sorted(nodes) == ["memoryd-a", "memoryd-b"]
    for svc in memoryd_services(compose).values():
        assert (COMPOSE.parent / svc["build"]["context"]).resolve() == ROOT
    (migrate,) = [s for n, s in memoryd_services(compose).items() if n not in nodes]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    # only nginx is reachable from outside
    assert [name for name, svc in services.items() if svc.get("ports")] == ["nginx"]
    (published,) = services["nginx"]["ports"]
    assert published.endswith(":80")  # the shipped config's "listen 80;"


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if svc.get("restart") == "no":
            continue
        check = svc.get("healthcheck", {})
        assert not check.get("disable") and check.get("test"), f"{name} has no healthcheck"
    for svc in nodes_of(compose).values():
        assert svc["healthcheck"]["test"] == ["CMD", *healthcheck_command()]


def test_nodes_start_after_their_dependencies_and_nginx_after_the_nodes(
    compose: dict[str, Any],
) -> None:
    for svc in nodes_of(compose).values():
        assert svc["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }
    assert compose["services"]["nginx"]["depends_on"] == {
        name: {"condition": "service_healthy"} for name in nodes_of(compose)
    }


def test_secrets_come_from_the_env_file_only(compose: dict[str, Any]) -> None:
    example = env_example()
    for name in ("postgres", *memoryd_services(compose)):
        assert compose["services"][name]["env_file"] == "memoryd.env", name
    for name, svc in compose["services"].items():
        inline = set(svc.get("environment", {}))
        leaked = inline & {"DATABASE_URL", "MEMORYD_SECRET_KEY", "POSTGRES_PASSWORD"}
        assert not leaked, f"{name} sets {leaked} inline"
    assert "memoryd.env" in (DEPLOY / ".gitignore").read_text().split()

    # DATABASE_URL points at the postgres service with the role the image creates
    url = urlsplit(example["DATABASE_URL"])
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == example["POSTGRES_USER"]
    assert url.password == example["POSTGRES_PASSWORD"]
    assert url.path == "/" + example["POSTGRES_DB"]

    # the placeholder secret is refused, so a copy left unedited cannot start a node
    with pytest.raises(ConfigError, match="MEMORYD_SECRET_KEY"):
        accepted(example)


def test_the_nodes_settings_are_accepted_by_memoryd(compose: dict[str, Any]) -> None:
    known = memoryd_variables()
    example = env_example()
    assert set(example) - known == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    for name, svc in nodes_of(compose).items():
        environment = {k: str(v) for k, v in svc["environment"].items()}
        assert set(environment) <= known, f"{name}: unknown {set(environment) - known}"
        settings = accepted({**example, "MEMORYD_SECRET_KEY": VALID_SECRET, **environment})
        assert settings.trust_proxy, "behind nginx"
        assert urlsplit(settings.redis_url or "").hostname == "redis"
        assert seconds(svc["stop_grace_period"]) > 1.5 * settings.shutdown_timeout
        # one shared volume at the data dir: one generated JWT key for both nodes
        assert f"memoryd-data:{settings.data_dir}" in svc["volumes"]


def test_nginx_mounts_the_shipped_config_and_proxies_to_both_nodes(
    compose: dict[str, Any],
) -> None:
    (mount,) = compose["services"]["nginx"]["volumes"]
    source, target, mode = mount.split(":")
    assert (COMPOSE.parent / source).resolve() == NGINX_SITE
    assert target == "/etc/nginx/conf.d/default.conf" and mode == "ro"
    servers = re.findall(r"^\s*server\s+(\S+)", upstream_block(), re.M)
    assert servers == [f"{name}:{PORT}" for name in nodes_of(compose)]


# -- nginx config ---------------------------------------------------------------------------


def nginx_text() -> str:
    """The shipped config without its comments."""
    return "\n".join(line.split("#")[0] for line in NGINX_SITE.read_text().splitlines())


def blocks(keyword: str) -> Iterator[tuple[str, str]]:
    """``(header, body)`` of every ``keyword ... { body }`` block (one level of nesting)."""
    text = nginx_text()
    for match in re.finditer(rf"\b{keyword}\b([^{{;]*)\{{", text):
        depth, start = 1, match.end()
        end = start
        while depth:
            char = text[end]
            depth += {"{": 1, "}": -1}.get(char, 0)
            end += 1
        yield match.group(1).strip(), text[start : end - 1]


def upstream_block() -> str:
    (block,) = [body for header, body in blocks("upstream") if header == "memoryd"]
    return block


def directive(name: str, text: str) -> list[str]:
    return [m.strip() for m in re.findall(rf"^\s*{name}\s+([^;]+);", text, re.M)]


def test_nginx_balances_without_stickiness() -> None:
    block = upstream_block()
    for sticky in ("ip_hash", "hash", "sticky"):
        assert not directive(sticky, block) and not re.search(rf"^\s*{sticky}\s*;", block, re.M)
    assert len(directive("server", block)) == 2


def test_nginx_passes_websocket_upgrades_and_outlasts_the_heartbeat() -> None:
    text = nginx_text()
    assert re.search(r"map\s+\$http_upgrade\s+\$connection_upgrade\s*\{", text)
    assert directive("proxy_http_version", text) == ["1.1"]
    headers = dict(h.split(None, 1) for h in directive("proxy_set_header", text))
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    heartbeat = Settings().ws_heartbeat
    (ws,) = [body for header, body in blocks("location") if header.split()[-1] == "/ws"]
    for timeout in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = directive(timeout, ws)
        assert seconds(value) >= 2 * heartbeat, f"{timeout} {value} vs heartbeat {heartbeat}"


def test_no_location_drops_the_proxy_headers() -> None:
    """nginx inherits proxy_set_header into a location only if it sets none itself: one
    proxy_set_header in a location would silently drop X-Forwarded-For and the upgrade."""
    for header, body in blocks("location"):
        assert not directive("proxy_set_header", body), f"location {header} sets headers"


def test_nginx_sets_the_client_address_and_skips_a_dead_node() -> None:
    text = nginx_text()
    headers = dict(h.split(None, 1) for h in directive("proxy_set_header", text))
    # memoryd takes the last X-Forwarded-For address; nginx replaces the header with its
    # peer, so nothing the client sent reaches the nodes at all
    assert headers["X-Forwarded-For"] == "$remote_addr"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    (next_upstream,) = directive("proxy_next_upstream", text)
    assert {"error", "timeout"} <= set(next_upstream.split())
    assert "non_idempotent" not in next_upstream  # a POST that reached a node is not resent
    (body_limit,) = directive("client_max_body_size", text)
    assert int(body_limit.removesuffix("m")) * 1024 * 1024 >= Settings().max_body_bytes


# -- Kubernetes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    """Every manifest of deploy/k8s by kind (one object of each)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_yaml_documents(path):
            assert doc["kind"] not in objects, f"two {doc['kind']} objects"
            objects[doc["kind"]] = doc
    return objects


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def container(obj: dict[str, Any]) -> dict[str, Any]:
    (only_container,) = pod_spec(obj)["containers"]
    return only_container  # type: ignore[no-any-return]


def config_map(k8s: dict[str, dict[str, Any]]) -> dict[str, str]:
    return k8s["ConfigMap"]["data"]  # type: ignore[no-any-return]


def test_every_object_the_issue_names_is_there_in_one_namespace(
    k8s: dict[str, dict[str, Any]],
) -> None:
    assert set(k8s) == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Job",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    namespace = k8s["Namespace"]["metadata"]["name"]
    for kind, obj in k8s.items():
        if kind != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, kind


def test_the_config_map_and_secret_hold_settings_memoryd_accepts(
    k8s: dict[str, dict[str, Any]],
) -> None:
    data = config_map(k8s)
    secret = k8s["Secret"]["stringData"]
    assert set(data) <= memoryd_variables(), set(data) - memoryd_variables()
    env_keys = {k for k in secret if k != "jwt_rs256.pem"}
    assert env_keys == {"DATABASE_URL", "REDIS_URL", "MEMORYD_SECRET_KEY"}
    settings = accepted(
        {**data, **{k: secret[k] for k in env_keys}, "MEMORYD_SECRET_KEY": VALID_SECRET}
    )
    assert settings.trust_proxy and settings.database_url and settings.redis_url
    with pytest.raises(ConfigError, match="MEMORYD_SECRET_KEY"):  # the placeholder
        accepted({**data, **{k: secret[k] for k in env_keys}})


def test_the_deployment_probes_drains_and_runs_as_the_image_user(
    k8s: dict[str, dict[str, Any]],
) -> None:
    deployment = k8s["Deployment"]
    spec, main = pod_spec(deployment), container(deployment)
    assert main["args"] == json.loads(only(final_stage(), "CMD"))
    (port,) = main["ports"]
    assert port["containerPort"] == PORT
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert main["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert main["startupProbe"]["httpGet"]["path"] == "/health"
    assert {"cpu", "memory"} <= set(main["resources"]["requests"])
    assert "memory" in main["resources"]["limits"]

    data = config_map(k8s)
    sleep, pause = main["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == "sleep" and int(pause) > 0
    drain = 1.5 * float(data["MEMORYD_SHUTDOWN_TIMEOUT"])
    assert spec["terminationGracePeriodSeconds"] > int(pause) + drain
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    user = int(only(final_stage(), "USER").split(":")[0])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == user

    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in main["env"]}
    secret = k8s["Secret"]
    for name, ref in env.items():
        assert ref == {"name": secret["metadata"]["name"], "key": name}
        assert name in secret["stringData"]
    assert main["envFrom"] == [{"configMapRef": {"name": k8s["ConfigMap"]["metadata"]["name"]}}]

    # the JWT key file named in the ConfigMap is the Secret's key, mounted there
    key_file = Path(data["MEMORYD_JWT_PRIVATE_KEY_FILE"])
    (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == str(key_file.parent)]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert volume["secret"]["items"] == [{"key": "jwt_rs256.pem", "path": key_file.name}]
    mounted = {m["mountPath"] for m in main["volumeMounts"]}
    assert data["MEMORYD_DATA_DIR"] in mounted  # writable with readOnlyRootFilesystem


def test_service_ingress_autoscaler_and_budget_select_the_pods(
    k8s: dict[str, dict[str, Any]],
) -> None:
    deployment, service, ingress = k8s["Deployment"], k8s["Service"], k8s["Ingress"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["sessionAffinity"] == "None"
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == container(deployment)["ports"][0]["name"]

    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    backend = path["backend"]["service"]
    assert backend == {"name": service["metadata"]["name"], "port": {"name": service_port["name"]}}
    annotations = ingress["metadata"]["annotations"]
    assert not [a for a in annotations if "affinity" in a], "no sticky sessions"
    heartbeat = float(config_map(k8s)["MEMORYD_WS_HEARTBEAT"])
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert float(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 2 * heartbeat

    hpa = k8s["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["minReplicas"] >= 2
    surge = deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
    pool = int(config_map(k8s)["MEMORYD_DB_POOL_MAX"])
    # PostgreSQL's default max_connections (100) less its 3 superuser slots
    assert (hpa["maxReplicas"] + surge) * pool + 2 <= 97

    pdb = k8s["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb.get("maxUnavailable", 0) == 1 or pdb["minAvailable"] < hpa["minReplicas"]


def test_the_migration_job_runs_memoryd_migrate_with_the_same_image(
    k8s: dict[str, dict[str, Any]],
) -> None:
    job, deployment = k8s["Job"], k8s["Deployment"]
    migrate = container(job)
    assert migrate["args"] == ["migrate"]
    assert migrate["image"] == container(deployment)["image"]
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in migrate["env"]}
    assert "DATABASE_URL" in env, "without it memoryd would migrate an embedded PostgreSQL"
    assert pod_spec(job)["securityContext"]["runAsUser"] == int(
        only(final_stage(), "USER").split(":")[0]
    )
