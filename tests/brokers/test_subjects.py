"""Subjects, patterns and their MQTT and Redis spellings: plain functions, no event loop."""

from __future__ import annotations

import pytest

from sandbox.brokers import InvalidSubject, subjects


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
        ("a.b", "a.b.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*", "a", False),
        ("*.b.*", "a.b.c", True),
        ("*.b.*", "a.x.c", False),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        (">", "a", True),
        (">", "a.b.c", True),
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.*.>", "a.b", False),
        ("a.*.>", "a.b.c", True),
        ("a.[x]", "a.x", False),
        ("a.[x]", "a.[x]", True),
    ],
)
def test_match(pattern: str, subject: str, expected: bool) -> None:
    assert subjects.match(pattern, subject) is expected


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("", "cannot be empty"),
        ("a..b", "empty token"),
        (".a", "empty token"),
        ("a.", "empty token"),
        ("a b", "whitespace"),
        ("a\nb", "whitespace"),
        ("a.*", "wildcard '\\*'"),
        ("a.>", "wildcard '>'"),
        ("a.b*", "mixes a wildcard"),
    ],
)
def test_bad_subjects_say_what_is_wrong(subject: str, message: str) -> None:
    with pytest.raises(InvalidSubject, match=message) as caught:
        subjects.validate_subject(subject)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a.>.b", "must be the\nlast token|last token"),
        ("a.b>", "mixes a wildcard"),
        ("a.*b", "mixes a wildcard"),
        ("", "cannot be empty"),
        ("a..>", "empty token"),
        ("a\tb", "whitespace"),
    ],
)
def test_bad_patterns_say_what_is_wrong(pattern: str, message: str) -> None:
    with pytest.raises(InvalidSubject, match=message):
        subjects.validate_pattern(pattern)


def test_good_patterns_and_subjects_pass_unchanged() -> None:
    assert subjects.validate_pattern("a.*.>") == "a.*.>"
    assert subjects.validate_pattern(">") == ">"
    assert subjects.validate_subject("orders.eu-1.created_at") == "orders.eu-1.created_at"
    assert subjects.is_pattern("a.*")
    assert subjects.is_pattern("a.>")
    assert not subjects.is_pattern("a.b")


def test_non_strings_are_refused() -> None:
    with pytest.raises(InvalidSubject, match="must be a string"):
        subjects.validate_subject(b"a.b")  # type: ignore[arg-type]


@pytest.mark.parametrize("queue", ["", "a b", "a/b", "a+", "#", "a*", "a>"])
def test_bad_queue_names(queue: str) -> None:
    with pytest.raises(InvalidSubject, match="queue group name"):
        subjects.validate_queue(queue)


def test_good_queue_names() -> None:
    assert subjects.validate_queue(None) is None
    assert subjects.validate_queue("workers.eu-1_a") == "workers.eu-1_a"


@pytest.mark.parametrize(
    ("pattern", "mqtt"),
    [("a.b.c", "a/b/c"), ("a.*", "a/+"), ("a.>", "a/#"), ("*.b.>", "+/b/#"), (">", "#")],
)
def test_mqtt_filters_translate_both_ways(pattern: str, mqtt: str) -> None:
    assert subjects.to_mqtt_filter(pattern) == mqtt
    assert subjects.from_mqtt_filter(mqtt) == pattern


def test_mqtt_topics_translate_both_ways() -> None:
    assert subjects.to_mqtt_topic("sensors.kitchen.temp") == "sensors/kitchen/temp"
    assert subjects.from_mqtt_topic("sensors/kitchen/temp") == "sensors.kitchen.temp"


@pytest.mark.parametrize("subject", ["a.b/c", "a.b+", "a.#"])
def test_mqtt_reserved_characters_are_refused(subject: str) -> None:
    with pytest.raises(InvalidSubject, match="MQTT reserves"):
        subjects.to_mqtt_topic(subject)
    with pytest.raises(InvalidSubject, match="MQTT reserves"):
        subjects.to_mqtt_filter(subject)


def test_mqtt_wildcards_cannot_be_published() -> None:
    with pytest.raises(InvalidSubject, match="wildcard"):
        subjects.to_mqtt_topic("a.*")


@pytest.mark.parametrize("topic_filter", ["a/b.c", "a//b", "a/#/b"])
def test_mqtt_filters_without_a_subject_spelling(topic_filter: str) -> None:
    with pytest.raises(InvalidSubject):
        subjects.from_mqtt_filter(topic_filter)


@pytest.mark.parametrize(
    ("pattern", "glob"),
    [
        ("a.b", "a.b"),
        ("a.*", "a.*"),
        ("a.>", "a.*"),
        ("*.b.*", "*.b.*"),
        ("a.[x]?", "a.\\[x\\]\\?"),
        ("a\\b.c^", "a\\\\b.c\\^"),
    ],
)
def test_redis_globs(pattern: str, glob: str) -> None:
    assert subjects.to_redis_glob(pattern) == glob
