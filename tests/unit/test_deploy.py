"""deploy/ cannot run here (no Docker engine, no cluster): check it against the schemas the real tools
use, check every reference in it resolves, and check it agrees with the code's config.

- Kubernetes manifests: the Kubernetes JSON schemas bundled by kubernetes-validate (version pinned in
  K8S_VERSION, strict: unknown fields are errors); the MongoDBCommunity resource against the CRD
  schema of its operator chart (vendored in deploy/k8s/charts/crds/), closed like the API server's
  strict field validation.
- docker-compose.yml: the compose specification's JSON schema, as vendored by check-jsonschema.
- Helm charts: every release pins an exact chart version; the README's commands say the same.
All offline: the schemas ship inside the two packages.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import yaml

from mmsearch.config import _env_names, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CHARTS = K8S / "charts"
COMPOSE = DEPLOY / "docker-compose.yml"

# The Kubernetes version whose API schemas the manifests must satisfy. kubernetes-validate (pinned in
# constraints.txt) bundles the schemas of 1.25 to 1.37; raise this deliberately, not by upgrading.
K8S_VERSION = "1.33.0"

# Secrets no file in deploy/ defines, because they hold credentials: the operator of the cluster
# creates them (deploy/k8s/README.md says how; a test checks it names each one and its keys).
EXTERNAL_SECRETS: dict[str, set[str]] = {
    "mmsearch-mongo-password": {"password"},
    "mmsearch-api-keys": {"api-keys", "web"},
    "mmsearch-consul": {"token"},
}

# What the MongoDB operator writes for each user of a MongoDBCommunity resource (its docs,
# docs/mongodbcommunity/deploy-configure.md of mongodb/mongodb-kubernetes).
MONGO_CONNECTION_SECRET_KEYS = {"connectionString.standard", "connectionString.standardSrv", "username", "password"}

POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _k8s_docs() -> list[dict]:
    """The manifests `kubectl apply -f deploy/k8s/` applies (the folder, not charts/)."""
    return [d for f in sorted(K8S.glob("*.yaml")) for d in _docs(f)]


def _env_names_in(obj) -> set[str]:
    return set(re.findall(r"MMSEARCH_[A-Z0-9_]+", yaml.safe_dump(obj)))


# ---------------------------------------------------------------- schemas


def _close(schema):
    """An OpenAPI v3 schema of a CRD as JSON Schema, closed as the API server's strict field
    validation closes it: an object with `properties` and neither `additionalProperties` nor
    x-kubernetes-preserve-unknown-fields admits no other field; `nullable` admits null."""
    if isinstance(schema, list):
        return [_close(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _close(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.pop("x-kubernetes-int-or-string", False):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def _crd_validators() -> dict[tuple[str, str], jsonschema.Draft202012Validator]:
    """(apiVersion, kind) -> a validator for each CRD vendored under deploy/k8s/charts/crds/."""
    out = {}
    for f in sorted((CHARTS / "crds").glob("*.yaml")):
        for crd in _docs(f):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                schema = _close(v["schema"]["openAPIV3Schema"])
                schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server, not the CRD
                out[(f"{group}/{v['name']}", kind)] = jsonschema.Draft202012Validator(schema)
    return out


def _schema_errors(doc: dict) -> list[str]:
    """Every schema error of one manifest, as 'Kind/name: path: message'."""
    import kubernetes_validate

    where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    crd = _crd_validators().get((doc.get("apiVersion"), doc.get("kind")))
    if crd is not None:
        errors = [f"{where}: {e.json_path}: {e.message}" for e in crd.iter_errors(doc)]
        if doc.get("kind") == "MongoDBCommunity":  # the StatefulSet override is merged into the operator's StatefulSet
            override = (doc.get("spec") or {}).get("statefulSet", {}).get("spec", {})
            sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "override"},
                   "spec": {"selector": {"matchLabels": {"app": "override"}}, "serviceName": "override", **copy.deepcopy(override)}}
            errors += [f"{where} spec.statefulSet: {e}" for e in _schema_errors(sts)]
        return errors
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{where}: {'.'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{where}: no schema ({e.message}): add its CRD under deploy/k8s/charts/crds/"]
    return []


@functools.cache
def _compose_validator() -> jsonschema.Draft202012Validator:
    from check_jsonschema.builtin_schemas import get_builtin_schema

    schema = get_builtin_schema("vendor.compose-spec")
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _compose_schema_errors(compose: dict) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in _compose_validator().iter_errors(compose)]


def test_k8s_manifests_match_the_kubernetes_schemas():
    docs = _k8s_docs()
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "PersistentVolumeClaim", "Job",
                                          "MongoDBCommunity"}
    crds = [d for f in sorted((CHARTS / "crds").glob("*.yaml")) for d in _docs(f)]
    errors = [e for d in docs + crds for e in _schema_errors(d)]
    assert not errors, "\n".join(errors)

    # the checks bite: a broken copy of each kind of document fails
    retrieval = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "retrieval")
    typo = copy.deepcopy(retrieval)
    container = typo["spec"]["template"]["spec"]["containers"][0]
    container["volumeMount"] = container.pop("volumeMounts")
    assert any("volumeMount" in e for e in _schema_errors(typo))
    wrong_type = copy.deepcopy(retrieval)
    wrong_type["spec"]["replicas"] = "two"
    assert _schema_errors(wrong_type)
    mongo = next(d for d in docs if d["kind"] == "MongoDBCommunity")
    for breaking in ({"type": "Sharded"}, {"member": 3}, {"statefulSet": {"spec": {"volumeClaimTemplates": [{"spec": {"accessModes": "ReadWriteOnce"}}]}}}):
        broken = copy.deepcopy(mongo)
        broken["spec"].update(breaking)
        assert _schema_errors(broken), breaking


def test_compose_matches_the_compose_spec():
    compose = yaml.safe_load(COMPOSE.read_text())
    errors = _compose_schema_errors(compose)
    assert not errors, "\n".join(errors)
    broken = copy.deepcopy(compose)  # the check bites
    broken["services"]["retrieval"]["depends_on"]["milvus"]["condition"] = "service_ready"
    assert _compose_schema_errors(broken)
    broken = copy.deepcopy(compose)
    broken["services"]["retrieval"]["healthchek"] = broken["services"]["retrieval"].pop("healthcheck")
    assert any("healthchek" in e for e in _compose_schema_errors(broken))


# ---------------------------------------------------------------- references


def _helmfile() -> dict:
    return yaml.safe_load((CHARTS / "helmfile.yaml").read_text())


def _chart_services(helmfile: dict, docs: list[dict]) -> dict[str, set[int]]:
    """Service name -> ports, for the Services the pinned charts and the operator create. The rules
    are the charts' own templates (names from release names and values), so renaming a release or
    changing a values file moves them, and the references below then fail."""
    out: dict[str, set[int]] = {}
    for r in helmfile["releases"]:
        values: dict = {}
        for f in r.get("values", []):
            values.update(yaml.safe_load((CHARTS / f).read_text()) or {})
        chart, name = r["chart"].split("/")[1], r["name"]
        if chart == "milvus":  # templates/service.yaml: "milvus.fullname" (the release name when it contains "milvus")
            full = values.get("fullnameOverride") or (name if "milvus" in name else f"{name}-milvus")
            out[full] = {int((values.get("service") or {}).get("port", 19530))}
        elif chart == "consul":  # templates/server-service.yaml: "<consul.fullname>-server", HTTP 8500 (TLS off)
            full = (values.get("global") or {}).get("name") or f"{name}-consul"
            out[f"{full}-server"] = {8500, 8502, 8300, 8301, 8302, 8600}
    if any(r["chart"].split("/")[1] == "mongodb-kubernetes" for r in helmfile["releases"]):
        for d in docs:  # the operator's headless Service "<resource>-svc" and its pods "<resource>-<i>.<resource>-svc"
            if d["kind"] == "MongoDBCommunity":
                name = d["metadata"]["name"]
                out[f"{name}-svc"] = {27017}
                out.update({f"{name}-{i}.{name}-svc": {27017} for i in range(d["spec"].get("members", 0))})
    return out


def _operator_secrets(docs: list[dict]) -> dict[str, set[str]]:
    out = {}
    for d in docs:
        if d["kind"] == "MongoDBCommunity":
            for u in d["spec"].get("users", []):
                name = u.get("connectionStringSecretName") or f"{d['metadata']['name']}-{u.get('db', 'admin')}-{u['name']}"
                out[name] = set(MONGO_CONNECTION_SECRET_KEYS)
    return out


def _pod_specs(docs: list[dict]) -> Iterator[tuple[dict, dict]]:
    for d in docs:
        if d["kind"] in POD_OWNERS:
            yield d, d["spec"]["template"]
        elif d["kind"] == "Pod":
            yield d, d


def _host_port(value: str) -> tuple[str, int | None]:
    parts = urlsplit(value if "://" in value else f"tcp://{value}")
    return parts.hostname or "", parts.port


def _k8s_reference_problems(docs: list[dict], helmfile: dict) -> list[str]:
    """Every volume, claim, ConfigMap (and key), Secret (and key), Service (and port), HPA target and
    mounted path that a manifest names, that nothing defines."""
    problems: list[str] = []
    names = {kind: {d["metadata"]["name"]: d for d in docs if d["kind"] == kind} for kind in {d["kind"] for d in docs}}
    configmaps = {n: set(d.get("data") or {}) for n, d in names.get("ConfigMap", {}).items()}
    secrets = {n: set(d.get("data") or {}) | set(d.get("stringData") or {}) for n, d in names.get("Secret", {}).items()}
    secrets |= _operator_secrets(docs) | EXTERNAL_SECRETS
    services = {n: {p["port"] for p in d["spec"]["ports"]} for n, d in names.get("Service", {}).items()} | _chart_services(helmfile, docs)
    claims = set(names.get("PersistentVolumeClaim", {}))

    def need(kind: str, have: dict | set, name: str, key: str | None, where: str) -> None:
        if name not in have:
            problems.append(f"{where}: {kind} {name!r} is defined nowhere")
        elif key is not None and key not in have[name]:
            problems.append(f"{where}: {kind} {name!r} has no key {key!r}")

    def need_address(var: str, value: str, where: str, default_port: int | None = None) -> None:
        host, port = _host_port(value)
        port = port or default_port
        if host not in services:
            problems.append(f"{where}: {var}={value}: no Service {host!r}")
        elif port is not None and port not in services[host]:
            problems.append(f"{where}: {var}={value}: Service {host!r} has no port {port}")

    for owner, template in _pod_specs(docs):
        spec, where = template["spec"], f"{owner['kind']}/{owner['metadata']['name']}"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in claims:
                problems.append(f"{where}: PersistentVolumeClaim {v['persistentVolumeClaim']['claimName']!r} is defined nowhere")
            if "configMap" in v:
                need("ConfigMap", configmaps, v["configMap"]["name"], None, where)
            if "secret" in v:
                need("Secret", secrets, v["secret"]["secretName"], None, where)
        if spec.get("serviceAccountName"):
            need("ServiceAccount", set(names.get("ServiceAccount", {})), spec["serviceAccountName"], None, where)
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            env: dict[str, str] = {}
            for ref in c.get("envFrom", []):
                if "configMapRef" in ref:
                    need("ConfigMap", configmaps, ref["configMapRef"]["name"], None, where)
                    env |= (names.get("ConfigMap", {}).get(ref["configMapRef"]["name"]) or {}).get("data") or {}
                if "secretRef" in ref:
                    need("Secret", secrets, ref["secretRef"]["name"], None, where)
            for e in c.get("env", []):
                src = e.get("valueFrom") or {}
                if "configMapKeyRef" in src:
                    need("ConfigMap", configmaps, src["configMapKeyRef"]["name"], src["configMapKeyRef"]["key"], where)
                if "secretKeyRef" in src:
                    need("Secret", secrets, src["secretKeyRef"]["name"], src["secretKeyRef"]["key"], where)
                if "value" in e:
                    env[e["name"]] = e["value"]
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                if m["name"] not in volumes:
                    problems.append(f"{where}: container {c['name']} mounts volume {m['name']!r} that the pod does not define")
            # the addresses the services dial, and the paths they read, as the container sees them
            for var, default_port in (("MMSEARCH_MILVUS_URI", None), ("MMSEARCH_CONSUL_ADDR", 8500), ("MMSEARCH_SERVING_URL", None),
                                      ("MMSEARCH_WEB_RETRIEVAL_URL", None)):
                if env.get(var):
                    need_address(var, env[var], where, default_port)
            if env.get("MMSEARCH_MONGO_URI"):  # a literal URI (the operator's Secret is checked as a Secret)
                for host in urlsplit(env["MMSEARCH_MONGO_URI"]).netloc.rpartition("@")[2].split(","):
                    need_address("MMSEARCH_MONGO_URI", host, where, 27017)
            if env.get("MMSEARCH_PREPROCESS_HOST"):
                need_address("MMSEARCH_PREPROCESS_HOST", f"{env['MMSEARCH_PREPROCESS_HOST']}:{env.get('MMSEARCH_PREPROCESS_PORT', '60051')}", where)
            command = (c.get("args") or c.get("command") or [""])[0]
            used = {"serve-preprocess": ["MMSEARCH_MODEL_REPOSITORY"], "serve-retrieval": ["MMSEARCH_MODEL_REPOSITORY", "MMSEARCH_LEXICAL_ROOT"],
                    "serve-web": ["MMSEARCH_IMAGE_ROOT"]}.get(command, [])
            for var in used:
                if env.get(var) and env[var] not in mounts:
                    problems.append(f"{where}: {var}={env[var]} but container {c['name']} mounts nothing there")
            for arg in c.get("args", []):
                if arg.startswith("--model-repository=") and arg.split("=", 1)[1] not in mounts:
                    problems.append(f"{where}: {arg} but container {c['name']} mounts nothing there")

    pod_labels = [(o, t.get("metadata", {}).get("labels", {}), t["spec"]) for o, t in _pod_specs(docs)]
    for name, svc in names.get("Service", {}).items():
        selector = svc["spec"].get("selector") or {}
        targets = [(o, spec) for o, labels, spec in pod_labels if selector and selector.items() <= labels.items()]
        if not targets:
            problems.append(f"Service/{name}: selector {selector} matches no pod template")
        ports = {p["containerPort"] for _, spec in targets for c in spec["containers"] for p in c.get("ports", [])}
        for p in svc["spec"]["ports"]:
            if targets and isinstance(p.get("targetPort", p["port"]), int) and p.get("targetPort", p["port"]) not in ports:
                problems.append(f"Service/{name}: targetPort {p.get('targetPort', p['port'])} is no containerPort of its pods")
    for name, hpa in names.get("HorizontalPodAutoscaler", {}).items():
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["name"] not in names.get(ref["kind"], {}):
            problems.append(f"HorizontalPodAutoscaler/{name}: {ref['kind']} {ref['name']!r} is defined nowhere")
    for name, mdb in names.get("MongoDBCommunity", {}).items():
        for u in mdb["spec"].get("users", []):
            ref = u["passwordSecretRef"]
            need("Secret", secrets, ref["name"], ref.get("key", "password"), f"MongoDBCommunity/{name} user {u['name']}")
    return problems


def test_every_reference_in_the_k8s_manifests_is_defined():
    docs, helmfile = _k8s_docs(), _helmfile()
    problems = _k8s_reference_problems(docs, helmfile)
    assert not problems, "\n".join(problems)

    readme = (K8S / "README.md").read_text()  # the secrets no file defines are documented, with their keys
    for name, keys in EXTERNAL_SECRETS.items():
        assert f"`{name}`" in readme and all(f"`{k}`" in readme for k in keys), name
    for name in _chart_services(helmfile, docs):
        if "." not in name:
            assert f"`{name}`" in readme, f"the README's chart table does not name Service {name}"

    # the check bites: a claim, a config value and a chart release each broken
    no_images = [d for d in docs if not (d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "images")]
    assert any("'images'" in p for p in _k8s_reference_problems(no_images, helmfile))
    wrong_addr = copy.deepcopy(docs)
    next(d for d in wrong_addr if d["kind"] == "ConfigMap")["data"]["MMSEARCH_CONSUL_ADDR"] = "consul:8500"
    assert any("MMSEARCH_CONSUL_ADDR" in p for p in _k8s_reference_problems(wrong_addr, helmfile))
    renamed = copy.deepcopy(helmfile)
    next(r for r in renamed["releases"] if r["chart"].endswith("/milvus"))["name"] = "vectors"
    assert any("MMSEARCH_MILVUS_URI" in p for p in _k8s_reference_problems(docs, renamed))
    unmounted = copy.deepcopy(docs)
    web = next(d for d in unmounted if d["kind"] == "Deployment" and d["metadata"]["name"] == "web")
    web["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = []
    assert any("MMSEARCH_IMAGE_ROOT" in p for p in _k8s_reference_problems(unmounted, helmfile))


def _compose_problems(compose: dict) -> list[str]:
    """References in the compose file that resolve to nothing, or to the wrong place."""
    problems: list[str] = []
    services = compose["services"]
    named = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):  # a bind mount: compose resolves it against deploy/ (the file's folder)
                path = (DEPLOY / source).resolve()
                if not path.is_relative_to(ROOT):
                    problems.append(f"{name}: bind mount {source} leaves the repository")
                elif path.is_relative_to(DEPLOY) and not path.exists():
                    problems.append(f"{name}: bind mount {source} resolves to {path.relative_to(ROOT)}, which does not exist")
            elif source not in named:
                problems.append(f"{name}: named volume {source!r} is not declared under volumes:")
        depends = svc.get("depends_on") or {}
        for dep, cond in (depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)):
            condition = cond.get("condition", "service_started")
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep!r}")
            elif condition == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
            elif condition == "service_completed_successfully" and services[dep].get("restart", "no") != "no":
                problems.append(f"{name}: waits for {dep} to complete, but {dep} restarts ({services[dep]['restart']})")
    env = compose["x-mmsearch-env"]
    for var in ("MMSEARCH_MILVUS_URI", "MMSEARCH_CONSUL_ADDR", "MMSEARCH_SERVING_URL"):
        host, _ = _host_port(env[var])
        if host not in services:
            problems.append(f"{var}={env[var]}: no service {host!r}")
    return problems


def test_compose_references_paths_and_start_order():
    compose = yaml.safe_load(COMPOSE.read_text())
    problems = _compose_problems(compose)
    assert not problems, "\n".join(problems)
    services, cfg = compose["services"], load_config(environ={})

    # the model repository is where `mmsearch export` writes it (the repository root's model_repository/)
    for svc in ("triton", "preprocess"):
        sources = {(DEPLOY / v.split(":")[0]).resolve() for v in services[svc]["volumes"]}
        assert (ROOT / cfg.model_repository).resolve() in sources, svc

    # MongoDB: the one-shot init initiates exactly the replica set the URI names, over its members
    uri = urlsplit(compose["x-mmsearch-env"]["MMSEARCH_MONGO_URI"])
    replica_set = dict(p.split("=") for p in uri.query.split("&"))["replicaSet"]
    hosts = uri.netloc.split(",")
    script = services["mongo-init"]["command"][-1]
    assert f'_id: "{replica_set}"' in script and "rs.initiate" in script and "NotYetInitialized" in script  # idempotent
    assert sorted(re.findall(r'host: "([^"]+)"', script)) == sorted(hosts)
    for host in hosts:
        assert services[host.split(":")[0]]["command"][services[host.split(":")[0]]["command"].index("--replSet") + 1] == replica_set

    # Consul: the one-shot seed pushes the experiments file of deploy/ (validated by `experiments push`)
    seed = services["experiments-seed"]
    assert seed["command"][:2] == ["experiments", "push"]
    mounts = {v.split(":")[1]: (DEPLOY / v.split(":")[0]).resolve() for v in seed["volumes"]}
    assert mounts[seed["command"][2]] == (DEPLOY / "experiments.yaml").resolve()
    assert seed["environment"]["MMSEARCH_CONSUL_ADDR"] == compose["x-mmsearch-env"]["MMSEARCH_CONSUL_ADDR"]

    # start order: retrieval only after the replica set and the experiments key exist
    deps = services["retrieval"]["depends_on"]
    assert deps["mongo-init"]["condition"] == deps["experiments-seed"]["condition"] == "service_completed_successfully"
    assert {deps[s]["condition"] for s in ("milvus", "triton", "preprocess")} == {"service_healthy"}
    assert services["web"]["depends_on"]["retrieval"]["condition"] == "service_healthy"

    # the check bites: the old ./model_repository (under deploy/) and an undeclared volume are found
    broken = copy.deepcopy(compose)
    broken["services"]["triton"]["volumes"] = ["./model_repository:/models:ro"]
    broken["services"]["consul"]["volumes"] = ["consul-data:/consul/data"]
    found = _compose_problems(broken)
    assert any("deploy/model_repository" in p for p in found) and any("consul-data" in p for p in found)


# ---------------------------------------------------------------- charts


def _helm_pin_problems(helmfile: dict, readme: str) -> list[str]:
    problems = []
    repos = {r["name"]: r["url"] for r in helmfile.get("repositories", [])}
    commands = set(re.findall(r"helm upgrade --install (\S+) (\S+) --version (\S+) -n (\S+) --create-namespace -f (\S+)", readme))
    for r in helmfile["releases"]:
        version = str(r.get("version", ""))
        if not re.fullmatch(r"\d+\.\d+\.\d+", version):
            problems.append(f"release {r['name']}: chart version {version!r} is not an exact version")
        if r["chart"].split("/")[0] not in repos:
            problems.append(f"release {r['name']}: repository of {r['chart']} is not listed")
        for f in r.get("values", []):
            if not isinstance(yaml.safe_load((CHARTS / f).read_text()), dict):
                problems.append(f"release {r['name']}: values file {f} is not a mapping")
        expected = tuple(str(x) for x in (r["name"], r["chart"], version, r["namespace"], *(f"deploy/k8s/charts/{f}" for f in r.get("values", []))))
        if expected not in commands:
            problems.append(f"release {r['name']}: README has no `helm upgrade --install {' '.join(expected)}`")
    for name, url in repos.items():
        if f"helm repo add {name} {url}" not in readme:
            problems.append(f"README has no `helm repo add {name} {url}`")
    return problems


def test_helm_charts_are_the_maintained_ones_and_pinned():
    helmfile, readme = _helmfile(), (K8S / "README.md").read_text()
    assert _helm_pin_problems(helmfile, readme) == []
    repos = {r["name"]: r["url"] for r in helmfile["repositories"]}
    assert repos == {"zilliztech": "https://zilliztech.github.io/milvus-helm", "hashicorp": "https://helm.releases.hashicorp.com",
                     "mongodb": "https://mongodb.github.io/helm-charts"}
    charts = {r["chart"] for r in helmfile["releases"]}
    assert charts == {"zilliztech/milvus", "hashicorp/consul", "mongodb/mongodb-kubernetes"}
    assert {f.name for f in CHARTS.glob("*.values.yaml")} == {f for r in helmfile["releases"] for f in r["values"]}  # none unused
    assert {r["namespace"] for r in helmfile["releases"]} == {"mmsearch"}  # beside the manifests: short Service names resolve
    milvus = yaml.safe_load((CHARTS / "milvus.values.yaml").read_text())
    assert milvus["cluster"]["enabled"] is True and re.fullmatch(r"v\d+\.\d+\.\d+", milvus["image"]["all"]["tag"])
    consul = yaml.safe_load((CHARTS / "consul.values.yaml").read_text())
    assert consul["server"]["replicas"] >= 3 and re.fullmatch(r"hashicorp/consul:\d+\.\d+\.\d+", consul["global"]["image"])
    mongo = next(d for d in _k8s_docs() if d["kind"] == "MongoDBCommunity")
    assert mongo["spec"]["type"] == "ReplicaSet" and mongo["spec"]["members"] >= 3 and re.fullmatch(r"\d+\.\d+\.\d+", mongo["spec"]["version"])

    # the check bites: a floating or missing version, and a README out of step, are reported
    for version in ("~5.0", None):
        broken = copy.deepcopy(helmfile)
        broken["releases"][0]["version"] = version
        assert any("not an exact version" in p for p in _helm_pin_problems(broken, readme))
    assert any("README has no" in p for p in _helm_pin_problems(helmfile, readme.replace("--version 1.9.11", "--version 1.9.10")))


# ---------------------------------------------------------------- agreement with the code


def test_compose_parses_and_uses_known_env_and_ports():
    from mmsearch.cli import COMMANDS

    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"milvus", "etcd", "minio", "mongo1", "mongo-init", "consul", "experiments-seed", "triton", "preprocess", "retrieval", "web"} <= set(services)
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
    for svc in ("preprocess", "retrieval", "web", "experiments-seed"):  # commands are real subcommands
        assert services[svc]["command"][0] in COMMANDS


def test_k8s_manifests_probes_ports_and_hpa():
    from mmsearch.cli import COMMANDS

    cfg = load_config(environ={})
    kinds: dict[str, list] = {}
    for d in _k8s_docs():
        kinds.setdefault(d["kind"], []).append(d)
        unknown = _env_names_in(d) - set(_env_names())
        assert not unknown, f"{d['kind']}/{d['metadata']['name']}: {unknown}"
    deployments = {d["metadata"]["name"]: d for d in kinds["Deployment"]}
    assert {"preprocess", "retrieval", "web", "triton", "toolbox"} <= set(deployments)
    assert {h["spec"]["scaleTargetRef"]["name"] for h in kinds["HorizontalPodAutoscaler"]} == {"preprocess", "retrieval", "web"}
    expected_ports = {"preprocess": {cfg.preprocess.port, cfg.preprocess.metrics_port}, "retrieval": {cfg.retrieval.http_port, cfg.retrieval.grpc_port},
                      "web": {cfg.web.port}, "triton": {cfg.serving.http_port, cfg.serving.grpc_port, cfg.serving.metrics_port}}
    for name, ports in expected_ports.items():
        c = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert {p["containerPort"] for p in c["ports"]} == ports
        assert c["resources"]["requests"] and c["livenessProbe"] and c["readinessProbe"]
        if name != "triton":
            assert c["args"][0] in COMMANDS
    assert deployments["retrieval"]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in deployments["retrieval"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MMSEARCH_RETRIEVAL_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "mmsearch-api-keys"  # keys required, from a Secret
    assert env["MMSEARCH_MONGO_URI"]["valueFrom"]["secretKeyRef"]["key"] == "connectionString.standard"  # the operator's URI, with the password
    services = {s["metadata"]["name"] for s in kinds["Service"]}
    assert {"preprocess", "retrieval", "web", "triton"} <= services
    cm = kinds["ConfigMap"][0]["data"]
    load_config(environ=cm)  # the ConfigMap is a valid config
    seed = kinds["Job"][0]["spec"]["template"]["spec"]["containers"][0]  # the Job seeds Consul with the file the image carries
    assert seed["args"][:2] == ["experiments", "push"] and seed["args"][2] == "/app/deploy/experiments.yaml"
    assert "COPY deploy/experiments.yaml deploy/experiments.yaml" in (DEPLOY / "Dockerfile").read_text()
    assert "WORKDIR /app" in (DEPLOY / "Dockerfile").read_text()


def test_dockerfile_copies_what_exists():
    text = (DEPLOY / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE) for s in line.split()[:-1]]
    assert "mmsearch" in sources
    kept = {line[1:] for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")}
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
        assert src in kept, f"Dockerfile copies {src}, which Dockerfile.dockerignore leaves out of the build context"


def test_probe_endpoints_exist_in_the_apps():
    from mmsearch.config import load_config as lc
    from mmsearch.retrieval_service.http_app import create_app as retrieval_app
    from mmsearch.web_ui.app import create_app as web_app

    class _Svc:  # only the url map is inspected
        config = lc(environ={})
        documents = None

    app = retrieval_app(_Svc())
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert {"/healthz", "/readyz", "/metrics", "/v1/config", "/v1/click"} <= rules
    assert app.test_client().get("/v1/search").status_code == 405  # served before Flask's URL map: there, not 404
    assert {"/healthz", "/readyz", "/metrics"} <= {r.rule for r in web_app(lc(environ={})).url_map.iter_rules()}


def test_default_experiments_file_is_valid():
    from mmsearch.experiments.spec import parse_experiments

    exp = parse_experiments((ROOT / load_config(environ={}).experiments_file).read_text())
    arms = [a.name for a in exp.scenes["text2image"].layers[0].arms]
    assert arms == ["base", "finetuned"]
