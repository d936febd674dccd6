"""The public API of sandbox.brokers: what ``__all__`` promises is there."""

from __future__ import annotations

import pytest
import trio

import sandbox.brokers as brokers
from sandbox.errors import StackError


def test_all_is_sorted_and_importable() -> None:
    assert brokers.__all__ == sorted(brokers.__all__)
    for name in brokers.__all__:
        assert hasattr(brokers, name), name


def test_errors_are_stack_errors_with_a_status() -> None:
    errors = [getattr(brokers, n) for n in brokers.__all__]
    errors = [e for e in errors if isinstance(e, type) and issubclass(e, Exception)]
    assert {e.__name__ for e in errors} == {
        "BrokerError", "BrokerTimeout", "BrokerUnavailable", "BrokerUnsupported",
        "InvalidMessage", "InvalidSubject", "NoResponders",
    }  # fmt: skip
    for error in errors:
        assert issubclass(error, StackError)
        assert 400 <= error.status < 600
    assert issubclass(brokers.NoResponders, brokers.BrokerTimeout)


@pytest.mark.parametrize("module", ["memory", "nats", "redis", "mqtt"])
def test_every_implementation_is_a_broker(module: str) -> None:
    import importlib

    implementation = importlib.import_module(f"sandbox.brokers.{module}")
    classes = [getattr(implementation, n) for n in implementation.__all__ if n.endswith("Broker")]
    assert classes, module
    for cls in classes:
        for member in ("publish", "subscribe", "request", "wait_connected", "connected"):
            assert callable(getattr(cls, member)), (cls, member)


async def test_an_open_broker_satisfies_the_protocol() -> None:
    async with brokers.open_broker("memory://") as broker:
        assert isinstance(broker, brokers.Broker)
        await trio.lowlevel.checkpoint()
