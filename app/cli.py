"""`python -m app …` (or the installed `restaurant-cqrs …`): serve, migrate, project, rebuild,
status, parked, seed-demo, export-schema, privacy."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import signal
import sys
from collections.abc import Sequence

from app.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; also the `restaurant-cqrs` console script (pyproject.toml)."""
    parser = argparse.ArgumentParser(prog=_program(), description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the GraphQL API (and the projector)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-projector", action="store_true", help="API only")
    commands.add_parser(
        "migrate", help="upgrade the event store's schema (DATABASE_URL) to this version's"
    )
    commands.add_parser("project", help="run the projector only (one leads, others stand by)")
    rebuild = commands.add_parser(
        "rebuild", help="rebuild the read model from position 0 into new keys and switch to it"
    )
    rebuild.add_argument("--keep-old", action="store_true",
                         help="leave the retired generation's keys in Redis")
    commands.add_parser("status", help="print projection position, head and lag")
    parked = commands.add_parser(
        "parked", help="list the events the read model set aside, or retry them after a fix"
    )
    parked.add_argument("action", choices=["list", "retry"])
    seed = commands.add_parser("seed-demo", help="create demo locations and employees")
    seed.add_argument("--locations", type=int, default=5)
    seed.add_argument("--employees", type=int, default=40)
    commands.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    privacy = commands.add_parser(
        "privacy", help="erasure of personal data: clean the files (docs/privacy.md)"
    )
    privacy.add_argument(
        "action", choices=["compact"],
        help="compact: VACUUM the event store (PostgreSQL: VACUUM FULL of the key, event and "
             "snapshot tables) and rewrite Redis's append-only file",
    )
    args = parser.parse_args(argv)

    if args.command == "export-schema":
        from app.schema import build_schema

        print(build_schema().as_str())
        return 0
    settings = Settings()
    from app.observability import configure_logging

    configure_logging(settings.log_level, settings.log_format, settings.log_json)
    from redis.exceptions import RedisError

    from app.event_store.migrations import SchemaError
    from app.read_model.refusals import explain, refusal

    runners = {"migrate": _migrate, "project": _project, "rebuild": _rebuild,
               "status": _status, "parked": _parked, "seed-demo": _seed, "privacy": _privacy}
    try:
        if args.command == "serve":
            return _serve(settings, args)
        return asyncio.run(runners[args.command](settings, args))
    except SchemaError as error:  # one line that says what to do, not a traceback
        print(f"{_program()} {args.command}: {error}", file=sys.stderr)
        return 2
    except RedisError as error:
        kind = refusal(error)
        if kind is None:  # not a configuration error: the traceback helps
            raise
        print(f"{_program()} {args.command}: {explain(kind, error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _program() -> str:
    """How the user called us, for usage lines: `python -m app` or the console script's name."""
    called = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m app" if called in ("", "__main__.py", "-c") else called


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from app.auth import Authenticator
    from app.embedded_redis import redis_url
    from app.observability import MULTIPROCESS_VARIABLE, prepare_multiprocess_dir
    from app.web.hosts import WILDCARD_BINDS, default_allowed_hosts

    try:  # refused authentication settings stop `serve` with one line, before anything starts
        Authenticator(settings)
    except ValueError as error:
        print(f"{_program()} serve: {error}", file=sys.stderr)
        return 2
    asyncio.run(_schema_ready(settings))
    if args.no_projector:
        os.environ["RUN_PROJECTOR"] = "false"
    if args.workers > 1:  # each scrape reaches one worker: it answers for all of them
        metrics_dir = prepare_multiprocess_dir(settings.var_dir.resolve())
        os.environ[MULTIPROCESS_VARIABLE] = str(metrics_dir)
    if not settings.allowed_hosts:  # what the app's host check allows (app/web/hosts.py)
        hosts = os.environ["ALLOWED_HOSTS"] = default_allowed_hosts(args.host)
        if args.host in WILDCARD_BINDS:
            logging.getLogger("app.cli").warning(
                "serve binds to %r without ALLOWED_HOSTS: only requests for %s are answered; "
                "set ALLOWED_HOSTS to the names clients use", args.host, hosts,
            )
    # uvicorn re-raises SIGTERM after its graceful shutdown; by default that would kill this
    # process before the `with` block below stops the embedded Valkey (leaking it). Exit instead.
    signal.signal(signal.SIGTERM, _exit_after_shutdown)
    # One server for every worker, owned by this parent process: the workers (and the app of a
    # single-process server) find its URL in REDIS_URL and start none of their own.
    with redis_url(settings) as url:
        os.environ["REDIS_URL"] = url
        uvicorn.run(
            "app.web.app:create_app", factory=True, host=args.host, port=args.port,
            workers=args.workers, log_config=None, ws="app.web.ws_protocol:WebSocketProtocol",
            http="app.web.http_protocol:HttpProtocol",  # httptools, with header limits
            ws_max_size=settings.max_ws_message_bytes,
            ws_per_message_deflate=False,  # zlib state is ~70 KiB per socket; changes are small
            # one line per request at INFO; below that uvicorn would still format each line's
            # client address and path before the logger dropped it
            access_log=logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO),
        )
    return 0


def _exit_after_shutdown(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


async def _schema_ready(settings: Settings) -> None:
    """`ready_schema` before anything starts; a database out of reach is left to the
    service's own start, which reports it as before."""
    from app.bootstrap import ready_schema
    from app.event_store.sqlalchemy_engine import lost_connection

    try:
        await ready_schema(settings)
    except Exception as error:
        if not lost_connection(error):
            raise


async def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    """Upgrade DATABASE_URL's schema to the newest revision, under a lock (safe beside
    running processes and other `migrate`s); says where it was and where it is."""
    from app.bootstrap import migrate_store

    before, after = await migrate_store(settings)
    if before == after:
        print(f"event store schema: at revision {after} (the newest), nothing to do")
    else:
        was = f"revision {before}" if before else "no revision"
        print(f"event store schema: upgraded from {was} to revision {after}")
    return 0


async def _project(settings: Settings, _args: argparse.Namespace) -> int:
    from app.bootstrap import bootstrap, run_projector_alone
    from app.runtime import settle_heap

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with bootstrap(settings, run_projector=False, follow=False) as services:
        settle_heap(settings.gc_threshold)
        work = asyncio.create_task(run_projector_alone(services))
        await asyncio.wait([work, asyncio.create_task(stop.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        work.cancel()  # a clean exit: the embedded Valkey (if any) is stopped on the way out
        with contextlib.suppress(asyncio.CancelledError):
            await work
    return 0


async def _rebuild(settings: Settings, args: argparse.Namespace) -> int:
    """Blue/green: the live read model keeps answering until the new one is complete."""
    from app.bootstrap import bootstrap
    from app.projector.generations import Progress
    from app.runtime import collector_paused, settle_heap

    def show(progress: Progress) -> None:
        eta = "?" if progress.eta is None else f"{progress.eta:.0f} s"
        _progress(progress.position, progress.head,
                  f"generation {progress.generation}  {progress.rate:,.0f} events/s  ETA {eta}")

    async with bootstrap(settings, run_projector=False, follow=False) as services:
        settle_heap(settings.gc_threshold)
        generations = services.runner.generations
        with collector_paused():
            generation, retired = await generations.rebuild("`python -m app rebuild`", show)
        print(file=sys.stderr)
        print(f"switched to generation {generation}", file=sys.stderr)
        if args.keep_old:
            return 0
        stale = sorted({*([retired] if retired is not None else []),
                        *await generations.stale()})
        if stale:
            print(f"deleting generation(s) {', '.join(map(str, stale))} in "
                  f"{generations.grace_seconds:g} s", file=sys.stderr)
            await asyncio.sleep(generations.grace_seconds)
            for old in stale:
                await generations.drop(old)
    return 0


async def _status(settings: Settings, _args: argparse.Namespace) -> int:
    from app.bootstrap import bootstrap

    async with bootstrap(settings, run_projector=False, follow=False) as services:
        keys = services.read_model.keys
        position = await services.read_model.checkpoint()
        head = await services.store.head_position()
        leader, rebuilding = await services.redis.mget(keys.leader, keys.rebuilding)
        leader, rebuilding = str(leader or "none"), str(rebuilding or "no")
        print(f"projected position: {position}")
        print(f"event store head:   {head}")
        print(f"lag:                {head - position}")
        print(f"generation:         {keys.generation}")
        print(f"projector leader:   {leader}")
        print(f"rebuilding:         {rebuilding}")
    return 0


async def _parked(settings: Settings, args: argparse.Namespace) -> int:
    """`list`: each parked event (stream, position, type). `retry`: apply what now applies, in
    order; exits 1 while anything is still parked."""
    from app.bootstrap import bootstrap
    from app.projector.parked import ParkedEvents, ParkedStream

    async with bootstrap(settings, run_projector=False, follow=False) as services:
        parked = ParkedEvents(services.store, services.redis, services.read_model.keys)
        if args.action == "retry":
            outcome = await parked.retry()
            print(f"applied {outcome.applied} parked event(s)"
                  + (f"; dropped {outcome.dropped} no longer in the event store"
                     if outcome.dropped else ""))
            remaining: list[ParkedStream] = outcome.parked
        else:
            remaining = await parked.streams()
        for stream in remaining:
            stored = {e.position: e.type for e in await services.store.read_all(
                stream.positions[0] - 1, len(stream.positions), stream.stream_id)}
            for position in stream.positions:
                kind = stored.get(position, "(no longer in the event store)")
                print(f"{stream.stream_id}  {position}  {kind}")
        count = sum(len(stream.positions) for stream in remaining)
        print(f"{count} event(s) parked in {len(remaining)} stream(s)")
        return 1 if args.action == "retry" and remaining else 0


async def _privacy(settings: Settings, _args: argparse.Namespace) -> int:
    """`compact`: after erasures, rewrite the files that may still hold erased bytes."""
    from app.bootstrap import bootstrap
    from app.privacy import rewrite_append_only_file

    async with bootstrap(settings, run_projector=False, follow=False) as services:
        for statement in await services.store.compact():
            print(f"event store: {statement}")
        if await rewrite_append_only_file(services.redis):
            print("redis: BGREWRITEAOF (finished)")
        else:
            print("redis: keeps no append-only file (nothing to rewrite)")
    return 0


async def _seed(settings: Settings, args: argparse.Namespace) -> int:
    """Demo data through the same command handlers the API uses, with progress on stderr and
    a summary of what was made (ids, positions) on stdout."""
    from app.bootstrap import bootstrap
    from app.domain import commands as c
    from app.domain.errors import DomainError
    from app.service.handlers import CommandContext

    cities = [("Springfield", "IL"), ("Portland", "OR"), ("Austin", "TX"), ("Denver", "CO"),
              ("Madison", "WI"), ("Raleigh", "NC"), ("Boise", "ID"), ("Tucson", "AZ")]
    first = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivan", "June"]
    last = ["Smith", "Garcia", "Chen", "Okafor", "Novak", "Silva", "Kim", "Berg"]
    titles = ["Line Cook", "Server", "Host", "Dishwasher", "Shift Manager", "Bartender"]
    ctx = CommandContext(correlation_id="seed-demo", actor="seed-demo")
    async with bootstrap(settings, run_projector=True) as services:
        handlers = services.handlers
        location_ids: list[int] = []
        employee_ids: list[int] = []
        positions: list[int] = []
        total = args.locations + args.employees
        for n in range(args.locations):
            city, state = cities[n % len(cities)]
            address = f"{100 + n * 7} Main Street"
            made = await handlers.create_location(
                c.CreateLocation(address, city, state, f"{10000 + n * 97}"), ctx
            )
            location_ids.append(made.entity_id)
            positions.append(made.position)
            _progress(n + 1, total)
        for n in range(args.employees):
            try:
                made = await handlers.create_employee(
                    c.CreateEmployee(first[n % len(first)], last[n % len(last)],
                                     dt.date(1970 + n % 30, 1 + n % 12, 1 + n % 28),
                                     titles[n % len(titles)], location_ids[n % len(location_ids)]),
                    ctx,
                )
            except DomainError as error:
                print(f"\nskipped employee {n + 1}: {error.message}", file=sys.stderr)
                continue
            employee_ids.append(made.entity_id)
            positions.append(made.position)
            _progress(args.locations + n + 1, total)
        print(file=sys.stderr)
        projected = await services.waiter.wait_for(max(positions, default=0), 30)
    print(_seed_summary(location_ids, employee_ids, positions, projected))
    return 0


def _seed_summary(
    location_ids: list[int], employee_ids: list[int], positions: list[int], projected: bool
) -> str:
    """What seed-demo made, in the words of the API: ids to query, positions to travel to."""
    def ids(made: list[int]) -> str:
        return f"ids {min(made)}-{max(made)}" if made else "none"

    lines = [
        f"created {len(location_ids)} locations ({ids(location_ids)}) and "
        f"{len(employee_ids)} employees ({ids(employee_ids)})",
    ]
    if positions:
        first_position = min(positions)  # a location's only event; a hire ends with its second
        lines.append(f"their events are at positions {first_position}-{max(positions)} of the "
                     "event log (try atPosition)")
        lines.append("the read model shows them" if projected else
                     "the read model has not shown them yet: is a projector running?")
    lines.append("a new location without an id gets the next free one; see the README's first "
                 "request")
    return "\n".join(lines)


def _progress(done: int, total: int, note: str = "") -> None:
    width = 30
    filled = width * min(done, total) // max(total, 1)
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {note}", end="",
          file=sys.stderr)
