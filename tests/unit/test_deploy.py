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
BASE = K8S / "base"
CHARTS = K8S / "charts"
SIZES = ("small", "production")  # deploy/k8s/<size>: kustomize overlays; deploy/k8s/charts/<size>: the charts' values
COMPOSE = DEPLOY / "docker-compose.yml"

# The Kubernetes version whose API schemas the manifests must satisfy. kubernetes-validate (pinned in
# constraints.txt) bundles the schemas of 1.25 to 1.37; raise this deliberately, not by upgrading.
K8S_VERSION = "1.33.0"

# Secrets no file in deploy/ defines, because they hold credentials: the operator of the cluster
# creates them (deploy/k8s/README.md says how; a test checks it names each one and its keys).
EXTERNAL_SECRETS: dict[str, set[str]] = {
    "mmsearch-mongo-password": {"password"},
    "mmsearch-api-keys": {"api-keys", "web", "write-api-keys"},
    "mmsearch-consul": {"token"},
}

# What the MongoDB operator writes for each user of a MongoDBCommunity resource (its docs,
# docs/mongodbcommunity/deploy-configure.md of mongodb/mongodb-kubernetes).
MONGO_CONNECTION_SECRET_KEYS = {"connectionString.standard", "connectionString.standardSrv", "username", "password"}

POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _json_patch(doc: dict, ops: list[dict]) -> None:
    """RFC 6902 add / replace / remove, what the overlays use (kustomize's patches with a target)."""
    for op in ops:
        keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].lstrip("/").split("/")]
        parent = doc
        for k in keys[:-1]:
            parent = parent[int(k)] if isinstance(parent, list) else parent[k]
        last: str | int = int(keys[-1]) if isinstance(parent, list) and keys[-1] != "-" else keys[-1]
        if op["op"] == "remove":
            del parent[last]
        elif op["op"] == "replace":
            if isinstance(parent, dict) and last not in parent:
                raise KeyError(f"replace {op['path']}: no such member")
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        else:
            raise ValueError(f"op {op['op']} not supported by this renderer")


