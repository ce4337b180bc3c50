"""Fine-tuning: one module per trainer (``text``, ``dual``, ``clip``, ``cross``), the loop and helpers
they share (``common``, ``contrastive``), the named data sets (``datasets``), and ``finetune()``,
which checks a run's config and dispatches it to its trainer."""

from __future__ import annotations

import shutil
from collections.abc import Callable

import torch

from mmsearch.errors import BadInput
from mmsearch.offline.data import EvalSet, Pair
from mmsearch.offline.training.clip import finetune_clip
from mmsearch.offline.training.common import (
    RECORD,
    TRAINERS,
    FinetuneConfig,
    FinetuneResult,
    seed_everything,
    split_pairs,
    unique_batches,
)
from mmsearch.offline.training.cross import finetune_cross
from mmsearch.offline.training.datasets import dataset_sets
from mmsearch.offline.training.dual import finetune_dual
from mmsearch.offline.training.text import finetune_text

TRAINER_FNS: dict[str, Callable[[FinetuneConfig, list[Pair], EvalSet], FinetuneResult]] = {
    "text": finetune_text, "dual": finetune_dual, "clip": finetune_clip, "cross": finetune_cross,
}


def finetune(cfg: FinetuneConfig, train: list[Pair], val: EvalSet) -> FinetuneResult:
    if cfg.trainer not in TRAINERS:
        raise BadInput(f"--trainer must be one of {', '.join(TRAINERS)}, got {cfg.trainer!r}")
    if cfg.epochs < 1 or cfg.batch_size < 2 or not 0 < cfg.lr < 1:
        raise BadInput("--epochs >= 1, --batch-size >= 2 and 0 < --lr < 1 are required")
    if cfg.dim is not None and not 8 <= cfg.dim <= 4096:
        raise BadInput(f"--dim must be 8..4096, got {cfg.dim}")
    try:
        device = torch.device(cfg.device)
    except (RuntimeError, ValueError) as e:
        raise BadInput(f"--device {cfg.device!r} is not a torch device ({e})") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"--device {cfg.device}: this machine has no CUDA device (torch {torch.__version__})")
    if not 0 < cfg.scale <= 1000 or not 0 <= cfg.hardness <= 100:
        raise BadInput(f"--scale must be in (0, 1000] and --hardness in [0, 100], got {cfg.scale} and {cfg.hardness}")
    if cfg.mini_batch < 0:
        raise BadInput(f"--mini-batch must be >= 0, got {cfg.mini_batch}")
    if len(train) < 2:
        raise BadInput(f"need at least 2 training pairs, got {len(train)}")
    if cfg.out.exists() and any(cfg.out.iterdir()):
        raise BadInput(f"output folder {cfg.out} is not empty")
    cfg.out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fn = TRAINER_FNS[cfg.trainer]
    try:
        return fn(cfg, train, val)
    except BaseException:
        if not (cfg.out / RECORD).exists():
            shutil.rmtree(cfg.out, ignore_errors=True)  # no half-trained folder left looking like a result
        raise


__all__ = ["RECORD", "TRAINERS", "FinetuneConfig", "FinetuneResult", "dataset_sets", "finetune", "split_pairs",
           "unique_batches"]
