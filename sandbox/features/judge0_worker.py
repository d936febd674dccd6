"""Running Judge0 submissions: on the local engine, or on ``stack worker``s over NATS.

    stack serve --config stack.yaml          # judge0: {broker: nats://10.0.0.5:4222}
    stack worker --broker nats://10.0.0.5:4222 --judge0

:func:`execute_record` runs one submission's record to its verdict on an
engine. With ``judge0.broker`` set, a ``stack serve`` node sends each
submission it takes from its queue, as gzipped JSON, on ``stack.judge0``
(NATS request/reply) instead; every ``stack worker --judge0`` subscribes
there in the queue group ``stack-judge0``, so each submission reaches one of
them, which runs it and replies with the finished record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import trio

from ..brokers import Broker, BrokerConfig, Message
from ..core.engine import Engine
from ..core.invocation import Invocation
from ..core.languages import Language
from ..core.limits import Limits
from ..core.process import CollectIO, Outcome
from ..errors import ConfigError, Overloaded, StackError
from . import jobs as ex
from . import judge0 as j0
from .worker import decode, encode, serve_queue

SUBJECT = "stack.judge0"
QUEUE = "stack-judge0"
#: What a worker's reply carries back into the node's record.
RESULT_FIELDS = ("status_id", "stdout", "stderr", "compile_output", "message", "exit_code",
                 "exit_signal", "time", "wall_time", "memory", "finished_at")  # fmt: skip
log = logging.getLogger("stack")


async def execute_record(engine: Engine, record: dict[str, Any], *, output: int,
                         max_extract: int) -> None:  # fmt: skip
    """Run a submission on ``engine``; its verdict and outputs are written into ``record``.

    Raises:
        Overloaded: the engine's queue is full (try again later).
        StackError: the run could not be made (the caller reports an Internal Error).
    """
    registry = engine.registry
    lang = j0.language_of(registry, int(record["language_id"]))
    if lang is None:
        missing = f"language {record['language_id']} is not installed on this server"
        j0.failed(record, j0.INTERNAL_ERROR, missing)
        return
    if int(record["language_id"]) == j0.MULTI_FILE:
        await _execute_project(engine, lang, record, output=output, max_extract=max_extract)
        return
    lang = j0.with_compiler_options(lang, record.get("compiler_options"))
    files = [(lang.entry_name(), j0.unb64(record["source_code"]) or b"")]
    extra = j0.unb64(record.get("additional_files"))
    if extra:
        names = {lang.entry_name()}
        for name, data in j0.unzip(extra, max_extract * 1024):
            if name not in names:
                names.add(name)
                files.append((name, data))
    job = ex.Job(
        language=lang,
        version=registry.installed(lang).version or "",
        files=tuple(files),
        stdin=j0.unb64(record.get("stdin")) or b"",
        args=j0.arguments(record),
        run=j0.run_limits(record, engine.config.limits, output),
        compile=Limits(**{**engine.compile_limits().to_json(), "output": output}),
        output=output,
        network=True if record.get("enable_network") else None,
    )
    collected: list[CollectIO] = []

    def collect() -> CollectIO:
        collected.append(CollectIO(job.stdin))
        return collected[-1]

    done = await ex.run_job(engine, job, collect, runs=int(record["number_of_runs"]),
                            feed_stdin=False)  # fmt: skip
    build, runs = done.build, list(zip(done.outcomes, collected, strict=True))
    compile_output = build.output if build is not None else None
    if build is not None and not build.ok:
        outcome = build.outcome
        if outcome is not None and outcome.reason in ("timeout", "cpu"):
            compile_output = (compile_output or b"") + b"Compilation time limit exceeded."
        j0.failed(record, j0.COMPILATION_ERROR, "", compile_output)
        return
    j0.finish(record, [_run(outcome, collect) for outcome, collect in runs], compile_output)


async def _execute_project(engine: Engine, bash: Language, record: dict[str, Any], *,
                           output: int, max_extract: int) -> None:  # fmt: skip
    """Judge0's multi-file program: ``bash compile`` (when there is one), then ``bash run``."""
    files = j0.unzip(j0.unb64(record.get("additional_files")) or b"", max_extract * 1024)
    limits = j0.run_limits(record, engine.config.limits, output)
    network = True if record.get("enable_network") else None
    async with engine.open_call(limits) as call:
        for name, data in files:
            call.write_file(name, data)
        compile_output = None
        if any(name == "compile" for name, _ in files):
            compiling = CollectIO()
            script = Invocation(bash, call.workdir / "compile", door="execute",
                                stderr_limit=output, network=network)  # fmt: skip
            compile_limits = Limits(**{**engine.compile_limits().to_json(), "output": output})
            outcome = await call.run(script, compiling, limits=compile_limits)
            compile_output = compiling.output
            if not outcome.ok:
                if outcome.reason in ("timeout", "cpu"):
                    compile_output += b"Compilation time limit exceeded."
                j0.failed(record, j0.COMPILATION_ERROR, "", compile_output)
                return
        runs = []
        for _ in range(int(record["number_of_runs"])):
            collect = CollectIO(j0.unb64(record.get("stdin")) or b"")
            script = Invocation(bash, call.workdir / "run", args=j0.arguments(record),
                                door="execute", stderr_limit=output, network=network)  # fmt: skip
            runs.append(_run(await call.run(script, collect), collect))
    j0.finish(record, runs, compile_output)


