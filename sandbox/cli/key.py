"""``stack key``: API keys for the config: create, list, revoke.

Keys live in the config (``auth.keys``) or in a keys file (``auth.keys_file``,
a YAML file with a ``keys:`` list that stack writes itself). Only the SHA-256
of a key is stored; the key is shown once, when created.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ._table import table


def _parser() -> argparse.ArgumentParser:
    from ..features.auth import SCOPES

    parser = argparse.ArgumentParser(
        prog="stack key",
        description="API keys: create one (shown once; the config keeps its SHA-256), list "
        "them, revoke one. With --keys FILE, create adds the entry to that keys file (the "
        "config's auth.keys_file) and revoke removes it.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="create|list|revoke")
    create = commands.add_parser("create", help="a new key: stack key create NAME --scopes ...")
    create.add_argument("name")
    create.add_argument(
        "--scopes",
        default="execute",
        help=f"comma-separated: {', '.join(SCOPES)} (default: execute)",
    )
    create.add_argument("--rate", help="its own rate limit, e.g. 5/s")
    listing = commands.add_parser("list", help="the keys of --config FILE and/or --keys FILE")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = commands.add_parser("revoke", help="remove the key NAME from --keys FILE")
    revoke.add_argument("name")
    for sub in (create, listing, revoke):
        sub.add_argument("--keys", type=Path, metavar="FILE",
                         help="a keys file (auth.keys_file in the config)")  # fmt: skip
    for sub in (listing, revoke):
        sub.add_argument("--config", type=Path, metavar="FILE",
                         help="the config file (its auth.keys and auth.keys_file)")  # fmt: skip
    return parser


def key_command(argv: Sequence[str]) -> int:
    """``stack key create|list|revoke``."""
    args = _parser().parse_args(list(argv))
    if args.command == "create":
        return _create(args)
    if args.command == "list":
        return _list(args)
    return _revoke(args)


def _create(args: argparse.Namespace) -> int:
    from ..features.auth import SCOPES, hash_key, new_key

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        print(f"stack: unknown scope(s) {bad}; scopes: {', '.join(SCOPES)}", file=sys.stderr)
        return 2
    key = new_key()
    entry: dict[str, Any] = {"name": args.name, "sha256": hash_key(key), "scopes": scopes}
    if args.rate:
        entry["rate"] = args.rate
    if args.keys is not None:
        entries = _read_keys(args.keys)
        if any(e.get("name") == args.name for e in entries):
            print(f"stack: {args.keys} already has a key named {args.name!r} "
                  f"(stack key revoke {args.name} --keys {args.keys} first)",
                  file=sys.stderr)  # fmt: skip
            return 2
        _write_keys(args.keys, [*entries, entry])
        print(f"key: {key}")
        print(f"(shown once: give it to the client; its entry is now in {args.keys})")
        return 0
    print(f"key: {key}")
    print("(shown once: give it to the client; put this entry under auth.keys in the config)")
    print(json.dumps(entry))
    return 0


def _entries(args: argparse.Namespace) -> list[tuple[dict[str, Any], str]]:
    """(entry, where it is) for each key of --config and --keys."""
    found: list[tuple[dict[str, Any], str]] = []
    if args.config is not None:
        from ..config import Config

        config = Config.from_file(args.config)
        auth = dict(config.auth or {})
        found += [(dict(e), str(args.config)) for e in auth.get("keys") or []]
        if auth.get("keys_file"):
            path = config.base / str(auth["keys_file"])
            found += [(e, str(path)) for e in _read_keys(path)]
    if args.keys is not None:
        found += [(e, str(args.keys)) for e in _read_keys(args.keys)]
    return found


def _list(args: argparse.Namespace) -> int:
    if args.config is None and args.keys is None:
        print("stack: which keys? give --config FILE or --keys FILE", file=sys.stderr)
        return 2
    entries = _entries(args)
    if args.json:
        print(json.dumps([{**e, "file": where} for e, where in entries], indent=2))
        return 0
    rows = [[str(e.get("name", "?")), ",".join(e.get("scopes") or []) or "-",
             str(e.get("rate") or "-"), str(e.get("sha256", ""))[:12], where]
            for e, where in entries]  # fmt: skip
    print(table(["NAME", "SCOPES", "RATE", "SHA256", "FILE"], rows))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if args.keys is None and args.config is None:
        print("stack: revoke from where? give --keys FILE (or --config FILE)", file=sys.stderr)
        return 2
    for entry, where in _entries(args):
        if entry.get("name") != args.name:
            continue
        if args.config is not None and where == str(args.config):
            print(f"stack: the key {args.name!r} is written in {args.config} (auth.keys): "
                  "delete its entry there by hand (stack does not rewrite your config), "
                  "then restart the server", file=sys.stderr)  # fmt: skip
            return 1
        path = Path(where)
        kept = [e for e in _read_keys(path) if e.get("name") != args.name]
        _write_keys(path, kept)
        print(f"revoked {args.name!r}: removed from {path} (restart the server to apply)")
        return 0
    print(f"stack: no key named {args.name!r}", file=sys.stderr)
    return 1


def _read_keys(path: Path) -> list[dict[str, Any]]:
    from ..errors import ConfigError

    if not path.exists():
        return []
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    entries = loaded.get("keys", []) if isinstance(loaded, dict) else loaded
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a list of keys under `keys:`")
    return [dict(e) for e in entries if isinstance(e, dict)]


def _write_keys(path: Path, entries: list[dict[str, Any]]) -> None:
    # Written whole and renamed into place: a server reading it never sees half.
    text = "# API keys (SHA-256 only), written by `stack key`\n" + yaml.safe_dump(
        {"keys": entries}, sort_keys=False
    )
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(text, encoding="utf-8")
    partial.chmod(0o600)
    partial.replace(path)
