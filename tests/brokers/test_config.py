"""BrokerConfig from URLs and config mappings: good values, and loud errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.brokers import BrokerConfig, brokers_from_mapping
from sandbox.errors import ConfigError


def test_a_config_file_names_several_brokers(tmp_path: Path) -> None:
    brokers = brokers_from_mapping(
        {
            "internal": "memory://",
            "public": {
                "url": ["nats://10.0.0.5:4222", "nats://10.0.0.6:4222"],
                "token": "s3cret",
                "tls": {"ca": "ca.pem", "cert": "/etc/stack/client.pem", "key": "client.key"},
                "reconnect_wait": 1,
            },
            "events": {"url": "mqtts://broker:8883", "client_id": "stack-1", "keepalive": 30},
            "cache": {"url": "redis://cache:6379/2", "user": "stack", "password": "pw"},
        },
        source="stack.yaml",
        base=tmp_path,
    )
    assert sorted(brokers) == ["cache", "events", "internal", "public"]
    public = brokers["public"]
    assert public.name == "public"
    assert public.kind == "nats"
    assert public.tls
    assert public.urls == ("nats://10.0.0.5:4222", "nats://10.0.0.6:4222")
    assert public.tls_ca == tmp_path / "ca.pem"
    assert public.tls_cert == Path("/etc/stack/client.pem")
    assert public.tls_key == tmp_path / "client.key"
    assert public.reconnect_wait == 1
    assert brokers["internal"].kind == "memory"
    assert brokers["events"].kind == "mqtt"
    assert brokers["events"].tls
    assert brokers["events"].keepalive == 30
    assert brokers["cache"].kind == "redis"
    assert not brokers["cache"].tls


def test_secrets_stay_out_of_repr_and_safe_url() -> None:
    config = BrokerConfig(url="nats://tok3n@host:4222", token="s3cret")
    assert "s3cret" not in repr(config)
    assert "tok3n" not in config.safe_url
    assert config.safe_url == "nats://***@host:4222"
    redis = BrokerConfig(url="redis://user:pw@host:6379", password="pw2")
    assert "pw" not in redis.safe_url
    assert "pw2" not in repr(redis)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"url": "nats://h", "tokn": "x"}, "unknown key\\(s\\) tokn; known keys: client_id"),
        ({"url": "nats://h", "tls": {"ca": "a", "crt": "b"}}, "unknown tls key\\(s\\) crt"),
        ({"token": "x"}, "'url' is missing"),
        ({"url": "amqp://h"}, "unknown URL scheme in 'amqp://h'; use one of memory://"),
        ({"url": "redis://a,redis://b"}, "only NATS takes several server URLs"),
        ({"url": "nats://a,redis://b"}, "all URLs must be of one kind"),
        ({"url": "redis://h", "token": "x"}, "'token' is for NATS"),
        ({"url": "nats://h", "token": "x", "user": "u"}, "either 'token' or 'user'"),
        ({"url": "mqtt://h", "credentials": "x.creds"}, "'credentials'.*NATS only"),
        ({"url": "nats://h", "client_id": "c"}, "'client_id' is for MQTT only"),
        ({"url": "nats://h", "tls": {"key": "k.pem"}}, "'tls.key' needs 'tls.cert'"),
        ({"url": "nats://h", "keepalive": 0}, "'keepalive' must be positive"),
        ({"url": "nats://h", "reconnect_wait": "soon"}, "'reconnect_wait' must be a number"),
        ({"url": "memory://", "user": "u"}, "memory:// broker takes no TLS"),
        ({"url": 42}, "'url' must be a string"),
        ({"url": "nats://h", "tls": "yes"}, "'tls' must be a mapping"),
        ({"url": "nats://h", "user": ["a"]}, "'user' must be a string"),
    ],
)
def test_bad_entries_are_rejected_loudly(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        BrokerConfig.from_mapping(data, name="public", source="stack.yaml")
    assert caught.value.message.startswith("stack.yaml: broker 'public'")


def test_the_brokers_section_must_be_a_mapping() -> None:
    assert brokers_from_mapping(None) == {}
    with pytest.raises(ConfigError, match="'brokers' must map names"):
        brokers_from_mapping(["nats://h"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="expected a URL or a mapping"):
        brokers_from_mapping({"x": 3})


def test_a_bare_url_is_a_config() -> None:
    config = BrokerConfig.from_mapping("tls://h:4443", name="secure")
    assert (config.kind, config.tls, config.name) == ("nats", True, "secure")
    assert BrokerConfig(url="memory://bus").kind == "memory"