def _run(outcome: Outcome, collect: CollectIO) -> j0.Run:
    usage = outcome.usage
    return j0.Run(
        reason=outcome.reason,
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        cpu=usage.cpu,
        wall=usage.wall,
        memory=usage.memory,
        stdout=collect.stdout,
        stderr=collect.stderr,
        output=collect.output,
        message=outcome.message,
    )


def broker_config(value: str, brokers: Mapping[str, BrokerConfig]) -> BrokerConfig:
    """``judge0.broker``: a broker's name from the config, or a URL.

    Raises:
        ConfigError: neither.
    """
    if value in brokers:
        return brokers[value]
    if "://" not in value:
        known = ", ".join(sorted(brokers)) or "none configured"
        raise ConfigError(f"judge0.broker: no broker named {value!r} (brokers: {known}); "
                          "or give a URL such as nats://10.0.0.5:4222")  # fmt: skip
    return BrokerConfig(url=value, name="judge0")


def reply_timeout(record: Mapping[str, Any], engine: Engine) -> float:
    """How long a node waits for a worker's answer: every run and the compile, with room."""
    compile_time = engine.compile_limits().timeout or 30.0
    runs = int(record["number_of_runs"]) * (float(record["wall_time_limit"]) + 2.0)
    return runs + compile_time + 30.0


async def execute_remote(broker: Broker, record: dict[str, Any], wait: float,
                         *, subject: str = SUBJECT) -> None:  # fmt: skip
    """Have a worker run a submission; its result is written into ``record``.

    Raises:
        NoResponders, BrokerUnavailable: no worker listens, or the broker is down.
        BrokerTimeout: no answer in ``wait`` seconds.
    """
    reply = await broker.request(subject, encode(record), timeout=wait)
    try:
        answer = decode(reply.data)
    except (ValueError, OSError) as exc:
        j0.failed(record, j0.INTERNAL_ERROR, f"a worker answered with something else: {exc}")
        return
    if not isinstance(answer, dict) or "status_id" not in answer:
        error = answer.get("error") if isinstance(answer, dict) else None
        j0.failed(record, j0.INTERNAL_ERROR, f"the worker could not run it: {error or answer}")
        return
    record.update({k: answer.get(k) for k in RESULT_FIELDS})


async def serve_judge0_worker(engine: Engine, broker: Broker, *, stop: trio.Event,
                              output: int = ex.DEFAULT_OUTPUT,
                              settings: j0.Settings | None = None,
                              subject: str = SUBJECT, queue: str = QUEUE,
                              task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                              ) -> int:  # fmt: skip
    """Run the submissions nodes send until ``stop`` is set; returns how many were run.

    On ``stop`` the worker leaves the queue group first (a drain: nothing sent
    to it is lost) and finishes the submissions it holds. Cancellation kills
    them (their nodes time out and report an Internal Error).
    """
    settings = settings or j0.Settings()
    handled = 0

    async def answer(message: Message) -> None:
        nonlocal handled
        try:
            record = decode(message.data)
            if not isinstance(record, dict) or "language_id" not in record:
                raise ValueError("not a submission")
        except (ValueError, OSError) as exc:
            response: dict[str, Any] = {"error": f"not a gzipped JSON submission: {exc}"}
        else:
            while True:
                try:
                    await execute_record(engine, record, output=output,
                                         max_extract=settings.max_extract_size)  # fmt: skip
                    break
                except Overloaded:  # the engine's queue is full: wait for a slot
                    await trio.sleep(0.5)
                except StackError as exc:
                    j0.failed(record, j0.INTERNAL_ERROR, exc.message)
                    break
            response = record
            handled += 1
        if message.reply:
            await broker.publish(message.reply, encode(response))

    await serve_queue(broker, subject, queue, answer, stop=stop, what="submissions",
                      task_status=task_status)  # fmt: skip
    return handled


__all__ = ["execute_record", "execute_remote", "serve_judge0_worker"]
