"""`qwen3-api keys create|list|show|revoke|top-up` and `qwen3-api usage`: the platform from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from qwen3_api.platform.options import add_database_arg
from qwen3_api.platform.pricing import format_money


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative amount: {text!r}")
    from qwen3_api.platform.tables import MAX_MONEY  # here: sqlalchemy is slow to import for `--help`

    if value > MAX_MONEY:  # a Money column is a BIGINT of 1e-10 units
        raise argparse.ArgumentTypeError(f"must be at most {MAX_MONEY}, the largest amount a key can hold: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    from qwen3_api.platform.tables import MAX_INT

    if value > MAX_INT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_INT}: {text!r}")
    return value


def parse_when(text: str) -> datetime:
    """A date (``2026-12-31``, midnight UTC) or an ISO datetime (naive = UTC)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD or ISO 8601): {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


_CREATE_DOC = """Create an API key. The secret is shown this once (only its hash is stored). On a terminal it is
printed last, in a framed block; when stdout is a pipe or a file, stdout is the key alone, so
KEY=$(qwen3-api keys create --name ci) works, and the note about it goes to stderr."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the `keys` and `usage` subcommands."""
    keys = subparsers.add_parser("keys", help="create, list, show, revoke and top up API keys",
                                 description="Manage the API keys stored in the platform database.")
    sub = keys.add_subparsers(dest="keys_command", required=True)

    create = sub.add_parser("create", help="create a key (printed once: store it)", description=_CREATE_DOC)
    create.add_argument("--name", required=True, help="who or what the key is for (unique among live keys)")
    create.add_argument("--allow-duplicate-name", action="store_true",
                        help="create it even though a key that is not revoked has this name")
    create.add_argument("--json", action="store_true",
                        help='print {"key": ..., "data": {...}} (the admin API\'s answer) instead')
    create.add_argument("--credit", type=_decimal, default=None, help="credit limit (catalog currency); none = unlimited")
    create.add_argument("--rpm", type=_positive_int, default=None, help="requests per minute")
    create.add_argument("--tpm", type=_positive_int, default=None, help="tokens per minute")
    create.add_argument("--models", default=None, help="comma-separated model ids this key may use (default: all)")
    create.add_argument("--expires", type=parse_when, default=None, help="expiry date or datetime (UTC)")
    create.set_defaults(func=cmd_create)

    lst = sub.add_parser("list", help="all keys, masked",
                         description="Every key (revoked ones too) with its label, limits, credit and spend.")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    for name, func, help_ in (("show", cmd_show, "one key's limits, credit and spend"),
                              ("revoke", cmd_revoke, "revoke a key for good")):
        p = sub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        p.add_argument("key", help="key id, name, masked label (sk-…abcd) or the key itself")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)

    top = sub.add_parser("top-up", help="add credit to a key",
                         description="Add AMOUNT (catalog currency) to a key's credit; a key without a limit "
                                     "gets one of AMOUNT.")
    top.add_argument("key", help="key id, name, masked label or the key itself")
    top.add_argument("amount", type=_decimal)
    top.add_argument("--json", action="store_true")
    top.set_defaults(func=cmd_top_up)

    reset = sub.add_parser(
        "reset-reserved", help="free reserved credit no running server holds (rarely needed: servers reclaim the "
                               "leases of dead servers by themselves after --lease-expiry-s)",
        description="Reclaim the credit leases of servers silent for longer than --lease-expiry-s, then set the "
                    "key's reserved to what running servers' leases hold (frees reservations no lease accounts "
                    "for). Leases of running servers are kept, with a warning, unless --force.")
    reset.add_argument("key", help="key id, name, masked label or the key itself")
    reset.add_argument("--json", action="store_true")
    reset.add_argument("--lease-expiry-s", type=float, default=30.0,
                       help="servers silent this long count as dead (the servers' --lease-expiry-s; default: 30)")
    reset.add_argument("--force", action="store_true",
                       help="also take the leases of running servers: they notice at their next heartbeat and "
                            "lease afresh; until then the key may overspend by what they held")
    reset.set_defaults(func=cmd_reset_reserved)

    for p in (create, lst, top, reset, *[sub.choices[n] for n in ("show", "revoke")]):
        add_database_arg(p)

    usage = subparsers.add_parser("usage", help="a table of tokens and cost",
                                  description="Tokens and cost from the ledger, one row per day, model or key, "
                                              "with a total row (amounts in the catalog's currency).")
    usage.add_argument("--key", default=None, help="only this key (id, name, label or the key)")
    usage.add_argument("--since", type=parse_when, default=None, help="from this date (UTC)")
    usage.add_argument("--by", choices=["day", "model", "key"], default="day", help="one row per")
    usage.add_argument("--json", action="store_true")
    add_database_arg(usage)
    usage.set_defaults(func=cmd_usage)


def _store(args: argparse.Namespace):  # noqa: ANN202 - a KeyStore over a migrated database
    from qwen3_api.platform.db import Database
    from qwen3_api.platform.keys import KeyStore

    db = Database(args.database_url)
    db.upgrade()
    return KeyStore(db)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *[line(r) for r in cells]])


def _show(record: Any, as_json: bool) -> None:
    view = record.to_dict()
    if as_json:
        print(json.dumps(view, indent=2, ensure_ascii=False))
        return
    for k, v in view.items():
        print(f"{k:12} {'-' if v is None else (','.join(v) if isinstance(v, list) else v)}")


