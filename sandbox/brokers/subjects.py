"""Subjects and subject patterns, NATS style, and their MQTT and Redis spellings.

Sans-IO: plain functions over strings, tested without an event loop.

A subject is dot-separated tokens: ``orders.eu.created``. A pattern may use
two wildcards, each a whole token: ``*`` matches exactly one token
(``orders.*.created``) and ``>`` matches one or more tokens at the end
(``orders.>``). Tokens are never empty and hold no whitespace.

Every broker speaks this syntax; the MQTT and Redis brokers translate it:

    NATS            MQTT             Redis (PSUBSCRIBE glob)
    orders.eu       orders/eu        orders.eu
    orders.*        orders/+         orders.*      (over-matches: filter with match())
    orders.>        orders/#         orders.*      (over-matches: filter with match())

MQTT's ``#`` also matches the parent level (``orders/#`` matches ``orders``)
where NATS's ``>`` needs at least one more token, and a Redis ``*`` crosses
dots; so the MQTT and Redis brokers check every message they receive with
:func:`match` before handing it on.
"""

from __future__ import annotations

from ._base import InvalidSubject

_FORBIDDEN = frozenset(" \t\r\n\f\v\x00")
# Characters that mean something in a Redis glob and so are escaped there.
_GLOB_SPECIAL = frozenset("*?[]\\^")
# Characters that mean something in an MQTT topic.
_MQTT_SPECIAL = frozenset("/+#")


def _tokens(text: str, what: str) -> list[str]:
    if not isinstance(text, str):
        raise InvalidSubject(f"a {what} must be a string, got {type(text).__name__}")
    if not text:
        raise InvalidSubject(f"a {what} cannot be empty")
    bad = sorted({repr(c) for c in text if c in _FORBIDDEN})
    if bad:
        raise InvalidSubject(
            f"{what} {text!r} holds whitespace or NUL ({', '.join(bad)}); "
            "use dot-separated tokens such as 'orders.eu.created'"
        )
    tokens = text.split(".")
    if "" in tokens:
        raise InvalidSubject(
            f"{what} {text!r} has an empty token (a leading, trailing or doubled '.'); "
            "use dot-separated tokens such as 'orders.eu.created'"
        )
    return tokens


def validate_subject(subject: str) -> str:
    """Check a concrete subject, one that a message is published to.

    Returns:
        The subject, unchanged.

    Raises:
        InvalidSubject: it is empty, has an empty token or whitespace, or holds a
            wildcard (a message goes to one subject: subscribe with a pattern instead).
    """
    for token in _tokens(subject, "subject"):
        if token in ("*", ">"):
            raise InvalidSubject(
                f"subject {subject!r} holds the wildcard {token!r}: messages are published "
                "to a concrete subject; wildcards belong in subscription patterns"
            )
        if "*" in token or ">" in token:
            raise InvalidSubject(
                f"subject {subject!r}: token {token!r} mixes a wildcard character with text; "
                "'*' and '>' may only be whole tokens of a pattern"
            )
    return subject


def validate_pattern(pattern: str) -> str:
    """Check a subscription pattern.

    Returns:
        The pattern, unchanged.

    Raises:
        InvalidSubject: it is empty, has an empty token or whitespace, a wildcard
            inside a token (``a*``), or ``>`` anywhere but last.
    """
    tokens = _tokens(pattern, "pattern")
    for index, token in enumerate(tokens):
        if token == ">" and index != len(tokens) - 1:
            raise InvalidSubject(
                f"pattern {pattern!r}: '>' matches the rest of a subject and must be the "
                "last token (use '*' for one token in the middle)"
            )
        if token not in ("*", ">") and ("*" in token or ">" in token):
            raise InvalidSubject(
                f"pattern {pattern!r}: token {token!r} mixes a wildcard character with text; "
                "'*' and '>' may only be whole tokens"
            )
    return pattern


def validate_queue(queue: str | None) -> str | None:
    """Check a queue group name (None, for no group, passes).

    Raises:
        InvalidSubject: it is empty, or holds whitespace or one of ``/ + # * >``
            (which MQTT's ``$share/<group>/...`` or NATS would misread).
    """
    if queue is None:
        return None
    if not isinstance(queue, str) or not queue:
        raise InvalidSubject(f"a queue group name must be a non-empty string, got {queue!r}")
    bad = sorted({c for c in queue if c in _FORBIDDEN or c in "/+#*>"})
    if bad:
        raise InvalidSubject(
            f"queue group name {queue!r} holds {' '.join(repr(c) for c in bad)}; "
            "use letters, digits, '-', '_' or '.'"
        )
    return queue


