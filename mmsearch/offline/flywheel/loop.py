"""`mmsearch flywheel`: users' clicks -> a better model on a small share of traffic, in one command.

    mmsearch flywheel --run runs/fw1 --scene text2text --index texts --model minilm
    mmsearch flywheel --run runs/fw2 --scene text2image --index images_ft --model dual_ft_text

``--model`` is the query tower serving the scene: a text encoder (text2text), or the text tower of a
dual encoder (text2image: its source dual is fine-tuned, both towers are exported, gated and
published as ``<name>_text`` / ``<name>_image``, and the image index is rebuilt with the new image tower).

Steps, each recorded in ``<run>/state.json`` when it finishes, so a rerun skips what is done and
picks up where a failure or Ctrl-C stopped (rerunning never trains, exports or adds an arm twice):

1. ``pairs``    the query log -> train pairs and held-out queries (offline/flywheel/pairs.py);
2. ``finetune`` the served model's source fine-tuned on them (text trainer with skipped-above hard
                negatives; dual trainer (LiT, locked image tower) for a dual's text tower);
3. ``stage``    exported like the served model (same quantization) into ``<run>/repo``, not the live one;
4. ``gate``     candidate vs the served model, both as served, on the held-out queries
                (offline/flywheel/gate.py); a refusal ends the run here, and no rerun gets past it;
5. ``publish``  copied into the live model repository; Triton and the preprocess service load it
                (config repository_poll_s), and the step waits until the search API embeds with it;
6. ``index``    the index rebuilt with the new model under ``<index>_<name suffix>`` (same documents,
                stored fields and lexical fields as the live build);
7. ``arm``      an arm with ``flywheel.traffic`` % of the scene's users in layer ``flywheel.layer``
                (the watched experiments file, or Consul), awaited in the API's live config.
Then `mmsearch ab-report --scene SCENE` says whether the new arm wins.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmsearch.clients.vectors import check_index_name, collection_name, index_spec
from mmsearch.config import Config, flag_overrides, lexical_root, load_config
from mmsearch.errors import AlreadyExists, BadInput, DeadlineExceeded, MMSearchError, NotFound
from mmsearch.experiments.edit import add_arm_to_consul, add_arm_to_file
from mmsearch.modelrepo.manifest import MANIFEST_NAME, read_manifest
from mmsearch.offline.data import load_pairs
from mmsearch.offline.eval_served import load_judged
from mmsearch.offline.flywheel.gate import GateResult, gate, heldout_evalset, load_corpus, with_distractors
from mmsearch.offline.flywheel.pairs import PairOptions, pairs_from_log, write_pairs
from mmsearch.offline.indexing.stores import open_stores
from mmsearch.offline.quantize import mode_of
from mmsearch.runtime.endpoints import running_config
from mmsearch.runtime.net import wait_until

log = logging.getLogger("mmsearch.flywheel")
STATE = "state.json"
# Validation searches its queries' positives among this many other shown documents: over the few
# hundred positives alone, an epoch that forgets how to rank against a real corpus still looks best
# (measured: validation +4% while the gate, over 37k shown documents, said -2.5%).
VAL_DISTRACTORS = 5000


class GateRefused(BadInput):
    """The candidate is no better than the served model: nothing reaches traffic."""


@dataclass
class FlywheelOptions:
    run: Path
    index: str  # the index the scene serves now
    model: str  # the model serving it now (a repository name)
    scene: str = "text2text"
    name: str = ""  # the new model's name (default <model>_<run folder name>; a dual: <model without _text>_<run>, + _text/_image)
    base: str = ""  # what to fine-tune (default: the served model's recorded source)
    epochs: int = 0  # 0: the trainer's default (text 3; dual 30, an epoch of its heads is a handful of steps)
    lr: float = 0.0  # 0: the trainer's default (text 5e-5; dual 1e-3, its heads are small and were trained at 1e-2)
    batch_size: int = 32
    api: str = ""  # the search API to wait on (default: config retrieval host:port)
    api_key: str = ""
    wait_s: float = 180.0
    progress: bool = True
    since: float = 0.0  # Unix time: pairs from searches since then only (0: the whole log)

    def suffix(self, stem: str) -> str:
        return self.name[len(stem) + 1:] if self.name.startswith(stem + "_") else self.name

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its rerun."""
        return {k: v for k, v in asdict(self).items() if k in ("index", "model", "scene", "name", "base", "epochs", "lr", "batch_size")} | (
            {"since": self.since} if self.since else {})  # (runs recorded before --since existed stay resumable)


