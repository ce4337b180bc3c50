"""deploy/ cannot run here (no Docker engine): check it parses and agrees with the code's config."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from mmsearch.config import _env_names, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _env_names_in(obj) -> set[str]:
    return set(re.findall(r"MMSEARCH_[A-Z0-9_]+", yaml.safe_dump(obj)))


def test_compose_parses_and_uses_known_env_and_ports():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"milvus", "etcd", "minio", "mongo1", "consul", "triton", "preprocess", "retrieval", "web"} <= set(services)
    unknown = _env_names_in(compose) - set(_env_names())
    assert not unknown, f"env names the config does not know: {unknown}"
    cfg = load_config(environ={})
    assert f"{cfg.retrieval.http_port}:{cfg.retrieval.http_port}" in services["retrieval"]["ports"]
    assert f"{cfg.retrieval.grpc_port}:{cfg.retrieval.grpc_port}" in services["retrieval"]["ports"]
    assert f"{cfg.web.port}:{cfg.web.port}" in services["web"]["ports"]
    assert f"{cfg.preprocess.port}:{cfg.preprocess.port}" in services["preprocess"]["ports"]
    assert {f"{p}:{p}" for p in (cfg.serving.http_port, cfg.serving.grpc_port, cfg.serving.metrics_port)} <= set(services["triton"]["ports"])
    env = load_config(environ={k: str(v) for k, v in compose["x-mmsearch-env"].items()})  # the shared env is a valid config
    assert env.milvus.uri.startswith("http://milvus") and env.serving.url == "triton:8001"
    for svc in ("preprocess", "retrieval", "web"):  # commands are real subcommands
        from mmsearch.cli import COMMANDS

        assert services[svc]["command"][0] in COMMANDS


def test_k8s_manifests_probes_ports_and_hpa():
    from mmsearch.cli import COMMANDS

    cfg = load_config(environ={})
    kinds: dict[str, list] = {}
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for d in _docs(f):
            kinds.setdefault(d["kind"], []).append(d)
            unknown = _env_names_in(d) - set(_env_names())
            assert not unknown, f"{f.name}: {unknown}"
    deployments = {d["metadata"]["name"]: d for d in kinds["Deployment"]}
    assert {"preprocess", "retrieval", "web", "triton"} <= set(deployments)
    assert {h["spec"]["scaleTargetRef"]["name"] for h in kinds["HorizontalPodAutoscaler"]} == {"preprocess", "retrieval", "web"}
    expected_ports = {"preprocess": {cfg.preprocess.port, cfg.preprocess.metrics_port}, "retrieval": {cfg.retrieval.http_port, cfg.retrieval.grpc_port},
                      "web": {cfg.web.port}, "triton": {cfg.serving.http_port, cfg.serving.grpc_port, cfg.serving.metrics_port}}
    for name, d in deployments.items():
        c = d["spec"]["template"]["spec"]["containers"][0]
        assert {p["containerPort"] for p in c["ports"]} == expected_ports[name]
        assert c["resources"]["requests"] and c["livenessProbe"] and c["readinessProbe"]
        if name != "triton":
            assert c["args"][0] in COMMANDS
    assert deployments["retrieval"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in deployments["retrieval"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MMSEARCH_RETRIEVAL_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "mmsearch-api-keys"  # keys required, from a Secret
    services = {s["metadata"]["name"] for s in kinds["Service"]}
    assert {"preprocess", "retrieval", "web", "triton"} <= services
    cm = kinds["ConfigMap"][0]["data"]
    load_config(environ=cm)  # the ConfigMap is a valid config


def test_probe_endpoints_exist_in_the_apps():
    from mmsearch.config import load_config as lc
    from mmsearch.retrieval_service.http_app import create_app as retrieval_app
    from mmsearch.web_ui.app import create_app as web_app

    class _Svc:  # only the url map is inspected
        config = lc(environ={})

    rules = {r.rule for r in retrieval_app(_Svc()).url_map.iter_rules()}
    assert {"/healthz", "/readyz", "/metrics", "/v1/search", "/v1/config", "/v1/click"} <= rules
    assert {"/healthz", "/readyz", "/metrics"} <= {r.rule for r in web_app(lc(environ={})).url_map.iter_rules()}


def test_default_experiments_file_is_valid():
    from mmsearch.experiments import parse_experiments

    exp = parse_experiments((ROOT / load_config(environ={}).experiments_file).read_text())
    arms = [a.name for a in exp.scenes["text2image"].layers[0].arms]
    assert arms == ["base", "finetuned"]