def _kustomize(folder: Path) -> list[dict]:
    """What `kubectl apply -k folder` applies, for the kustomization features deploy/k8s uses (resources,
    namespace, images, replicas, JSON6902 patches with a kind/name target); anything else fails loudly."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "namespace", "images", "replicas", "patches"}
    assert set(k) <= known, f"{folder}: kustomization fields this renderer does not know: {set(k) - known}"
    docs: list[dict] = []
    for r in k.get("resources", []):
        path = (folder / r).resolve()
        docs += _kustomize(path) if path.is_dir() else _docs(path)
    for d in docs:
        if k.get("namespace"):
            d.setdefault("metadata", {})["namespace"] = k["namespace"]
    for img in k.get("images", []):
        for _, template in _pod_specs(docs):
            for c in template["spec"].get("containers", []) + template["spec"].get("initContainers", []):
                if c["image"].split(":")[0] == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    for rep in k.get("replicas", []):
        targets = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == rep["name"]]
        assert targets, f"{folder}: replicas for {rep['name']}, which no resource is"
        for d in targets:
            d["spec"]["replicas"] = rep["count"]
    for patch in k.get("patches", []):
        target = patch["target"]
        assert set(target) <= {"kind", "name"}, target
        hits = [d for d in docs if d["kind"] == target["kind"] and target.get("name", d["metadata"]["name"]) == d["metadata"]["name"]]
        assert hits, f"{folder}: patch target {target} matches nothing"
        for d in hits:
            _json_patch(d, yaml.safe_load(patch["patch"]))
    return docs


def _k8s_docs(size: str = "production") -> list[dict]:
    """The manifests `kubectl apply -k deploy/k8s/<size>` applies."""
    return _kustomize(K8S / size)


def _env_names_in(obj) -> set[str]:
    """MMSEARCH_* names a file passes to the services (compose's own ${VARIABLES} of the host's shell are not config)."""
    text = yaml.safe_dump(obj)
    passed = set(re.findall(r"(?<!\$\{)MMSEARCH_[A-Z0-9_]+", text))
    return passed - (COMPOSE_VARIABLES - set(re.findall(r"(MMSEARCH_[A-Z0-9_]+):", text)))


# ${...} variables compose reads from the host's shell (not the services' config): the one image's name
# and where the search API listens on the host.
COMPOSE_VARIABLES = {"MMSEARCH_IMAGE", "MMSEARCH_API_BIND"}


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
    crds = [d for f in sorted((CHARTS / "crds").glob("*.yaml")) for d in _docs(f)]
    for size in SIZES:
        docs = _k8s_docs(size)
        assert {d["kind"] for d in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "PersistentVolumeClaim", "Job",
                                              "MongoDBCommunity", "PodDisruptionBudget", "NetworkPolicy", "Ingress"}
        errors = [e for d in docs + crds for e in _schema_errors(d)]
        assert not errors, size + ":\n" + "\n".join(errors)
    docs = _k8s_docs()

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


def _helmfile(size: str = "production") -> dict:
    """helmfile.yaml.gotmpl as `helmfile -e <size>` reads it (its one template expression is the environment's
    name; the environments are its first document)."""
    text = (CHARTS / "helmfile.yaml.gotmpl").read_text()
    envs, body = list(yaml.safe_load_all(text.replace("{{ .Environment.Name }}", size)))
    assert set(envs["environments"]) == set(SIZES)
    assert "{{" not in yaml.safe_dump(body)
    return body


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
    for size in SIZES:
        problems = _k8s_reference_problems(_k8s_docs(size), _helmfile(size))
        assert not problems, size + ":\n" + "\n".join(problems)
    docs, helmfile = _k8s_docs(), _helmfile()

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
    for svc in ("triton", "triton-gpu", "preprocess", "toolbox"):
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
    assert {deps[s]["condition"] for s in ("milvus", "triton", "triton-gpu", "preprocess")} == {"service_healthy"}
    assert services["web"]["depends_on"]["retrieval"]["condition"] == "service_healthy"

    # the check bites: the old ./model_repository (under deploy/) and an undeclared volume are found
    broken = copy.deepcopy(compose)
    broken["services"]["triton"]["volumes"] = ["./model_repository:/models:ro"]
    broken["services"]["consul"]["volumes"] = ["consul-data:/consul/data"]
    found = _compose_problems(broken)
    assert any("deploy/model_repository" in p for p in found) and any("consul-data" in p for p in found)


# ---------------------------------------------------------------- charts


def _helm_pin_problems(helmfile: dict, readme: str, size: str = "production") -> list[str]:
    """``helmfile`` as rendered for ``size``; the README's commands name the values files as $SIZE/..."""
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
        in_readme = [f"deploy/k8s/charts/{'$SIZE/' + f[len(size) + 1:] if f.startswith(size + '/') else f}" for f in r.get("values", [])]
        expected = tuple(str(x) for x in (r["name"], r["chart"], version, r["namespace"], *in_readme))
        if expected not in commands:
            problems.append(f"release {r['name']}: README has no `helm upgrade --install {' '.join(expected)}`")
    for name, url in repos.items():
        if f"helm repo add {name} {url}" not in readme:
            problems.append(f"README has no `helm repo add {name} {url}`")
    return problems


