"""Limits and their units (sandbox/limits.py): plain values, no processes."""

from __future__ import annotations

import math
from typing import Any

import pytest

from sandbox.core.limits import Limits, parse_duration, parse_size
from sandbox.errors import ConfigError, LimitTooHigh

# -- durations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("0.5h", 1800.0),
        (" 5 s ", 5.0),
        ("500", 0.5),
        ("0", 0.0),
    ],
)
def test_parse_duration_strings(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "seconds"), [(500, 0.5), (1500.0, 1.5), (0, 0.0)])
def test_parse_duration_bare_numbers_are_milliseconds(value: float, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "seconds"), [(5, 5.0), ("5", 5.0), ("250ms", 0.25)])
def test_parse_duration_default_unit_seconds(value: Any, seconds: float) -> None:
    assert parse_duration(value, default_unit="s") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "fast", "5 seconds", "5x", "-5s", "s", "5ms5", "1e3ms"])
def test_parse_duration_bad_strings(text: str) -> None:
    with pytest.raises(ConfigError, match="not a duration: .* \\(write e.g. 500ms, 5s or 2m\\)"):
        parse_duration(text)


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_bools(value: bool) -> None:
    with pytest.raises(ConfigError, match=f"not a duration: {value!r}"):
        parse_duration(value)


# -- sizes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 1048576),
        ("0", 0),
        ("100b", 100),
        ("100B", 100),
        ("64k", 64_000),
        ("64K", 64_000),
        ("64kb", 64_000),
        ("5M", 5_000_000),
        ("5MB", 5_000_000),
        ("1G", 1_000_000_000),
        ("2T", 2_000_000_000_000),
        ("1.5G", 1_500_000_000),
        ("64KiB", 64 * 1024),
        ("64kib", 64 * 1024),
        ("512MiB", 512 * 1024**2),
        ("1GiB", 1024**3),
        ("1Gi", 1024**3),
        (" 256 MiB ", 256 * 1024**2),
    ],
)
def test_parse_size_strings(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_int_is_bytes() -> None:
    assert parse_size(4096) == 4096


@pytest.mark.parametrize("text", ["", "big", "5 bytes", "5X", "MiB", "-5", "-5MiB", "5iB"])
def test_parse_size_bad_strings(text: str) -> None:
    with pytest.raises(
        ConfigError, match="not a size: .* \\(write e.g. 65536, 64KiB, 256MiB or 1G\\)"
    ):
        parse_size(text)


def test_parse_size_negative_int() -> None:
    with pytest.raises(ConfigError, match="a size cannot be negative: -1"):
        parse_size(-1)


def test_parse_size_rejects_bools() -> None:
    with pytest.raises(ConfigError, match="not a size: True"):
        parse_size(True)


def test_parse_size_of_a_float_is_a_config_error() -> None:
    """YAML and JSON give floats (``memory: 1.5e9``); the answer must be ConfigError, not TypeError."""
    with pytest.raises(ConfigError, match="1.5"):
        parse_size(1.5)  # type: ignore[arg-type]


# -- Limits -------------------------------------------------------------------


def test_default_limits() -> None:
    assert Limits().to_json() == {
        "timeout": 10.0,
        "cpu": 10.0,
        "memory": 512 * 1024 * 1024,
        "processes": 64,
        "file_size": 64 * 1024 * 1024,
        "open_files": 256,
        "output": 64 * 1024 * 1024,
        "body": 16 * 1024 * 1024,
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeout", 0), ("timeout", -1.0), ("cpu", 0.0), ("memory", 0), ("processes", -3)],
)
def test_limits_must_be_positive(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"limit {field} must be positive, got {value!r}"):
        Limits(**{field: value})


def test_limits_none_is_unlimited() -> None:
    limits = Limits(timeout=None, memory=None)
    assert limits.timeout is None
    assert limits.memory is None


def test_limits_reject_nan() -> None:
    """NaN is neither positive nor comparable: it would slip past every maximum."""
    with pytest.raises(ConfigError, match="timeout"):
        Limits(timeout=math.nan)


def test_limits_are_frozen() -> None:
    limits = Limits()
    with pytest.raises(AttributeError):
        limits.timeout = 1.0  # type: ignore[misc]


# -- from_mapping ---------------------------------------------------------------


def test_from_mapping_units() -> None:
    limits = Limits.from_mapping(
        {
            "timeout": "250ms",
            "cpu": 2,
            "memory": "256MiB",
            "processes": "16",
            "file_size": "1M",
            "open_files": 32,
            "output": 1000,
            "body": "1KiB",
        }
    )
    assert limits == Limits(
        timeout=0.25,
        cpu=2.0,
        memory=256 * 1024**2,
        processes=16,
        file_size=1_000_000,
        open_files=32,
        output=1000,
        body=1024,
    )


def test_from_mapping_bare_duration_is_seconds() -> None:
    assert Limits.from_mapping({"timeout": 30}).timeout == 30.0
    assert Limits.from_mapping({"timeout": "30"}).timeout == 30.0


@pytest.mark.parametrize("unlimited", [None, "none", "None", "unlimited", "UNLIMITED"])
def test_from_mapping_unlimited(unlimited: Any) -> None:
    limits = Limits.from_mapping(
        {"timeout": unlimited, "memory": unlimited, "processes": unlimited}
    )
    assert (limits.timeout, limits.memory, limits.processes) == (None, None, None)


def test_from_mapping_keeps_the_rest_of_base() -> None:
    base = Limits(timeout=3.0, memory=1000)
    limits = Limits.from_mapping({"memory": "2k"}, base=base)
    assert limits == Limits(timeout=3.0, memory=2000)
    assert base.memory == 1000


def test_from_mapping_empty_is_the_defaults() -> None:
    assert Limits.from_mapping({}) == Limits()


def test_from_mapping_accepts_dashes() -> None:
    limits = Limits.from_mapping({"file-size": "1KiB", "open-files": 10})
    assert (limits.file_size, limits.open_files) == (1024, 10)


def test_from_mapping_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        Limits.from_mapping({"timeout": "1s", "memroy": "1G"})
    assert info.value.message == (
        "unknown limit 'memroy'; known limits: body, cpu, file_size, memory, open_files, "
        "output, processes, timeout"
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"timeout": "soon"}, "not a duration: 'soon'"),
        ({"memory": "lots"}, "not a size: 'lots'"),
        ({"memory": -5}, "a size cannot be negative: -5"),
        ({"processes": "many"}, "limit processes must be a whole number, got 'many'"),
        ({"processes": 2.5}, "limit processes must be a whole number, got 2.5"),
        ({"open_files": True}, "limit open_files must be a whole number, got True"),
        ({"timeout": True}, "not a duration: True"),
        ({"processes": 0}, "limit processes must be positive, got 0"),
        ({"timeout": "0s"}, "limit timeout must be positive, got 0.0"),
    ],
)
def test_from_mapping_bad_values(data: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigError) as info:
        Limits.from_mapping(data)
    assert why in info.value.message


