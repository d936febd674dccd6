"""``python -m benchmarks``: run the suite, print the tables, optionally save them."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import suite
from .hellos import HELLOS, Interpreter, find_interpreters, parse_languages, write_scripts
from .load import pick_load
from .plot import plot
from .profile import Profile
from .report import (
    Cell,
    MemoryResult,
    OverloadResult,
    Target,
    WarmResult,
    breakdown_table,
    cpu_table,
    evaluate_targets,
    figures_table,
    memory_table,
    overload_table,
    profile_table,
    ratios_table,
    targets_table,
    warm_table,
)
from .servers import stack_command

FULL = {
    "requests": 1000,
    "duration": 5.0,
    "memory_calls": 10_000,
    "overload_requests": 3000,
    "warm_requests": 100,
}
QUICK = {
    "requests": 200,
    "duration": 3.0,
    "memory_calls": 200,
    "overload_requests": 400,
    "warm_requests": 30,
}
QUICK_LANGUAGES = "bash,python"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,8,64, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers like 1,8,64, got {text!r}")
    return sorted(set(values))


def _isolates(text: str) -> list[str]:
    modes = [x.strip() for x in text.split(",") if x.strip()]
    if not modes or any(m not in ("none", "bwrap") for m in modes):
        raise argparse.ArgumentTypeError(f"expected none, bwrap or none,bwrap, got {text!r}")
    return list(dict.fromkeys(modes))


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text!r}")
    return value


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected milliseconds, 0 or more, got {text!r}")
    return value / 1000


def _languages(text: str) -> list[str]:
    try:
        return parse_languages(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Spawn throughput and latency of stack, side by side with the raw spawn "
        "floor and lighttpd + mod_cgi, for hello-world scripts.",
    )
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: {QUICK['requests']} requests per cell, languages "
                   f"{QUICK_LANGUAGES}, concurrency 1,8, memory after 200 and 400 calls")  # fmt: skip
    p.add_argument("--languages", type=_languages, default=None,
                   help=f"comma-separated (default: {','.join(HELLOS)}; node = javascript)")  # fmt: skip
    p.add_argument("--concurrency", type=_int_list, default=None,
                   help="client connections, comma-separated (default 1,8,64)")  # fmt: skip
    p.add_argument("--requests", type=int, default=None,
                   help=f"requests per cell (default {FULL['requests']}; "
                   f"each cell also stops after --duration)")  # fmt: skip
    p.add_argument("--duration", type=float, default=None,
                   help=f"most seconds per cell (default {FULL['duration']:.0f})")  # fmt: skip
    p.add_argument("--memory-calls", type=int, default=None,
                   help=f"calls per batch of the memory phase (default {FULL['memory_calls']})")  # fmt: skip
    p.add_argument("--isolate", type=_isolates, default=["none", "bwrap"],
                   help="stack's isolate modes (default none,bwrap; the first also runs the "
                   "memory, overload and profile phases)")  # fmt: skip
    p.add_argument("--warm", type=_count, default=4, metavar="N",
                   help="the warm pool phase's pool size, for python, javascript and bash "
                   "(default 4; 0: no warm pool phase)")  # fmt: skip
    p.add_argument("--warm-gap", type=_milliseconds, default=0.05, metavar="MS",
                   help="milliseconds between the warm pool phase's paced requests (default 50)")  # fmt: skip
    p.add_argument("--client", choices=("auto", "wrk", "builtin"), default="auto",
                   help="load generator (default auto: wrk when installed, else builtin)")  # fmt: skip
    p.add_argument("--profile", action="store_true",
                   help="also profile stack serving bash hello with py-spy (if installed)")  # fmt: skip
    p.add_argument("--json", type=Path, metavar="FILE", help="save the raw results as JSON")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the figures (matplotlib)")
    return p


def settings_from(args: argparse.Namespace) -> suite.Settings:
    preset = QUICK if args.quick else FULL
    languages = args.languages or parse_languages(
        QUICK_LANGUAGES if args.quick else ",".join(HELLOS)
    )
    concurrency = args.concurrency or ([1, 8] if args.quick else [1, 8, 64])
    return suite.Settings(
        languages=languages,
        concurrency=concurrency,
        isolate=args.isolate,
        requests=args.requests or int(preset["requests"]),
        duration=args.duration or float(preset["duration"]),
        memory_calls=args.memory_calls or int(preset["memory_calls"]),
        memory_duration=30.0 if args.quick else 180.0,
        overload_requests=int(preset["overload_requests"]),
        warm=args.warm,
        warm_requests=int(preset["warm_requests"]),
        warm_gap=args.warm_gap,
    )


WARNINGS: list[str] = []
LOAD: list[float] = []  # 1-minute load average at each progress line: how busy the machine was


def _say(text: str) -> None:
    """Progress on stderr; warnings also go into the report."""
    LOAD.append(os.getloadavg()[0])
    if text.startswith("WARNING: "):
        WARNINGS.append(text.removeprefix("WARNING: "))
    print(f"bench: {text}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """Everything one run measured, with what it ran on."""

    command: str
    machine: dict[str, Any]
    client: str
    settings: suite.Settings
    interpreters: dict[str, Interpreter]
    started: datetime.datetime
    finished: datetime.datetime
    cells: list[Cell]
    memory: MemoryResult | None
    overload: OverloadResult | None
    warm: list[WarmResult]
    profile: Profile | None
    targets: list[Target]

    def to_json(self) -> dict[str, Any]:
        return {
            "date": self.started.isoformat(timespec="seconds"),
            "seconds": (self.finished - self.started).total_seconds(),
            "command": self.command,
            "machine": self.machine,
            "client": self.client,
            "load_average_during": [min(LOAD, default=0), max(LOAD, default=0)],
            "settings": self.settings.__dict__,
            "interpreters": {n: i.__dict__ for n, i in self.interpreters.items()},
            "results": [cell.to_json() for cell in self.cells],
            "memory": self.memory.to_json() if self.memory else None,
            "overload": self.overload.to_json() if self.overload else None,
            "warm": [result.to_json() for result in self.warm],
            "profile": self.profile.to_json() if self.profile else None,
            "targets": [t.to_json() for t in self.targets],
            "warnings": WARNINGS,
        }


def _warm_intro(run: Run) -> str:
    """What the warm pool table shows, and what to read in it."""
    settings = run.settings
    return (
        f"A stack with `--warm LANG={settings.warm}` beside one without, both "
        f"`--max-running {max(settings.concurrency)}`, each load measured on the cold one, "
        "then on the warm one, the pool full before each. **paced c=1** (low load): "
        f"{settings.warm_requests} requests one at a time on one keep-alive connection, "
        f"{settings.warm_gap * 1000:g} ms apart, so the pool refills between calls; its "
        "req/s is set by the gap and not shown. **back-to-back c=1** (moderate load): the "
        "same requests without the gap; a call may take an interpreter still starting up. "
        f"**c=8**: the suite's load ({settings.requests} requests or "
        f"{settings.duration:g} s): at saturation every call still costs a whole "
        "interpreter start-up, only moved ahead of its request, so req/s stays bound by "
        "start-up. floor: the interpreter's raw spawn at c=1 (warm ÷ floor is the issue's "
        "target for python); hit rate: the calls handed an interpreter loaded and "
        "waiting, over the warm load's calls (the pool's /metrics counters; the others "
        "took one still loading, or started cold)."
    )


def render(run: Run) -> str:
    """The report printed on stdout: markdown, every table."""
    info, settings = run.machine, run.settings
    versions = ", ".join(f"{n} {i.version}" for n, i in run.interpreters.items())
    seconds = int((run.finished - run.started).total_seconds())
    out = [
        f"# stack benchmarks, {run.started:%Y-%m-%d %H:%M %Z} ({seconds} s)",
        "",
        f"command: {run.command}",
        f"machine: {info['nproc']} cores, {info['memory_gib']} GiB, {info['cpu']}, "
        f"kernel {info['kernel']}, {info['os']}",
        f"1-minute load average: {info['load_average']:.2f} at start, "
        f"{min(LOAD, default=0):.2f}-{max(LOAD, default=0):.2f} during the run "
        f"({info['nproc']} cores: above {info['nproc']}, other work competed for them)",
        f"load generator: {run.client}; interpreters: {versions}",
        f"per cell: up to {settings.requests} requests or {settings.duration:.0f} s; "
        f"stack --max-running {max(settings.concurrency)}",
        "",
        "## Figures",
        "",
        figures_table(run.cells),
        "",
        "## stack over the baselines",
        "",
        "Each stack figure divided by the same figure of the spawn floor and of lighttpd "
        "at the same language and concurrency; p50 − floor is the latency stack adds to a bare spawn.",
        "",
        ratios_table(run.cells),
        "",
        "## CPU per request",
        "",
        "The server process's own CPU (user + system) and its reaped children's (the calls: "
        "launcher, sandbox, interpreter; for the floor, the interpreters), over each cell.",
        "",
        cpu_table(run.cells),
        "",
        "## Where a lone call's time goes (c=1)",
        "",
        "call wall: stack's X-Stack-Usage wall (launcher spawned to process tree ended), median of "
        "30 sequential calls; server: the rest of stack's p50.",
        "",
        breakdown_table(run.cells),
        "",
    ]
    if run.warm:
        out += ["## Warm pool", "", _warm_intro(run), "", warm_table(run.warm), ""]
    if run.memory is not None:
        memory = run.memory
        out += [
            f"## Memory: stack --isolate {memory.isolate}, {memory.language} hello, "
            f"c={memory.concurrency}" + (f" ({memory.note})" if memory.note else ""),
            "",
            memory_table(memory),
            "",
        ]
    if run.overload is not None:
        overload = run.overload
        out += [
            f"## Overload: stack --isolate {overload.isolate}, {overload.language} hello",
            "",
            overload_table(overload),
            "",
        ]
        out += [f"children left: {item}" for item in overload.children_left]
        out += [f"sandbox processes left: {item}" for item in overload.sandbox_left]
    if run.profile is not None:
        out += [
            "## Profile: stack serving bash hello at c=8 (py-spy)",
            "",
            profile_table(run.profile),
            "",
        ]
    out += ["## Targets", "", targets_table(run.targets), ""]
    if WARNINGS:
        out += ["## Warnings", "", *[f"- {w}" for w in WARNINGS], ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = settings_from(args)
    try:
        client, load = pick_load(args.client)
    except RuntimeError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    interpreters = find_interpreters(stack_command(), settings.languages)
    missing = [name for name, i in interpreters.items() if not i.installed]
    for name in missing:
        _say(f"{name}: not installed (apt-get install {interpreters[name].package}); skipped")
    languages = [name for name in settings.languages if name not in missing]
    if not languages:
        print("benchmarks: none of the languages is installed", file=sys.stderr)
        return 2
    settings = suite.Settings(**{**settings.__dict__, "languages": languages})

    info = suite.machine()
    started = datetime.datetime.now().astimezone()
    command = suite.command_line()
    _say(f"{command}: client {client}; {info['nproc']} cores, {info['cpu']}")
    try:
        with tempfile.TemporaryDirectory(prefix="stack-bench-") as tmp:
            root = Path(tmp)
            services, cgi = write_scripts(root, [HELLOS[name] for name in languages])
            cells = suite.run_matrix(settings, interpreters, services, cgi, root, load, _say)
            warm = suite.run_warm(settings, interpreters, services, cells, root, load, _say)
            if "bash" not in languages:  # the memory, overload and profile phases use bash hello
                write_scripts(root, [HELLOS["bash"]])
            memory = suite.run_memory(settings, services, root, load, _say)
            overload = suite.run_overload(settings, services, root, load, _say)
            profile = None
            if args.profile:
                profile = suite.run_profile(settings, services, root, load, _say)
    except KeyboardInterrupt:
        print("benchmarks: interrupted; every server was stopped", file=sys.stderr)
        return 130
    run = Run(
        command,
        info,
        client,
        settings,
        {n: interpreters[n] for n in languages},
        started,
        datetime.datetime.now().astimezone(),
        cells,
        memory,
        overload,
        warm,
        profile,
        evaluate_targets(cells, memory, overload, warm),
    )
    print(render(run), flush=True)
    if args.json:
        args.json.write_text(json.dumps(run.to_json(), indent=2, default=str) + "\n")
        _say(f"results saved to {args.json}")
    if args.plot:
        _say(plot(cells, args.plot))
    return 0