def is_pattern(text: str) -> bool:
    """Whether ``text`` (a valid pattern) holds a wildcard."""
    return any(token in ("*", ">") for token in text.split("."))


def match(pattern: str, subject: str) -> bool:
    """Whether ``subject`` matches ``pattern``.

    Both are assumed valid (see :func:`validate_pattern`); a subject that holds
    wildcards is compared token by token like any other text.

    >>> match("orders.*", "orders.eu"), match("orders.>", "orders"), match("a.>", "a.b.c")
    (True, False, True)
    """
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for index, want in enumerate(wanted):
        if want == ">":
            return len(tokens) > index
        if index >= len(tokens):
            return False
        if want != "*" and want != tokens[index]:
            return False
    return len(tokens) == len(wanted)


# MQTT ---------------------------------------------------------------------------


def _mqtt_tokens(text: str, what: str) -> list[str]:
    tokens = text.split(".")
    for token in tokens:
        if token in ("*", ">"):
            continue
        bad = sorted({c for c in token if c in _MQTT_SPECIAL})
        if bad:
            raise InvalidSubject(
                f"{what} {text!r} cannot be sent over MQTT: token {token!r} holds "
                f"{' '.join(repr(c) for c in bad)}, which MQTT reserves ('/' separates levels, "
                "'+' and '#' are wildcards)"
            )
    return tokens


def to_mqtt_topic(subject: str) -> str:
    """The MQTT topic name of a concrete subject: ``a.b`` -> ``a/b``.

    Raises:
        InvalidSubject: the subject is invalid, or a token holds ``/``, ``+`` or ``#``.
    """
    validate_subject(subject)
    return "/".join(_mqtt_tokens(subject, "subject"))


def to_mqtt_filter(pattern: str) -> str:
    """The MQTT topic filter of a pattern: ``a.*.>`` -> ``a/+/#``.

    MQTT's ``#`` also matches the parent level, so the filter may over-match
    a ``>`` pattern by one subject; check received topics with :func:`match`.

    Raises:
        InvalidSubject: the pattern is invalid, or a token holds ``/``, ``+`` or ``#``.
    """
    validate_pattern(pattern)
    swap = {"*": "+", ">": "#"}
    return "/".join(swap.get(token, token) for token in _mqtt_tokens(pattern, "pattern"))


def from_mqtt_topic(topic: str) -> str:
    """The subject of a received MQTT topic name: ``a/b`` -> ``a.b``.

    Topics from other MQTT clients may hold dots or empty levels; they come
    through as they translate (``a.b/c`` -> ``a.b.c``), not validated.
    """
    return topic.replace("/", ".")


def from_mqtt_filter(topic_filter: str) -> str:
    """The pattern of an MQTT topic filter: ``a/+/#`` -> ``a.*.>``.

    Raises:
        InvalidSubject: the result is not a valid pattern (an empty level, a
            dot inside a level, ``#`` not last).
    """
    if "." in topic_filter:
        raise InvalidSubject(
            f"MQTT filter {topic_filter!r} has a '.' inside a level, which cannot be "
            "told apart from a level separator in a subject"
        )
    swap = {"+": "*", "#": ">"}
    return validate_pattern(".".join(swap.get(level, level) for level in topic_filter.split("/")))


# Redis --------------------------------------------------------------------------


def _glob_escape(token: str) -> str:
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in token)


def to_redis_glob(pattern: str) -> str:
    """The Redis ``PSUBSCRIBE`` glob for a pattern; it may over-match.

    A Redis ``*`` matches any run of characters, dots included, so ``a.*``
    becomes ``a.*`` which also matches ``a.b.c``. A pattern without wildcards
    becomes an exact glob (its special characters escaped). Check every
    received channel with :func:`match`.

    Raises:
        InvalidSubject: the pattern is invalid.
    """
    validate_pattern(pattern)
    return ".".join(
        "*" if token in ("*", ">") else _glob_escape(token) for token in pattern.split(".")
    )


__all__ = [
    "from_mqtt_filter",
    "from_mqtt_topic",
    "is_pattern",
    "match",
    "to_mqtt_filter",
    "to_mqtt_topic",
    "to_redis_glob",
    "validate_pattern",
    "validate_queue",
    "validate_subject",
]
