"""``stack key``: API keys for the config."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any


def key_command(argv: Sequence[str]) -> int:
    """``stack key create NAME --scopes execute,services``: a new API key.

    The key is printed once; the config entry holds only its SHA-256.
    """
    from ..features.auth import SCOPES, hash_key, new_key

    parser = argparse.ArgumentParser(prog="stack key", description=key_command.__doc__)
    parser.add_argument("action", choices=["create"])
    parser.add_argument("name")
    parser.add_argument(
        "--scopes",
        default="execute",
        help=f"comma-separated: {', '.join(SCOPES)} (default: execute)",
    )
    parser.add_argument("--rate", help="its own rate limit, e.g. 5/s")  # fmt: skip
    args = parser.parse_args(list(argv))
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        print(f"stack: unknown scope(s) {bad}; scopes: {', '.join(SCOPES)}", file=sys.stderr)
        return 2
    key = new_key()
    entry: dict[str, Any] = {"name": args.name, "sha256": hash_key(key), "scopes": scopes}
    if args.rate:
        entry["rate"] = args.rate
    print(f"key: {key}")
    print("(shown once: give it to the client; put this entry under auth.keys in the config)")
    print(json.dumps(entry))
    return 0
