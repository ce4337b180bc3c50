"""The MMSEARCH_* environment: a config survives being handed to a child process, and text stays text."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsearch.config import child_environ, config_to_env, load_config
from mmsearch.errors import ConfigError


def test_config_to_env_round_trips_a_non_default_config():
    c = load_config(environ={}, overrides={
        "data_dir": "/tmp/mm data", "log_level": "DEBUG",
        "serving": {"http_port": 9000, "timeout_s": 2.5, "url": "remote:8001"},
        "retrieval": {"query_log": False, "max_body_mb": 0.5},
        "mongo": {"database": "0123"},  # looks like a number: must stay a string
        "consul": {"key": "yes"},  # looks like a YAML boolean: must stay a string
        "export": {"preferred_batch_sizes": [2, 4], "parity_min_cosine": 0.99},
        "preprocess": {"length_buckets": [8]},
    })
    env = config_to_env(c)
    assert all(k.startswith("MMSEARCH_") and isinstance(v, str) for k, v in env.items())
    back = load_config(environ=env)
    assert back == c
    assert back.mongo.database == "0123" and back.consul.key == "yes" and back.data_dir == Path("/tmp/mm data")


def test_defaults_round_trip_too():
    c = load_config(environ={})
    assert load_config(environ=config_to_env(c)) == c


@pytest.mark.parametrize("name, value, attr", [("MMSEARCH_MONGO_DATABASE", "true", ("mongo", "database")),
                                               ("MMSEARCH_WEB_RETRIEVAL_URL", "010", ("web", "retrieval_url")),
                                               ("MMSEARCH_MILVUS_URI", "[not, a, list]", ("milvus", "uri"))])
def test_text_fields_take_the_variable_verbatim(name, value, attr):
    c = load_config(environ={name: value})
    obj = c
    for a in attr:
        obj = getattr(obj, a)
    assert obj == value


@pytest.mark.parametrize("env, fragment", [({"MMSEARCH_SERVING": "x"}, "unknown environment variable MMSEARCH_SERVING "),
                                           ({"MMSEARCH_SERVING_HTTP_PORT": ""}, "serving.http_port"),
                                           ({"MMSEARCH_RETRIEVAL_QUERY_LOG": "maybe"}, "retrieval.query_log"),
                                           ({"MMSEARCH_LOG_LEVEL": "LOUD"}, "log_level")])
def test_bad_environment_names_the_variable_or_field(env, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(environ=env)
    assert fragment in e.value.message


def test_unrelated_environment_is_ignored():
    assert load_config(environ={"PATH": "/bin", "MMSEARCHX": "1", "HOME": "/"}) == load_config(environ={})


def test_a_child_environment_drops_the_parent_s_mmsearch_settings_and_carries_the_config():
    """A stale MMSEARCH_* of the parent (a URI of another stack, say) must not reach a child meant to load ``c``."""
    c = load_config(environ={}, overrides={"mongo": {"uri": "mongodb://a:1"}})
    env = child_environ(c, {"MMSEARCH_MILVUS_URI": "http://stale:1", "MMSEARCH_NOT_A_SETTING": "x", "PATH": "/bin"}, PYTHONPATH="/src")
    assert env["PATH"] == "/bin" and env["PYTHONPATH"] == "/src" and "MMSEARCH_NOT_A_SETTING" not in env
    assert load_config(environ=env) == c and env["MMSEARCH_MILVUS_URI"] == ""
