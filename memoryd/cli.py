"""The ``memoryd`` command: serve, migrate, reindex, users set-role, version."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from memoryd import __version__
from memoryd.config import Settings
from memoryd.errors import ConfigError
from memoryd.handlers.rbac import Role
from memoryd.logs import setup_logging

log = logging.getLogger("memoryd")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memoryd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a memoryd node (HTTP API and /ws on one port)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    serve.add_argument("--data-dir", type=Path, help="data directory (MEMORYD_DATA_DIR, ./data)")

    migrate = sub.add_parser("migrate", help="apply pending database migrations and exit")
    migrate.add_argument("--data-dir", type=Path)

    users = sub.add_parser("users", help="manage users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    set_role = users_sub.add_parser("set-role", help="give a user a role")
    set_role.add_argument("email")
    set_role.add_argument("role", choices=[r.value for r in Role])
    set_role.add_argument("--data-dir", type=Path)

    reindex = sub.add_parser(
        "reindex", help="rebuild search embeddings (resumes an interrupted run)"
    )
    reindex.add_argument("--user", metavar="EMAIL", help="only this user (default: everyone)")
    reindex.add_argument("--restart", action="store_true", help="start over, do not resume")
    reindex.add_argument(
        "--text", action="store_true", help="also rebuild the full text vectors (new language)"
    )
    reindex.add_argument("--stop-after", type=int, metavar="N",
                         help="embed about N documents, then stop (resume later)")  # fmt: skip
    reindex.add_argument("--data-dir", type=Path)

    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"memoryd {__version__}")
        return 0
    try:
        settings = Settings.from_env(
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            data_dir=getattr(args, "data_dir", None),
        )
        setup_logging(settings.log_level, settings.log_format)
        if args.command == "serve":
            _serve(settings)
        elif args.command == "migrate":
            _run(_migrate(settings))
        elif args.command == "reindex":
            _run(_reindex(settings, args.user, args.restart, args.text, args.stop_after))
        elif args.command == "users":
            _run(_set_role(settings, args.email, args.role))
    except ConfigError as exc:
        print(f"memoryd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _run(coro: Awaitable[None]) -> None:
    _install_uvloop()
    asyncio.run(coro)  # type: ignore[arg-type]


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _serve(settings: Settings) -> None:
    from aiohttp import web

    from memoryd.server.app import create_app

    _install_uvloop()
    app = create_app(settings)

    async def announce(_app: web.Application) -> None:
        log.info("memoryd %s serving on http://%s:%d", __version__, settings.host, settings.port)

    app.on_startup.append(announce)
    app.on_startup.append(_settle_garbage_collector)

    async def serve() -> None:
        # Not web.run_app: it skips the cleanup when start-up fails half-way, which would
        # leave the pool, tasks and an embedded PostgreSQL behind. SIGTERM/SIGINT end the
        # wait; the cleanup then runs the graceful shutdown (1012) and every cleanup_ctx.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            await runner.setup()
            await web.TCPSite(runner, settings.host, settings.port).start()
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(serve())


async def _settle_garbage_collector(_app: object) -> None:
    """Keep the cyclic GC off the fan-out path's tail latency.

    What exists once the node is up (modules, the pool, the app) lives as long as the
    process: frozen, full collections never walk it again. A socket session is a few
    dozen long-lived objects, so 10k sessions would otherwise make every generation-2
    pass a pause of many milliseconds; a larger first threshold makes the young passes,
    which frames and events feed, rarer too."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def _with_database(settings: Settings, work: Callable[[object], Awaitable[None]]) -> None:
    from memoryd.storage.bootstrap import database_dsn, open_database

    async with database_dsn(settings.database_url, settings.data_dir) as dsn:
        db = await open_database(dsn, min_size=1, max_size=2)
        try:
            await work(db)
        finally:
            await db.close()


async def _migrate(settings: Settings) -> None:
    async def done(_db: object) -> None:
        print("migrations are up to date")

    await _with_database(settings, done)


async def _set_role(settings: Settings, email: str, role: str) -> None:
    from memoryd.storage.database import Database
    from memoryd.storage.users import UserStore

    async def apply(db: object) -> None:
        assert isinstance(db, Database)
        user = await UserStore(db).set_role(email, role)
        if user is None:
            raise ConfigError(f"no user with email {email!r}")
        print(f"{user.email} is now {user.role}")

    await _with_database(settings, apply)


async def _reindex(
    settings: Settings, email: str | None, restart: bool, text: bool, stop_after: int | None
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from memoryd.handlers.search_jobs import reindex
    from memoryd.server.search import close_search, open_search
    from memoryd.storage.database import Database
    from memoryd.storage.store import Storage

    async def run(db: object) -> None:
        assert isinstance(db, Database)
        storage = Storage(db)
        user_id = None
        if email is not None:
            user = await storage.users.get_by_email(email)
            if user is None:
                raise ConfigError(f"no user with email {email!r}")
            user_id = user.id
        if text:
            print(f"rebuilt the full text vectors of {await storage.search.refresh_text(user_id)}"
                  " documents")  # fmt: skip
        runtime = await open_search(settings, storage)
        if not runtime.semantic:
            raise ConfigError("no embedder or vector store is configured: nothing to embed")
        columns = ("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeRemainingColumn())  # fmt: skip
        try:
            with Progress(*columns, transient=False) as bar:
                task = bar.add_task("embedding", total=None)

                def show(completed: int, total: int, _: int) -> None:
                    bar.update(task, completed=completed, total=total)

                result = await reindex(storage, runtime, user_id, progress=show,
                                       restart=restart, stop_after=stop_after)  # fmt: skip
        finally:
            await close_search(runtime)
        how = "resumed a run" if result.resumed else "started a run"
        print(f"{how} of {result.total} documents; embedded {result.done} now")
        if not result.finished:
            print("not finished: run `memoryd reindex` again to resume")

    try:
        await _with_database(settings, run)
    except asyncio.CancelledError:  # Ctrl-C: the queue keeps what is left
        print("interrupted: run `memoryd reindex` again to resume", file=sys.stderr)
        raise KeyboardInterrupt from None


if __name__ == "__main__":
    sys.exit(main())