def test_helm_charts_are_the_maintained_ones_and_pinned():
    helmfile, readme = _helmfile(), (K8S / "README.md").read_text()
    for size in SIZES:
        assert _helm_pin_problems(_helmfile(size), readme, size) == [], size
    repos = {r["name"]: r["url"] for r in helmfile["repositories"]}
    assert repos == {"zilliztech": "https://zilliztech.github.io/milvus-helm", "hashicorp": "https://helm.releases.hashicorp.com",
                     "mongodb": "https://mongodb.github.io/helm-charts"}
    charts = {r["chart"] for r in helmfile["releases"]}
    assert charts == {"zilliztech/milvus", "hashicorp/consul", "mongodb/mongodb-kubernetes"}
    used = {f for size in SIZES for r in _helmfile(size)["releases"] for f in r["values"]}
    assert {str(f.relative_to(CHARTS)) for f in CHARTS.rglob("*.values.yaml")} == used  # none unused
    assert {r["namespace"] for r in helmfile["releases"]} == {"mmsearch"}  # beside the manifests: short Service names resolve
    for size in SIZES:
        milvus = yaml.safe_load((CHARTS / size / "milvus.values.yaml").read_text())
        assert milvus["image"]["all"]["tag"] == "v2.6.15"
        consul = yaml.safe_load((CHARTS / size / "consul.values.yaml").read_text())
        assert re.fullmatch(r"hashicorp/consul:\d+\.\d+\.\d+", consul["global"]["image"])
        mongo = next(d for d in _k8s_docs(size) if d["kind"] == "MongoDBCommunity")
        assert mongo["spec"]["type"] == "ReplicaSet" and re.fullmatch(r"\d+\.\d+\.\d+", mongo["spec"]["version"])

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
    api = "${MMSEARCH_API_BIND:-127.0.0.1}"  # the search API: this host only unless asked
    # the search API's HTTP is the admission gate's; it forwards to retrieval's own HTTP, which is not published
    assert services["gate"]["ports"] == [f"{api}:{cfg.retrieval.http_port}:{cfg.retrieval.http_port}"]
    assert services["retrieval"]["ports"] == [f"{api}:{cfg.retrieval.grpc_port}:{cfg.retrieval.grpc_port}"]
    own = services["retrieval"]["command"][services["retrieval"]["command"].index("--http") + 1]
    gate = services["gate"]["command"]
    assert gate[0] == "serve-gate" and gate[gate.index("--listen") + 1] == f"0.0.0.0:{cfg.retrieval.http_port}"
    assert gate[gate.index("--upstream") + 1] == f"http://retrieval:{own.rpartition(':')[2]}" and own.rpartition(":")[2] != str(cfg.retrieval.http_port)
    assert f":{own.rpartition(':')[2]}/readyz" in services["retrieval"]["healthcheck"]["test"][-1]  # its own readiness
    assert services["web"]["environment"]["MMSEARCH_WEB_RETRIEVAL_URL"] == f"http://gate:{cfg.retrieval.http_port}"
    # the gate drains at stop (gate.drain_s): Docker must not SIGKILL it first (its default grace is 10 s)
    assert float(services["gate"]["stop_grace_period"].rstrip("s")) >= cfg.gate.drain_s + 3
    keys = {k: v for k, v in services["retrieval"]["environment"].items() if k.startswith("MMSEARCH_RETRIEVAL_")}
    assert keys.keys() >= {"MMSEARCH_RETRIEVAL_API_KEYS", "MMSEARCH_RETRIEVAL_WRITE_API_KEYS"}
    assert {k: v for k, v in services["gate"]["environment"].items() if k.startswith("MMSEARCH_RETRIEVAL_")} == keys  # as the service judges
    assert f"{cfg.web.port}:{cfg.web.port}" in services["web"]["ports"]
    assert "ports" not in services["preprocess"]  # reached inside the network only
    assert services["triton"]["ports"] == [f"127.0.0.1:{cfg.serving.metrics_port}:{cfg.serving.metrics_port}"]  # metrics: admin
    env = load_config(environ={k: str(v) for k, v in compose["x-mmsearch-env"].items()})  # the shared env is a valid config
    assert env.milvus.uri.startswith("http://milvus") and env.serving.url == "triton:8001"
    for svc in ("preprocess", "retrieval", "gate", "web", "experiments-seed"):  # commands are real subcommands
        assert services[svc]["command"][0] in COMMANDS
    assert _open_ports(compose) == {f"{cfg.web.port}:{cfg.web.port}"}


