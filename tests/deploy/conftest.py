"""The deployment files under test, and a real nginx running the shipped config.

* ``nginx_binary``: Debian's (or any) ``nginx``; missing, it fails the tests under CI
  (``CI=true``) and skips them elsewhere, like Redis for the multi-node tests.
* ``start_nginx``: a factory of `Nginx` processes in front of given nodes, running
  ``deploy/nginx/memoryd.conf`` itself with only its upstream servers and listen address
  replaced by loopback ports (`loopback_site`); stopped when the test ends.

The multi-node fixtures (``cluster``, ``redis_url``, ``private_redis``...) are those of
tests/multinode, imported here so that pytest offers them to these tests too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import pytest
import pytest_asyncio
import yaml

from tests.multinode.conftest import (  # noqa: F401  (fixtures, offered to tests/deploy)
    Node,
    cluster,
    free_port,
    log_tail,
    node_data_dir,
    private_redis,
    redis_url,
    unavailable,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NGINX_SITE = DEPLOY / "nginx" / "memoryd.conf"
# The lines of the shipped config that the loopback copy replaces, nothing else.
UPSTREAM_SERVERS = ("server memoryd-a:8080", "server memoryd-b:8080")
LISTEN = "listen 80;"
START_TIMEOUT = 10.0


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no YAML document"
    return docs


# -- nginx ----------------------------------------------------------------------------------


def find_nginx() -> str | None:
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    binary = find_nginx()
    if binary is None:
        unavailable("nginx is not installed (Debian: apt-get install nginx-light)")
    assert binary is not None
    return binary


def loopback_site(listen_port: int, upstream_ports: Sequence[int]) -> str:
    """deploy/nginx/memoryd.conf with its two upstream servers and its listen address on
    127.0.0.1; every other line is the shipped one."""
    replacements = {
        **{
            f"{line} ": f"server 127.0.0.1:{port} "
            for line, port in zip(UPSTREAM_SERVERS, upstream_ports, strict=True)
        },
        LISTEN: f"listen 127.0.0.1:{listen_port};",
    }
    found = dict.fromkeys(replacements, 0)
    lines = []
    for line in NGINX_SITE.read_text().splitlines(keepends=True):
        for old, new in replacements.items():
            if line.lstrip().startswith(old):  # a directive, not a comment that names it
                line = line.replace(old, new, 1)
                found[old] += 1
        lines.append(line)
    assert set(found.values()) == {1}, (
        f"{NGINX_SITE} no longer has each of {list(found)} once ({found}): "
        "update tests/deploy/conftest.py"
    )
    return "".join(lines)


def _compiled_temp_paths(binary: str) -> list[str]:
    """The temp-path directives of the modules this nginx was built with: each defaults to
    a directory under /var/lib/nginx, which a non-root user cannot create."""
    built = subprocess.run([binary, "-V"], capture_output=True, text=True, check=True).stderr
    directives = ["client_body_temp_path", "proxy_temp_path"]
    for module in ("fastcgi", "uwsgi", "scgi"):
        if f"--without-http_{module}_module" not in built:
            directives.append(f"{module}_temp_path")
    return directives


class Nginx:
    """One nginx master (foreground) on 127.0.0.1:<port>, with its own prefix directory:
    configuration, pid, logs and temp files all live there, so it runs as root (workers as
    nginx's default unprivileged user) or as any other user alike."""

    def __init__(self, binary: str, prefix: Path, upstream_ports: Sequence[int]) -> None:
        self.binary = binary
        self.prefix = prefix
        self.port = free_port()
        self.conf = prefix / "nginx.conf"
        self.error_log = prefix / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: BinaryIO | None = None
        prefix.mkdir(parents=True)
        site = prefix / "memoryd.conf"
        site.write_text(loopback_site(self.port, upstream_ports))
        temp = "\n".join(
            f"    {directive} {prefix / directive.removesuffix('_temp_path')};"
            for directive in _compiled_temp_paths(binary)
        )
        # What the official image's /etc/nginx/nginx.conf provides around conf.d/*.conf.
        self.conf.write_text(
            f"daemon off;\n"
            f"worker_processes 2;\n"
            f"pid {prefix / 'nginx.pid'};\n"
            f"error_log {self.error_log} info;\n"
            f"events {{\n    worker_connections 256;\n}}\n"
            f"http {{\n"
            f"    access_log {prefix / 'access.log'};\n"
            f"{temp}\n"
            f"    include {site};\n"
            f"}}\n"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _command(self, *extra: str) -> list[str]:
        prefix, conf, error_log = str(self.prefix), str(self.conf), str(self.error_log)
        return [self.binary, "-p", prefix, "-c", conf, "-e", error_log, *extra]

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on this configuration."""
        return subprocess.run(self._command("-t"), capture_output=True, text=True, timeout=30)

    def _spawn(self) -> subprocess.Popen[bytes]:
        checked = self.check()
        assert checked.returncode == 0, f"nginx -t failed:\n{checked.stderr}"
        self._out = (self.prefix / "stdout.log").open("ab")
        return subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def start(self, http: aiohttp.ClientSession) -> None:
        """``nginx -t``, then nginx itself; returns once it answers."""
        self.proc = self._spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(
                    self.url + "/nginx-health", timeout=aiohttp.ClientTimeout(total=1)
                ) as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not answer in {START_TIMEOUT} s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM to the master (fast shutdown; it stops its workers), SIGKILL if stuck."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if self._out is not None:
            self._out.close()
            self._out = None

    def log_tail(self, lines: int = 30) -> str:
        return log_tail(self.error_log, lines)


StartNginx = Callable[[Sequence[Node]], Awaitable[Nginx]]


@pytest.fixture
def nginx_dir(scratch_dir: Path) -> Path:
    return scratch_dir / f"nginx-{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture
async def start_nginx(nginx_binary: str, nginx_dir: Path) -> AsyncIterator[StartNginx]:
    """``await start_nginx([node_a, node_b])``: nginx in front of those two nodes."""
    servers: list[Nginx] = []
    async with aiohttp.ClientSession() as http:

        async def start(nodes: Sequence[Node]) -> Nginx:
            server = Nginx(nginx_binary, nginx_dir / str(len(servers)), [n.port for n in nodes])
            servers.append(server)
            await server.start(http)
            return server

        try:
            yield start
        finally:
            for server in servers:
                server.stop()
