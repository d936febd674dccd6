"""``stack languages``: the registry and what is installed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..core.languages import DEFAULT_PATH, Registry
from ._table import table


def languages_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack languages", description="List the registered languages and their versions."
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--registry", type=Path, action="append", default=[],
                        help="an extra folder of language YAML files")  # fmt: skip
    return parser


def languages(args: argparse.Namespace) -> int:
    """``stack languages``: each language, extensions, installed version or what to install."""
    registry = Registry.load(args.registry, DEFAULT_PATH)
    rows: list[dict[str, Any]] = []
    for lang in registry:
        found = registry.installed(lang)
        rows.append(
            {
                "name": lang.name,
                "aliases": list(lang.aliases),
                "extensions": list(lang.extensions),
                "interpreter": found.path,
                "version": found.version,
                "installed": found.available,
                "package": lang.package,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table_rows = []
    for r in rows:
        exts = " ".join(r["extensions"]) or "-"
        if r["installed"]:
            table_rows.append([r["name"], exts, r["version"] or "?", r["interpreter"]])
        else:
            table_rows.append([r["name"], exts, "missing", f"apt-get install {r['package']}"])
    print(table(["LANGUAGE", "EXTENSIONS", "VERSION", "INTERPRETER"], table_rows))
    return 0
