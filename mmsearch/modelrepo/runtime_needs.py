"""What an exported graph needs of the ONNX Runtime that serves it, and the check the serving tier makes.

Export records the graph's op types and opsets and the oldest ONNX Runtime that runs them all
(manifest ``runtime``). Whoever loads a model (the Triton launcher's python backend, retrieval's
in-process query encoders) compares that with the ONNX Runtime it runs and refuses the model, naming
it and the reason, instead of failing inside ORT or holding a server not ready; the other models serve.

The minimum comes from two tables, each entry checked against ONNX Runtime's own record:
- standard opsets: ORT's release notes / docs/Versioning.md (the opset each release implements);
- ops outside the standard domain: the release that brought the op (or its variant).
An op or opset the tables do not know leaves the minimum unknown (None): it is recorded in ``because``
and nothing is refused on its account.
"""

from __future__ import annotations

from pathlib import Path

from mmsearch.errors import BadInput, NotFound
from mmsearch.modelrepo.manifest import MANIFEST_NAME, Manifest, RuntimeNeeds, read_manifest


class ModelRefused(BadInput):
    """A model this server's ONNX Runtime cannot run (its manifest says so): refused at load, by name, with
    the reason; the other models serve, and it does not hold readiness down (it would never become ready)."""

# ONNX opset of the standard domain -> the first ONNX Runtime release that implements it.
OPSET_MIN_ORT: dict[int, str] = {15: "1.10", 16: "1.11", 17: "1.12", 18: "1.14", 19: "1.15", 20: "1.17", 21: "1.18"}
# Ops of other domains -> the first release that runs them. MatMulNBits: 4-bit since 1.17, 8-bit
# weights (export --quantize int8-block) since 1.22 (issue 16; offline/quantize.py).
CONTRIB_MIN_ORT: dict[str, str] = {
    "com.microsoft.MatMulNBits": "1.17",
    "com.microsoft.MatMulNBits/bits=8": "1.22",
    "com.microsoft.DynamicQuantizeMatMul": "1.10",
    "com.microsoft.MatMulIntegerToFloat": "1.10",
    "com.microsoft.QAttention": "1.10",
    "com.microsoft.Attention": "1.10",
    "com.microsoft.FastGelu": "1.10",
    "com.microsoft.BiasGelu": "1.10",
    "com.microsoft.Gelu": "1.10",
    "com.microsoft.SkipLayerNormalization": "1.10",
    "com.microsoft.EmbedLayerNormalization": "1.10",
}
STANDARD_DOMAINS = ("", "ai.onnx")


def _version(v: str) -> tuple[int, ...]:
    """'1.22.0' -> (1, 22, 0); a local or dev suffix ('1.23.0+cu12', '1.24.0.dev2025') is ignored."""
    out = []
    for part in v.replace("+", ".").split("."):
        if not part.isdigit():
            break
        out.append(int(part))
    return tuple(out)


def _key(op_type: str, domain: str) -> str:
    return op_type if domain in STANDARD_DOMAINS else f"{domain}.{op_type}"


def needs_of_graph(graph_ops: list[tuple[str, str, dict[str, int]]], opsets: dict[str, int]) -> RuntimeNeeds:
    """RuntimeNeeds of a graph given as (op_type, domain, int attributes) per node and its opset imports."""
    ops = sorted({_key(t, d) for t, d, _ in graph_ops})
    minimum: tuple[int, ...] = (0,)
    because: dict[str, str] = {}
    unknown: list[str] = []
    std = max((v for d, v in opsets.items() if d in STANDARD_DOMAINS), default=0)
    if std:
        if std in OPSET_MIN_ORT or std < min(OPSET_MIN_ORT):
            need = OPSET_MIN_ORT.get(std, "1.0")
            because[f"opset {std}"] = need
        else:
            unknown.append(f"opset {std}: not in the table")
    for t, d, attrs in graph_ops:
        if d in STANDARD_DOMAINS:
            continue
        key = _key(t, d)
        variant = f"{key}/bits={attrs['bits']}" if "bits" in attrs else key
        op_need = CONTRIB_MIN_ORT.get(variant) or CONTRIB_MIN_ORT.get(key)
        if op_need is None:
            if key not in unknown:
                unknown.append(key)
            continue
        label = variant if variant in CONTRIB_MIN_ORT else key
        because[label] = op_need
    for need in because.values():
        minimum = max(minimum, _version(need))
    top = [f"{k} needs >= {v}" for k, v in sorted(because.items()) if _version(v) == minimum]
    if unknown:
        return RuntimeNeeds(opsets=opsets, ops=ops, min_onnxruntime=None,
                            because=[f"{u}: minimum ONNX Runtime unknown" for u in unknown] + top)
    return RuntimeNeeds(opsets=opsets, ops=ops, min_onnxruntime=".".join(map(str, minimum)) if because else None, because=top)


def runtime_needs(onnx_path: str | Path) -> RuntimeNeeds:
    """RuntimeNeeds of an ONNX file (the graph only: external weights are not read)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    nodes: list[tuple[str, str, dict[str, int]]] = []

    def walk(graph) -> None:  # subgraphs (If, Loop, Scan bodies) too
        for n in graph.node:
            attrs = {a.name: int(a.i) for a in n.attribute if a.type == onnx.AttributeProto.INT}
            nodes.append((n.op_type, n.domain, attrs))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                for g in a.graphs:
                    walk(g)

    walk(model.graph)
    opsets = {o.domain: int(o.version) for o in model.opset_import}
    return needs_of_graph(nodes, opsets)


def onnxruntime_version() -> str:
    """The ONNX Runtime of this process (what the launcher's python backend and the in-process encoders run)."""
    import onnxruntime

    return str(onnxruntime.__version__)


def refusal(manifest: Manifest, ort_version: str) -> str | None:
    """Why ``ort_version`` cannot serve the model, or None when it can or the manifest does not say."""
    needs = manifest.runtime
    if needs is None or not needs.min_onnxruntime:
        return None
    if _version(ort_version) >= _version(needs.min_onnxruntime):
        return None
    special = [o for o in needs.ops if "." in o]
    return (f"model {manifest.name!r} needs ONNX Runtime >= {needs.min_onnxruntime} ({'; '.join(needs.because)}; "
            f"non-standard ops: {', '.join(special) or 'none'}), but this server runs ONNX Runtime {ort_version}: "
            f"refused; serve it where ONNX Runtime >= {needs.min_onnxruntime} runs, or export it without that op "
            "(e.g. --quantize int8 instead of int8-block)")


def check_model_dir(model_dir: str | Path, ort_version: str | None = None) -> None:
    """Raise ModelRefused when the model folder's manifest needs a newer ONNX Runtime than ``ort_version``
    (default: this process's). A folder without a readable manifest is not judged here (unknown)."""
    if not (Path(model_dir) / MANIFEST_NAME).is_file():
        return
    try:
        manifest = read_manifest(model_dir)
    except (BadInput, NotFound):
        return  # a broken manifest is reported by whoever needs it; Triton itself does not read it
    why = refusal(manifest, ort_version or onnxruntime_version())
    if why is not None:
        raise ModelRefused(why)