class Run:
    """The run folder and its state file (written atomically after every step)."""

    def __init__(self, opts: FlywheelOptions):
        self.dir = opts.run
        self.path = opts.run / STATE
        if self.path.exists():
            self.state = json.loads(self.path.read_text())
            if self.state["options"] != opts.fingerprint():
                raise BadInput(f"{self.dir} was started with {self.state['options']}, not {opts.fingerprint()}: "
                               "rerun with the same options, or use a new --run folder")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.state = {"options": opts.fingerprint(), "steps": {}}
            self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path)

    def done(self, step: str) -> dict[str, Any] | None:
        return self.state["steps"].get(step)

    def finish(self, step: str, info: dict[str, Any]) -> dict[str, Any]:
        self.state["steps"][step] = {**info, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self.save()
        return info


def _wait(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    last = ["not yet"]

    def attempt() -> bool:
        try:
            return check()
        except MMSearchError as e:  # not served yet (NotFound, Unavailable ...): keep the reason for the error
            last[0] = e.message
            return False

    if not wait_until(attempt, timeout_s, interval=1.0):
        raise DeadlineExceeded(f"waited {timeout_s:.0f} s for {what} ({last[0]})")


def run_flywheel(opts: FlywheelOptions, cfg: Config, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every step; returns the state. Raises GateRefused when the gate says no."""
    from mmsearch.client.search_client import SearchClient
    from mmsearch.offline.export import ExportOptions, export_model
    from mmsearch.offline.finetune import FinetuneConfig, finetune, split_pairs
    from mmsearch.offline.indexing.build import BuildOptions, build_index
    from mmsearch.offline.reindex import write_held_documents

    check_index_name(opts.index)
    repo = Path(cfg.model_repository)
    served = repo / opts.model
    if not served.is_dir():
        raise NotFound(f"model {opts.model!r} not found in {repo}")
    manifest = read_manifest(served)
    if manifest.kind != "text_encoder":
        raise BadInput(f"{opts.model} is a {manifest.kind}: the flywheel fine-tunes a query tower (a text encoder, or "
                       "a dual encoder's text tower)")
    dual = manifest.source.get("kind") == "dual"
    if manifest.source.get("kind") not in ("dual", "sentence-transformers"):
        raise BadInput(f"{opts.model} comes from a {manifest.source.get('kind')!r} model: the flywheel fine-tunes "
                       "sentence-transformers text encoders and dual encoders")
    served_docs = None  # the partner image tower that built the served index (dual)
    if dual:
        if not manifest.partner or not (repo / manifest.partner).is_dir():
            raise NotFound(f"{opts.model} is a dual encoder's text tower, but its image tower {manifest.partner!r} is not in {repo}")
        served_docs = repo / manifest.partner
    stem = opts.model.removesuffix("_text") if dual else opts.model
    opts.name = opts.name or f"{stem}_{opts.run.name}"
    opts.lr = opts.lr or (1e-3 if dual else 5e-5)
    opts.epochs = opts.epochs or (30 if dual else 3)
    new_index = f"{opts.index}_{opts.suffix(stem)}"
    check_index_name(new_index)
    towers = {"text": f"{opts.name}_text", "image": f"{opts.name}_image"} if dual else {"text": opts.name}
    query_model, doc_model = towers["text"], towers.get("image", towers["text"])
    opts.base = opts.base or str(manifest.source.get("path") or "")
    if not opts.base:
        raise BadInput(f"{opts.model}'s manifest records no source model: give --base")
    fw = cfg.flywheel
    run = Run(opts)
    live = running_config(cfg)  # (a stack started with ports 0 recorded the ones it got)
    client = SearchClient(opts.api or f"http://{live.retrieval.host}:{live.retrieval.http_port}", api_key=opts.api_key or None)
    pairs_dir, model_dir, stage_repo = run.dir / "pairs", run.dir / "model", run.dir / "repo"

    def step(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        info = run.done(name)
        if info is not None:
            say(f"{name}: done before ({_brief(info)})")
            return info
        info = run.finish(name, fn())
        say(f"{name}: {_brief(info)}")
        return info

    def live_record(vs: Any, ds: Any) -> dict[str, Any]:
        build = vs.live_build(opts.index)
        rec = next((r for r in ds.builds(opts.index) if build and r["_id"] == collection_name(opts.index, build)), None)
        if rec is None:
            raise NotFound(f"index {opts.index} has no live build to copy")
        return rec

    def images_of(rec: dict[str, Any]) -> Path:  # where its image paths point (older records: the running stack's folder)
        return Path(rec.get("image_root") or live.image_root)

    def pairs() -> dict[str, Any]:
        popts = PairOptions(opts.scene, fw.min_users, fw.min_click_rate, fw.max_user_rate, since=opts.since)
        with open_stores(cfg.milvus.uri, cfg.mongo.uri, cfg.data_dir, cfg.mongo.database) as (vs, ds):
            rec = live_record(vs, ds)
            if (rec.get("modality") == "image") != dual:
                raise BadInput(f"index {opts.index} holds {rec.get('modality')} documents, but {opts.model} is "
                               + ("a dual encoder's text tower (text->image)" if dual else "a text encoder (text->text)")
                               + ": give the index the model serves")
            ps = pairs_from_log(ds, opts.index, popts, image_root=images_of(rec) if dual else None)
        if len(ps.train) < fw.min_train_pairs or len(ps.heldout) < fw.min_heldout_queries:
            raise BadInput(f"not enough clicks yet: {len(ps.train)} training pairs (need {fw.min_train_pairs}) and "
                           f"{len(ps.heldout)} held-out queries (need {fw.min_heldout_queries}); counts {ps.counts}")
        write_pairs(ps, pairs_dir)
        return {"train_pairs": len(ps.train), "heldout_queries": len(ps.heldout), "corpus": len(ps.corpus),
                "with_negative": sum(1 for p in ps.train if p.negative)}

    def tune() -> dict[str, Any]:
        shutil.rmtree(model_dir, ignore_errors=True)  # an interrupted training left no record: start it again
        train_pairs = load_pairs(pairs_dir / "train.jsonl")
        train, val, _ = split_pairs(train_pairs, seed=0)
        val = with_distractors(val, load_corpus(pairs_dir / "corpus.jsonl"), VAL_DISTRACTORS)
        hard = not dual and any(p.negative for p in train)  # the contrastive LiT epoch uses in-batch negatives only
        r = finetune(FinetuneConfig("dual" if dual else "text", opts.base, model_dir, opts.epochs, opts.lr, opts.batch_size,
                                    hard_negatives=hard, metric="ndcg@10", progress=opts.progress,
                                    # a dual epoch over a few hundred pairs is a handful of steps on its small heads
                                    patience=6 if dual else 2),
                     train, val)
        return {"seconds": round(r.seconds, 1), "validation": f"ndcg@10 {r.base_metric:.4f} -> {r.best_metric:.4f}",
                "best_epoch": r.best_epoch, "train_pairs": r.train_pairs}

    def stage() -> dict[str, Any]:
        for name in towers.values():
            shutil.rmtree(stage_repo / name, ignore_errors=True)
        quantize = mode_of(manifest.quantization.method) if manifest.quantization is not None else None
        exported = export_model(model_dir, stage_repo, opts.name, options=ExportOptions(quantize=quantize, settings=cfg.export,
                                                                                        force=True))
        if sorted(r.name for r in exported) != sorted(towers.values()):
            raise BadInput(f"{model_dir} exported as {[r.name for r in exported]}, not {sorted(towers.values())}")
        return {"model": query_model, **({"image_model": doc_model} if dual else {}), "quantize": quantize or "none"}

    def check() -> dict[str, Any]:
        es = heldout_evalset(load_judged(pairs_dir / "heldout.jsonl"), load_corpus(pairs_dir / "corpus.jsonl"))
        res: GateResult = gate(stage_repo / query_model, served, es, fw.gate_metric, fw.gate_margin,
                               candidate_docs=stage_repo / doc_model if dual else None, incumbent_docs=served_docs)
        say(res.line())
        return {"passed": res.passed, **res.to_json()}

    step("pairs", pairs)
    step("finetune", tune)
    step("stage", stage)
    verdict = step("gate", check)
    if not verdict["passed"]:
        raise GateRefused(f"the gate refused {query_model}: held-out {verdict['metric']} {verdict['candidate']:.4f} vs the served "
                          f"{opts.model} {verdict['incumbent']:.4f} (margin {verdict['margin']:.0%}); no arm was added")

    def publish() -> dict[str, Any]:
        for name in sorted(towers.values(), key=lambda n: n == query_model):  # the query tower last: it is what arms name
            dest = repo / name
            if dest.exists() and (dest / MANIFEST_NAME).read_bytes() != (stage_repo / name / MANIFEST_NAME).read_bytes():
                raise AlreadyExists(f"{dest} holds another model named {name}: give this run another --name")
            if not dest.exists():
                tmp = repo / f".{name}.publish"
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(stage_repo / name, tmp)
                tmp.rename(dest)  # whole, at once: the repository watchers never see half a model
        _wait(f"the search API to embed with {query_model}", lambda: client.embed(query_model, text="flywheel").size > 0,
              opts.wait_s)
        return {"model": query_model, **({"image_model": doc_model} if dual else {}), "repository": str(repo)}

    def reindex() -> dict[str, Any]:
        # from the documents the index holds now (documents API writes included), not the file it was first built from
        docs = run.dir / "documents.jsonl"
        with open_stores(cfg.milvus.uri, cfg.mongo.uri, cfg.data_dir, cfg.mongo.database) as (vs, ds):
            rec = live_record(vs, ds)
            held = write_held_documents(vs, ds, opts.index, docs)
        s = build_index(BuildOptions(
            index=new_index, docs=docs, model=doc_model, repo=repo, data_dir=cfg.data_dir,
            image_root=images_of(rec),
            milvus_uri=cfg.milvus.uri, index_spec=index_spec(cfg.milvus), mongo_uri=cfg.mongo.uri,
            database=cfg.mongo.database, fields=dict(rec.get("fields") or {}), lexical=list(rec.get("lexical") or []),
            lexical_root=lexical_root(cfg), embed_title=rec.get("embed_title"), progress=opts.progress))
        return {"index": new_index, "build": s.build, "from": f"{held} documents of {opts.index}", "indexed": s.indexed,
                "seconds": round(s.seconds, 1)}

    def arm() -> dict[str, Any]:
        params = {"embed_model": query_model, "index": new_index}
        args = (opts.scene, fw.layer, query_model, params, fw.traffic)
        if cfg.consul.addr:
            changed = add_arm_to_consul(cfg.consul.addr, cfg.consul.key, cfg.consul.token, *args)
        else:
            changed = add_arm_to_file(Path(cfg.experiments_file), *args)

        def live() -> bool:
            exp = client.config().get("experiments") or {}
            layers = ((exp.get("scenes") or {}).get(opts.scene) or {}).get("layers") or []
            return any(a.get("name") == query_model for lay in layers if lay.get("name") == fw.layer for a in lay.get("arms", []))

        _wait(f"arm {query_model} in the search API's live config", live, opts.wait_s)
        return {"layer": fw.layer, "arm": query_model, "traffic": fw.traffic, "changed": changed, **params}

    step("publish", publish)
    step("index", reindex)
    step("arm", arm)
    say(f"arm {query_model} serves {fw.traffic:g} % of {opts.scene} users (layer {fw.layer}); "
        f"compare it with: mmsearch ab-report --scene {opts.scene}")
    return run.state


def _brief(info: dict[str, Any]) -> str:
    keys = [k for k in info if k not in ("at", "candidate_metrics", "incumbent_metrics")]
    return ", ".join(f"{k} {info[k]}" for k in keys[:6])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch flywheel", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--run", type=Path, required=True, help="run folder (state.json; rerun the same command to resume)")
    p.add_argument("--index", required=True, help="the index the scene serves now")
    p.add_argument("--model", required=True, help="the repository model serving it now: a text encoder, or a dual's text tower")
    p.add_argument("--scene", default="text2text")
    p.add_argument("--name", default="", help="the new model's name (default <model>_<run folder name>; for a dual, "
                   "<model without _text>_<run folder name>, and its towers get _text and _image after it)")
    p.add_argument("--base", default="", help="model to fine-tune (default: the served model's recorded source)")
    p.add_argument("--epochs", type=int, default=0, help="default: text 3, dual 30")
    p.add_argument("--lr", type=float, default=0.0, help="learning rate (default: text 5e-5, dual 1e-3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--api", default="", help="search API base URL (default: config retrieval host/port)")
    p.add_argument("--api-key", default="")
    p.add_argument("--since", help="pairs from searches since this UTC time only (ISO 8601, e.g. 2026-11-26T01:00)")
    p.add_argument("--config")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from mmsearch.cli import parse_since, run_cli

    args = build_parser().parse_args(argv)

    def _go() -> None:
        cfg = load_config(args.config, overrides=flag_overrides({}))
        run_flywheel(FlywheelOptions(args.run, args.index, args.model, args.scene, args.name, args.base, args.epochs,
                                     args.lr, args.batch_size, args.api, args.api_key, since=parse_since(args.since) or 0.0), cfg)

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
