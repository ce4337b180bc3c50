from pathlib import Path

import pytest

from mmsearch.config import load_config
from mmsearch.errors import ConfigError


def test_defaults_match_design_ports():
    c = load_config(environ={})
    assert (c.serving.http_port, c.serving.grpc_port, c.serving.metrics_port) == (8000, 8001, 8002)
    assert c.preprocess.port == 60051 and c.retrieval.http_port == 8080 and c.retrieval.grpc_port == 50051
    assert c.web.port == 8090 and c.serving.host == "127.0.0.1"


def test_yaml_then_environment_then_overrides(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("milvus: {uri: http://yaml:19530}\nserving: {http_port: 9000, grpc_port: 9001}\n")
    env = {"MMSEARCH_SERVING_HTTP_PORT": "9100", "MMSEARCH_EXPORT_PREFERRED_BATCH_SIZES": "[4, 8]"}
    c = load_config(f, environ=env, overrides={"serving": {"grpc_port": 9201}})
    assert c.milvus.uri == "http://yaml:19530"
    assert c.serving.http_port == 9100  # env beats YAML, and is converted to int
    assert c.serving.grpc_port == 9201  # overrides beat both
    assert c.export.preferred_batch_sizes == [4, 8]


def test_config_file_named_by_environment(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("mongo: {database: other}\n")
    assert load_config(environ={"MMSEARCH_CONFIG": str(f)}).mongo.database == "other"


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"MMSEARCH_MILVUS_URL": "x"}, "unknown environment variable MMSEARCH_MILVUS_URL"),
        ({"MMSEARCH_SERVING_HTTP_PORT": "eighty"}, "serving.http_port"),
        ({"MMSEARCH_SERVING_HTTP_PORT": "70000"}, "serving.http_port"),
        ({"MMSEARCH_EXPORT_PARITY_MIN_COSINE": "2"}, "export.parity_min_cosine"),
    ],
)
def test_bad_environment_is_named(env, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(environ=env)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("serving: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("servng: {http_port: 1}\n", "servng"),
        ("serving: {http_prot: 1}\n", "serving.http_prot"),
    ],
)
def test_bad_yaml_is_named(tmp_path: Path, text, fragment):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(f, environ={})


def test_missing_and_binary_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    f = tmp_path / "bin.yaml"
    f.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="cannot read|not valid YAML"):
        load_config(f, environ={})


def test_empty_yaml_file_is_defaults(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("")
    assert load_config(f, environ={}) == load_config(environ={})


def test_flag_overrides_keep_only_given_flags_and_nest_them():
    from mmsearch.config import flag_overrides

    o = flag_overrides({"model_repository": "r", "milvus.uri": "", "mongo.uri": None, "serving.http_port": 9000,
                        "serving.host": "0.0.0.0"})
    assert o == {"model_repository": "r", "milvus": {"uri": ""}, "serving": {"http_port": 9000, "host": "0.0.0.0"}}
    c = load_config(environ={"MMSEARCH_SERVING_GRPC_PORT": "9001"}, overrides=o)
    assert (c.serving.http_port, c.serving.grpc_port, c.model_repository) == (9000, 9001, Path("r"))


def test_split_address():
    from mmsearch.config import split_address
    from mmsearch.errors import BadInput

    assert split_address("127.0.0.1:0", "--address") == ("127.0.0.1", 0)
    assert split_address("[::1]:8090", "--address") == ("[::1]", 8090)
    for bad in ("8090", ":8090", "host:", "host:http", "host:70000"):
        with pytest.raises(BadInput, match="--address must be host:port"):
            split_address(bad, "--address")