def _find(store: Any, ref: str) -> Any:
    try:
        record = store.find(ref)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if record is None:
        raise SystemExit(f"error: no key matches {ref!r}")
    return record


def _announce(key: str, record: Any) -> None:
    """Print a new key so it cannot be missed (terminal) or cleanly captured (pipe): see _CREATE_DOC."""
    sys.stderr.flush()
    if not sys.stdout.isatty():
        print(key, flush=True)
        print(f"created key {record.id} '{record.name}' ({record.label}): this is the only time it is shown.",
              file=sys.stderr)
        return
    rule = "=" * 72
    print(f"\n{rule}\n  NEW API KEY for '{record.name}' (id {record.id}, listed as {record.label})\n"
          f"  Shown only this once: store it now.\n\n  {key}\n\n"
          f"  Send it as 'Authorization: Bearer <key>' (OpenAI SDK: api_key=...).\n{rule}", flush=True)


def cmd_create(args: argparse.Namespace) -> int:
    from qwen3_api.platform.keys import DuplicateKeyNameError

    store = _store(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    try:
        key, record = store.create(args.name, credit=args.credit, rpm=args.rpm, tpm=args.tpm, models=models,
                                   expires_at=args.expires, allow_duplicate_name=args.allow_duplicate_name)
    except DuplicateKeyNameError as exc:
        raise SystemExit(f"error: {exc}; pass --allow-duplicate-name to create another anyway") from None
    except ValueError as exc:  # a name or model id no column can hold (key_fields)
        raise SystemExit(f"error: {exc}") from None
    if args.json:
        print(json.dumps({"key": key, "data": record.to_dict()}, indent=2, ensure_ascii=False))
        return 0
    _announce(key, record)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records = _store(args).list()
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2, ensure_ascii=False))
        return 0
    rows = [[r.id, r.name, r.label, r.status(), format_money(r.credit), format_money(r.spent),
             format_money(r.credit_left), r.rpm or "-", r.tpm or "-", ",".join(r.models) if r.models else "all",
             r.expires_at.date().isoformat() if r.expires_at else "-"] for r in records]
    print(_table(["id", "name", "label", "status", "credit", "spent", "left", "rpm", "tpm", "models", "expires"],
                 rows) if rows else "no keys yet: qwen3-api keys create --name NAME")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _show(_find(_store(args), args.key), args.json)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    record = store.revoke(_find(store, args.key).id)
    _show(record, args.json)
    return 0


def cmd_top_up(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.amount <= 0:
        raise SystemExit("error: the amount must be positive")
    try:
        record = store.top_up(_find(store, args.key).id, args.amount)
    except ValueError as exc:  # the credit would pass the largest amount a key can hold
        raise SystemExit(f"error: {exc}") from None
    _show(record, args.json)
    return 0


def cmd_reset_reserved(args: argparse.Namespace) -> int:
    from qwen3_api.platform import replicas

    store = _store(args)
    record = _find(store, args.key)
    db = store.db
    reclaimed = replicas.reclaim_expired(db, args.lease_expiry_s)
    live = [h for h in db.run_sync(lambda conn: replicas.holders(conn, record.id)) if h.alive(args.lease_expiry_s)]
    if live and args.force:
        for h in live:
            reclaimed += db.run_sync(lambda conn, rid=h.replica_id: replicas.reclaim(conn, rid, None))
    elif live:
        held = format_money(sum((h.amount for h in live), Decimal(0)))
        print(f"warning: {len(live)} running server(s) hold {held} of this key in credit leases "
              f"({', '.join(f'{h.host} pid {h.pid}' for h in live)}); kept: they return them by themselves "
              "(idle, at shutdown, or when they die); --force takes them too", file=sys.stderr)
    for r in reclaimed:
        print(f"reclaimed {format_money(r.amount)} of key {r.key_id} from server {r.host} pid {r.pid}",
              file=sys.stderr)
    print(f"reserved was {format_money(record.reserved)}", file=sys.stderr)
    db.run_sync(lambda conn: replicas.reset_to_leases(conn, record.id))
    _show(store.get(record.id), args.json)
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    from qwen3_api.platform.ledger import usage_report

    store = _store(args)
    key_hash = _find(store, args.key).key_hash if args.key else None
    rows = store.db.run_sync(lambda conn: usage_report(conn, key_hash=key_hash, since=args.since, by=args.by))
    if args.json:
        print(json.dumps([{**r, "cost": format(r["cost"], "f")} for r in rows], indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no usage recorded" + (f" since {args.since.date()}" if args.since else ""))
        return 0
    body = [[r["group"], r["requests"], r["prompt_tokens"], r["cached_tokens"], r["completion_tokens"],
             r["reasoning_tokens"], format_money(r["cost"], r["currency"])] for r in rows]
    total_cost = sum((r["cost"] for r in rows), Decimal(0))
    body.append(["total", sum(r["requests"] for r in rows), sum(r["prompt_tokens"] for r in rows),
                 sum(r["cached_tokens"] for r in rows), sum(r["completion_tokens"] for r in rows),
                 sum(r["reasoning_tokens"] for r in rows), format_money(total_cost, rows[0]["currency"])])
    print(_table([args.by, "requests", "prompt", "cached", "completion", "reasoning", "cost"], body))
    return 0
