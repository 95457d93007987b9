"""The ``edgecache`` command line.

``edgecache --version`` and ``edgecache purge``; ``proxy`` and ``bench`` are to come. Each subcommand is one
``add_<name>(subparsers)`` function listed in ``SUBCOMMANDS``: it builds its parser and sets ``run``, a
function ``(args) -> exit status``. Options come from flags, then ``EDGECACHE_*`` environment variables.
Exit status: 0 done, 1 failed (e.g. Redis unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias
from urllib.parse import urlsplit, urlunsplit

from redis.exceptions import RedisError

from edgecache.bus.redis import publish_invalidation, publisher_client
from edgecache.config import NAMESPACE_PATTERN
from edgecache.core.invalidation import (
    MAX_ITEMS,
    MAX_MESSAGE_BYTES,
    BadInvalidation,
    Invalidation,
    encode_invalidation,
    invalidation_channel,
    new_invalidation,
)

ENV_REDIS_URL: Final = "EDGECACHE_REDIS_URL"
ENV_NAMESPACE: Final = "EDGECACHE_NAMESPACE"
DEFAULT_NAMESPACE: Final = "edgecache"
DEFAULT_TIMEOUT: Final = 2.0

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Run = Callable[[argparse.Namespace], int]


def _version() -> str:
    from edgecache import __version__  # noqa: PLC0415 - keeps `edgecache.cli` importable on its own

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecache",
        description="An RFC 9111 HTTP cache for ASGI apps: in-process L1, Redis L2, event-driven purges.",
    )
    parser.add_argument("--version", action="version", version=f"edgecache {_version()}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        run: Run | None = getattr(args, "run", None)
        if run is None:
            parser.print_help(sys.stderr)
            return 2
        return run(args)
    except SystemExit as done:  # argparse: --help, --version, usage errors
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _env(name: str) -> str | None:
    return os.environ.get(name) or None  # set but empty counts as unset


def _redact(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + netloc))
    except ValueError:
        return "<unparsable URL>"


# -- purge --------------------------------------------------------------------------------------------


_FLAGS: Final = {"tags": "--tag", "paths": "--path", "prefixes": "--prefix", "id": "--id"}


def add_purge(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "purge",
        help="publish an invalidation to every node",
        description=(
            "Publish one invalidation on the Redis channel <namespace>:invalidate: every node drops (or, "
            "with --soft, marks stale) the matching responses from its memory tier and from Redis."
        ),
        epilog="Exit status: 0 published, 1 Redis unreachable or failing, 2 bad arguments.",
    )
    add = parser.add_argument
    add("--tag", dest="tags", action="append", default=[], metavar="TAG", help="a Surrogate-Key/Cache-Tag")
    add("--path", dest="paths", action="append", default=[], metavar="PATH", help="a path, e.g. /products/42")
    add("--prefix", dest="prefixes", action="append", default=[], metavar="PREFIX", help="a path prefix")
    add("--soft", action="store_true", help="mark stale (served while revalidating) instead of dropping")
    add("--all", dest="everything", action="store_true", help="purge everything")
    add("--id", dest="message_id", metavar="ID", help="the message id (default: a random one)")
    add("--redis-url", metavar="URL", help=f"Redis to publish on (default: ${ENV_REDIS_URL})")
    add(
        "--namespace",
        metavar="NS",
        help=f"key and channel prefix (default: ${ENV_NAMESPACE}, else edgecache)",
    )
    add(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"connect and command timeout (default {DEFAULT_TIMEOUT:g}); no retries",
    )
    parser.set_defaults(run=run_purge, parser=parser)


def _purge_usage_error(bad: BadInvalidation) -> str:
    if bad.reason == "empty":
        return "purge needs at least one of --tag, --path, --prefix or --all"
    if bad.reason == "too-many":
        return f"at most {MAX_ITEMS} --tag/--path/--prefix values in total"
    if bad.reason == "too-large":
        return f"the invalidation would exceed {MAX_MESSAGE_BYTES} bytes"
    flag = _FLAGS.get(bad.field or "", "argument")
    return f"{flag}: {bad.detail or bad.reason}"


def run_purge(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    url = args.redis_url or _env(ENV_REDIS_URL)
    if url is None:
        parser.error(f"purge needs --redis-url or {ENV_REDIS_URL}")
    namespace = args.namespace or _env(ENV_NAMESPACE) or DEFAULT_NAMESPACE
    if not NAMESPACE_PATTERN.match(namespace):
        parser.error(f"--namespace: {namespace!r} is not 1-64 characters of A-Z a-z 0-9 _ . : -")
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    try:
        inv = new_invalidation(
            tags=args.tags,
            paths=args.paths,
            prefixes=args.prefixes,
            soft=args.soft,
            everything=args.everything,
            id=args.message_id,
        )
        payload = encode_invalidation(inv)
    except BadInvalidation as bad:
        parser.error(_purge_usage_error(bad))
    try:
        receivers = asyncio.run(_publish(url, namespace, inv, args.timeout))
    except ValueError as error:  # redis-py rejects the URL
        parser.error(f"--redis-url: {error}")
    except (RedisError, OSError) as error:  # OSError covers TimeoutError
        reason = str(error) or type(error).__name__
        print(f"edgecache purge: cannot publish to Redis at {_redact(url)}: {reason}", file=sys.stderr)
        return 1
    print(payload.decode("utf-8"))
    print(f"published on {invalidation_channel(namespace)}: {receivers} receiver(s)")
    if receivers == 0:
        print("edgecache purge: warning: no node is subscribed to that channel", file=sys.stderr)
    return 0


async def _publish(url: str, namespace: str, inv: Invalidation, seconds: float) -> int:
    client = publisher_client(url, timeout=seconds)
    try:
        async with asyncio.timeout(seconds * 2):  # a backstop over the socket timeouts
            return await publish_invalidation(client, namespace, inv)
    finally:
        await client.aclose()


# One entry per subcommand, in --help order.
SUBCOMMANDS: Final[tuple[Callable[[Subparsers], None], ...]] = (add_purge,)

if __name__ == "__main__":
    sys.exit(main())