def _open_ports(compose: dict) -> set[str]:
    """Published ports that listen on every interface of the host: only the web page's may."""
    out = set()
    for svc in compose["services"].values():
        for p in svc.get("ports", []):
            spec = p if isinstance(p, str) else f"{p.get('host_ip', '')}:{p.get('published')}:{p.get('target')}"
            if not spec.startswith(("127.0.0.1:", "${MMSEARCH_API_BIND:-127.0.0.1}:")):
                out.add(spec)
    return out


def test_compose_profiles_one_image_toolbox_and_closed_admin_ports():
    from mmsearch.cli import COMMANDS

    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    # cpu is the default profile (deploy/.env, read by compose from the project folder deploy/): Triton
    # without a GPU reservation; gpu is the other, the same Triton with the NVIDIA GPUs, named triton too
    dotenv = dict(line.split("=", 1) for line in (DEPLOY / ".env").read_text().splitlines() if line and not line.startswith("#"))
    assert dotenv["COMPOSE_PROFILES"] == "cpu"
    cpu, gpu = services["triton"], services["triton-gpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert gpu["profiles"] == ["gpu"] and gpu["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert gpu["networks"]["default"]["aliases"] == ["triton"]
    deps = services["retrieval"]["depends_on"]
    assert deps["triton"]["required"] is False and deps["triton-gpu"]["required"] is False
    profiled = {n for n, s in services.items() if s.get("profiles")}
    assert profiled == {"triton", "triton-gpu", "toolbox"}  # everything else runs in both profiles
    # Triton whose onnxruntime backend is >= 1.22 (int8-block models), that keeps serving past a model it cannot load
    for t in (cpu, gpu):
        assert t["image"] == "nvcr.io/nvidia/tritonserver:25.07-py3"
        assert "--strict-readiness=false" in t["command"] and "--exit-on-error=false" in t["command"]
    # one image, built once: one build:, every mmsearch service names the same image
    built = [n for n, s in services.items() if "build" in s]
    assert built == ["retrieval"] and services["retrieval"]["build"]["dockerfile"] == "deploy/Dockerfile"
    ours = {n for n, s in services.items() if s.get("image") == services["retrieval"]["image"]}
    assert ours == {"experiments-seed", "preprocess", "retrieval", "gate", "web", "toolbox"}
    # the toolbox: mmsearch commands inside the network, with the stack's addresses and the folders read-write
    tb = services["toolbox"]
    assert tb["profiles"] == ["tools"] and tb["command"] == ["--help"] and "build-index" in COMMANDS
    cfg = load_config(environ={k: str(v) for k, v in tb["environment"].items() if not str(v).startswith("${")})
    assert cfg.milvus.uri == "http://milvus:19530" and cfg.retrieval.host == "gate"  # the search API (`mmsearch docs`)
    assert {v.split(":")[1] for v in tb["volumes"] if not v.endswith(":ro")} == {"/models", "/images", "/lexical"}
    assert "ports" not in tb
    # admin and store ports are closed: MongoDB, Milvus, MinIO, etcd are not published; the Consul UI is local
    for name in ("mongo1", "mongo2", "mongo3", "milvus", "minio", "etcd"):
        assert "ports" not in services[name], name
    assert services["consul"]["ports"] == ["127.0.0.1:8500:8500"]

    # the check bites: a port opened to every interface is found
    broken = copy.deepcopy(compose)
    broken["services"]["consul"]["ports"] = ["8500:8500"]
    assert "8500:8500" in _open_ports(broken)


def _port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


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
    containers = {name: {c["name"]: c for c in d["spec"]["template"]["spec"]["containers"]} for name, d in deployments.items()}
    # the retrieval pod's search API port is the admission gate's, in the same pod (below); the service's own HTTP its own
    retrieval, gate = containers["retrieval"]["retrieval"], containers["retrieval"]["gate"]
    service_port = _port_of(retrieval["args"][retrieval["args"].index("--http") + 1])
    expected_ports["retrieval"] = {cfg.retrieval.grpc_port, service_port}
    for name, ports in expected_ports.items():
        c = containers[name][name]
        assert {p["containerPort"] for p in c["ports"]} == ports
        assert c["resources"]["requests"] and c["livenessProbe"] and c["readinessProbe"]
        if name != "triton":
            assert c["args"][0] in COMMANDS
    assert retrieval["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": service_port}  # the service's own readiness
    # the gate owns the API's port and forwards to the service's own HTTP in the pod, sized by the same ConfigMap
    assert gate["args"][0] == "serve-gate" and gate["resources"]["requests"] and gate["livenessProbe"] and gate["readinessProbe"]
    assert _port_of(gate["args"][gate["args"].index("--listen") + 1]) == cfg.retrieval.http_port
    assert gate["args"][gate["args"].index("--upstream") + 1] == f"http://127.0.0.1:{service_port}"
    assert {p["containerPort"] for p in gate["ports"]} == {cfg.retrieval.http_port} and service_port != cfg.retrieval.http_port
    assert gate["envFrom"] == retrieval["envFrom"]
    # the pod's grace period (default 30 s) covers the preStop wait and the gate's drain at SIGTERM
    grace = deployments["retrieval"]["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    assert grace >= int(gate["lifecycle"]["preStop"]["exec"]["command"][-1]) + cfg.gate.drain_s + 3
    svc = next(s for s in kinds["Service"] if s["metadata"]["name"] == "retrieval")
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {cfg.retrieval.http_port, cfg.retrieval.grpc_port}  # not the service's own HTTP
    def retrieval_env(c: dict) -> dict:
        return {e["name"]: e for e in c["env"] if e["name"].startswith("MMSEARCH_RETRIEVAL_")}

    assert retrieval_env(gate) == retrieval_env(retrieval)  # the gate judges keys as the service does (read and write keys)
    env = retrieval_env(gate)
    assert env["MMSEARCH_RETRIEVAL_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "mmsearch-api-keys"  # keys required, from a Secret
    assert env["MMSEARCH_RETRIEVAL_WRITE_API_KEYS"]["valueFrom"]["secretKeyRef"]["optional"] is True
    env = {e["name"]: e for e in retrieval["env"]}
    assert env["MMSEARCH_MONGO_URI"]["valueFrom"]["secretKeyRef"]["key"] == "connectionString.standard"  # the operator's URI, with the password
    services = {s["metadata"]["name"] for s in kinds["Service"]}
    assert {"preprocess", "retrieval", "web", "triton"} <= services
    cm = kinds["ConfigMap"][0]["data"]
    load_config(environ=cm)  # the ConfigMap is a valid config
    seed = kinds["Job"][0]["spec"]["template"]["spec"]["containers"][0]  # the Job seeds Consul with the file the image carries
    assert seed["args"][:2] == ["experiments", "push"] and seed["args"][2] == "/app/deploy/experiments.yaml"
    assert "COPY deploy/experiments.yaml deploy/experiments.yaml" in (DEPLOY / "Dockerfile").read_text()
    assert "WORKDIR /app" in (DEPLOY / "Dockerfile").read_text()


def test_every_ranker_the_shipped_experiments_name_is_in_the_image_and_fits_its_arm():
    """A learned arm's ranker (config rankers_dir, deploy/rankers relative to WORKDIR) ships beside the experiments
    file, loads, and was trained on the arm's own sources."""
    from mmsearch.experiments.spec import parse_experiments
    from mmsearch.ranking.ranker import load_ranker, ranker_path

    exp = parse_experiments((DEPLOY / "experiments.yaml").read_text())
    learned = [a for sc in exp.scenes.values() for lay in sc.layers for a in lay.arms if a.fusion == "learned"]
    assert learned  # the demo's default text2text arm
    assert "COPY deploy/rankers deploy/rankers" in (DEPLOY / "Dockerfile").read_text()
    for arm in learned:
        assert arm.ranker and arm.sources
        r = load_ranker(ranker_path(DEPLOY / "rankers", arm.ranker))
        assert list(r.sources) == [(s.name, s.kind) for s in arm.sources]
        assert r.title_field == arm.title_field


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


def test_the_production_image_installs_without_the_embedded_servers():
    """deploy/Dockerfile installs the project without extras; the embedded stand-ins (secantusdb, GPL-2.0-only;
    the Milvus 2.3.5 server; Milvus Lite) are the `embedded` extra only (issue 35, item 4)."""
    import tomllib

    text = (DEPLOY / "Dockerfile").read_text()
    installs = re.findall(r"pip install [^\n]*?(\S+)\s*$", text, flags=re.MULTILINE)
    assert installs == ["."], installs  # the project itself, no [extras]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}

    embedded = {"secantusdb", "milvus", "milvus-lite"}
    assert embedded.isdisjoint(names(project["dependencies"]))  # what the image gets
    assert names(project["optional-dependencies"]["embedded"]) == embedded
    assert "USER 10001" in text  # not root
    extras = re.search(r"-e '\.\[([a-z,]+)\]'", (ROOT / "Makefile").read_text())  # make demo / make test bring them
    assert extras and "embedded" in extras.group(1).split(","), extras
    assert "GPL-2.0-only" in (ROOT / "README.md").read_text()


# ---------------------------------------------------------------- sizes (issue 35, item 3)


def _values(size: str, chart: str) -> dict:
    return yaml.safe_load((CHARTS / size / f"{chart}.values.yaml").read_text())


def _storage_classes(obj) -> set[str]:
    """Every storage class a values file or manifest names (chart keys vary: storageClass, storageClassName)."""
    out: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("storageClass", "storageClassName") and v:
                out.add(v)
            out |= _storage_classes(v)
    elif isinstance(obj, list):
        for v in obj:
            out |= _storage_classes(v)
    return out


def test_chart_values_in_two_sizes():
    # Consul: one server in small (a one-node cluster schedules it); three on distinct nodes in production
    small, prod = _values("small", "consul"), _values("production", "consul")
    assert small["server"]["replicas"] == small["server"]["bootstrapExpect"] == 1
    assert prod["server"]["replicas"] == prod["server"]["bootstrapExpect"] == 3
    assert "podAntiAffinity" in prod["server"]["affinity"] and "kubernetes.io/hostname" in prod["server"]["affinity"]
    # Milvus: standalone with its message queue inside (rocksmq) in small; a cluster with Pulsar v3 in production,
    # the MQ the chart's config.tpl derives from these keys
    small, prod = _values("small", "milvus"), _values("production", "milvus")
    assert small["cluster"]["enabled"] is False and small["standalone"]["messageQueue"] == "rocksmq"
    assert small["pulsarv3"]["enabled"] is False and small["etcd"]["replicaCount"] == 1 and small["minio"]["mode"] == "standalone"
    assert prod["cluster"]["enabled"] is True and prod["pulsarv3"]["enabled"] is True
    assert not any((prod.get(k) or {}).get("enabled") for k in ("kafka", "woodpecker", "pulsar"))  # one MQ
    # MinIO sized to the data, not the chart's 4 x 500Gi
    size_gi = lambda v: int(str(v).removesuffix("Gi"))
    assert size_gi(small["minio"]["persistence"]["size"]) <= 20
    assert size_gi(prod["minio"]["persistence"]["size"]) * prod["minio"].get("replicas", 4) <= 500
    # storage classes named in the values of each size, and the same names in its manifests
    for size in SIZES:
        named = set().union(*(_storage_classes(_values(size, c)) for c in ("milvus", "consul")))
        in_manifests = _storage_classes(_k8s_docs(size))
        assert named and in_manifests, size
    assert _storage_classes(_values("small", "milvus")) == {"standard"} == _storage_classes(_k8s_docs("small"))
    assert _storage_classes(_k8s_docs("production")) == {"mmsearch-rwx", "mmsearch-ssd"}


def _containers(docs: list[dict]) -> Iterator[tuple[str, dict, dict]]:
    for owner, template in _pod_specs(docs):
        for c in template["spec"].get("containers", []):
            yield f"{owner['kind']}/{owner['metadata']['name']}", template["spec"], c


def test_the_mmsearch_image_is_set_in_one_place():
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    (image,) = base["images"]
    assert image["name"] == "mmsearch" and image["newName"] and image["newTag"] and image["newTag"] != "latest"
    for f in sorted(BASE.glob("*.yaml")):  # every manifest names the placeholder, no repository or tag
        for d in _docs(f):
            for where, _, c in _containers([d]):
                assert c["image"] == "mmsearch" or not c["image"].startswith("mmsearch"), (where, c["image"])
    for size in SIZES:
        assert "images" not in yaml.safe_load((K8S / size / "kustomization.yaml").read_text())  # not overridden per size
        ours = {c["image"] for _, _, c in _containers(_k8s_docs(size)) if c["name"] != "triton"}
        assert ours == {f"{image['newName']}:{image['newTag']}"}, size
    assert "mmsearch:latest" not in "".join(f.read_text() for f in K8S.rglob("*.yaml"))


def test_startup_probes_security_context_and_gpu_scheduling():
    for size in SIZES:
        docs = _k8s_docs(size)
        for where, spec, c in _containers(docs):
            sc = spec.get("securityContext") or {}
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) > 0, (size, where)
            assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            if "livenessProbe" in c:  # a slow start (model loads) must not be killed by liveness: a startup grace first
                probe = c["startupProbe"]
                assert probe["periodSeconds"] * probe["failureThreshold"] >= 120, (size, where)
        triton = next(c for w, _, c in _containers(docs) if w == "Deployment/triton")
        grace = triton["startupProbe"]["periodSeconds"] * triton["startupProbe"]["failureThreshold"]
        assert grace >= 600 and triton["image"] == "nvcr.io/nvidia/tritonserver:25.07-py3"
        assert "--strict-readiness=false" in triton["args"] and "--exit-on-error=false" in triton["args"]
    prod = _k8s_docs("production")
    spec = next(t["spec"] for o, t in _pod_specs(prod) if o["metadata"]["name"] == "triton")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    small = next(t["spec"] for o, t in _pod_specs(_k8s_docs("small")) if o["metadata"]["name"] == "triton")
    assert "nodeSelector" not in small and "nvidia.com/gpu" not in small["containers"][0]["resources"].get("limits", {})  # CPU


def _policy_problems(docs: list[dict]) -> list[str]:
    """PDBs and NetworkPolicies that select no pod; Ingress backends that are no Service port."""
    problems = []
    labels = [t.get("metadata", {}).get("labels", {}) for _, t in _pod_specs(docs)]
    services = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} for d in docs if d["kind"] == "Service"}
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "PodDisruptionBudget":
            sel = d["spec"]["selector"]["matchLabels"]
            if not any(sel.items() <= lab.items() for lab in labels):
                problems.append(f"{where}: selects no pod")
        if d["kind"] == "NetworkPolicy":
            sel = d["spec"]["podSelector"].get("matchLabels", {})
            if not any(sel.items() <= lab.items() for lab in labels):
                problems.append(f"{where}: selects no pod")
        if d["kind"] == "Ingress":
            for rule in d["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    svc = path["backend"]["service"]
                    if svc["port"]["number"] not in services.get(svc["name"], set()):
                        problems.append(f"{where}: backend {svc['name']}:{svc['port']['number']} is no Service port")
    return problems


def test_pdbs_network_policies_and_ingress():
    for size in SIZES:
        docs = _k8s_docs(size)
        assert _policy_problems(docs) == [], size
        pdbs = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
        policies = {d["metadata"]["name"] for d in docs if d["kind"] == "NetworkPolicy"}
        assert pdbs == policies == {"retrieval", "web", "preprocess", "triton"}
        ingress = next(d for d in docs if d["kind"] == "Ingress")
        assert {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]} == {"web", "retrieval"}
    # the check bites
    broken = _k8s_docs()
    next(d for d in broken if d["kind"] == "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] = 80
    next(d for d in broken if d["kind"] == "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] = {"app": "nobody"}
    assert len(_policy_problems(broken)) == 2