def test_from_mapping_float_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="memory|1.5"):
        Limits.from_mapping({"memory": 1.5e9})


def test_from_mapping_nan_is_a_config_error() -> None:
    """YAML ``.nan`` or Python's JSON ``NaN`` give a float NaN."""
    with pytest.raises(ConfigError, match="timeout"):
        Limits.from_mapping({"timeout": math.nan})


# -- within ---------------------------------------------------------------------


def test_within_returns_the_limits() -> None:
    limits = Limits(timeout=5.0)
    assert limits.within(Limits(timeout=5.0)) is limits


def test_within_over_the_maximum_names_the_limit() -> None:
    with pytest.raises(LimitTooHigh) as info:
        Limits(memory=2048).within(Limits(memory=1024))
    error = info.value
    assert error.message == "limit memory=2048 is above the server's maximum 1024"
    assert error.details == {"limit": "memory", "maximum": 1024}
    assert error.status == 400
    assert error.to_json() == {
        "error": "limit_too_high",
        "message": "limit memory=2048 is above the server's maximum 1024",
        "limit": "memory",
        "maximum": 1024,
    }


def test_within_unlimited_under_a_finite_maximum() -> None:
    with pytest.raises(LimitTooHigh, match="limit timeout=None is above the server's maximum 10.0"):
        Limits(timeout=None).within(Limits(timeout=10.0))


def test_within_unlimited_maximum_allows_anything() -> None:
    limits = Limits(timeout=None, memory=10**12)
    assert limits.within(Limits(timeout=None, memory=None)) is limits


def test_within_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Limits(cpu=60.0).within(Limits(cpu=30.0))
