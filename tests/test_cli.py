"""The ``memoryd`` console script, run as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import jwt
import pytest

from memoryd import __version__
from memoryd.storage.database import create_database_if_missing, drop_database
from memoryd.storage.migrate import available_migrations
from tests.helpers import PASSWORD, Api

pytestmark = pytest.mark.storage

MEMORYD = Path(sys.executable).parent / "memoryd"
TIMEOUT = 60.0


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def _clean_env(**variables: str) -> dict[str, str]:
    """Only what a process needs to run, plus ``variables``: no configuration leaks in."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update(variables)
    return env


async def _memoryd(cwd: Path, *args: str, **variables: str) -> Result:
    """Run ``memoryd *args`` in ``cwd`` with only ``variables`` as configuration."""
    proc = await asyncio.create_subprocess_exec(
        str(MEMORYD),
        *args,
        cwd=cwd,
        env=_clean_env(**variables),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.communicate()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def _assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.code == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("memoryd: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def test_the_console_script_is_installed() -> None:
    assert MEMORYD.exists(), MEMORYD


async def test_version(tmp_path: Path) -> None:
    result = await _memoryd(tmp_path, "version")
    assert result.code == 0, result
    assert result.stdout.strip() == f"memoryd {__version__}"
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MEMORYD_LOG_LEVEL", "loud"),
        ("DATABASE_URL", "mysql://x"),
        ("MEMORYD_SECRET_KEY", "short"),
        ("MEMORYD_RATE_LIMIT_API", "abc"),
        ("MEMORYD_ACCESS_TOKEN_TTL", "soon"),
        ("MEMORYD_TRUST_PROXY", "maybe"),
        ("REDIS_URL", "http://localhost:6379"),
    ],
)
async def test_bad_configuration_is_one_line_and_exit_2(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = await _memoryd(tmp_path, "migrate", **{variable: value})
    _assert_one_error_line(result, variable)
    assert not (tmp_path / "data").exists()  # it stopped before touching anything


async def test_serve_with_bad_configuration_exits_2(tmp_path: Path) -> None:
    result = await _memoryd(tmp_path, "serve", "--port", "0", MEMORYD_LOG_FORMAT="xml")
    _assert_one_error_line(result, "MEMORYD_LOG_FORMAT")


async def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = await _memoryd(
        tmp_path,
        "migrate",
        DATABASE_URL="postgresql://memoryd@127.0.0.1:1/nowhere",
        MEMORYD_LOG_LEVEL="error",
    )
    _assert_one_error_line(result, "database")


async def test_migrate_is_idempotent(tmp_path: Path, database_url: str) -> None:
    for _ in range(2):
        result = await _memoryd(
            tmp_path, "migrate", DATABASE_URL=database_url, MEMORYD_LOG_LEVEL="error"
        )
        assert result.code == 0, result
        assert "migrations are up to date" in result.stdout
        assert result.stderr == ""


async def test_concurrent_migrations_on_a_new_database(tmp_path: Path, admin_dsn: str) -> None:
    name = f"memoryd_cli_{uuid.uuid4().hex[:10]}"
    await create_database_if_missing(admin_dsn, name)
    dsn = _with_database(admin_dsn, name)
    try:
        results = await asyncio.gather(
            *(_memoryd(tmp_path, "migrate", DATABASE_URL=dsn) for _ in range(2))
        )
        for result in results:
            assert result.code == 0, result
            assert "Traceback" not in result.stderr
        again = await _memoryd(tmp_path, "migrate", DATABASE_URL=dsn)
        assert again.code == 0, again

        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version"
            )
            users_table = await conn.fetchval("SELECT to_regclass('users') IS NOT NULL")
        finally:
            await conn.close()
        assert {r["version"]: r["n"] for r in rows} == {
            m.version: 1 for m in available_migrations()
        }
        assert users_table is True
    finally:
        await drop_database(admin_dsn, name)


async def test_users_set_role(tmp_path: Path, api: Api, database_url: str) -> None:
    user = await api.register()
    email = str(user.__dict__["email"])
    result = await _memoryd(
        tmp_path,
        "users",
        "set-role",
        email.upper(),
        "premium",
        DATABASE_URL=database_url,
        MEMORYD_LOG_LEVEL="error",
    )
    assert result.code == 0, result
    assert result.stdout.strip() == f"{email} is now premium"

    login = await api.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status == 200
    assert login.body["user"]["role"] == "premium"
    claims = jwt.decode(login.body["accessToken"], options={"verify_signature": False})
    assert claims["role"] == "premium"
    assert "delete:memories" in claims["permissions"]
    assert "manage:users" not in claims["permissions"]


async def test_users_set_role_for_an_unknown_email(tmp_path: Path, database_url: str) -> None:
    result = await _memoryd(
        tmp_path,
        "users",
        "set-role",
        "nobody-here@example.com",
        "admin",
        DATABASE_URL=database_url,
        MEMORYD_LOG_LEVEL="error",
    )
    _assert_one_error_line(result, "nobody-here@example.com")
    assert result.stdout == ""


async def test_users_set_role_rejects_an_unknown_role(tmp_path: Path, database_url: str) -> None:
    result = await _memoryd(
        tmp_path, "users", "set-role", "a@example.com", "superuser", DATABASE_URL=database_url
    )
    assert result.code == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr
