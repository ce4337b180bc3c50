"""Hugging Face CLIPModel checkpoints: a text tower and an image tower in one embedding space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmsearch.errors import BadInput
from mmsearch.modelrepo.manifest import ImagePreprocessing, TextPreprocessing
from mmsearch.modelrepo.preprocessing import load_image
from mmsearch.offline.models.tower import FnModule, LoadedModel, Tower, features, l2

_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def _field(obj, key: str):
    """Transformers 5 holds sizes in SizeDict objects, 4.x in plain dicts."""
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def pil_image_processor_class():
    """The PIL implementation: the default CLIPImageProcessor backend needs torchvision (not installable here)."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def image_spec_from_processor(proc) -> ImagePreprocessing:
    size, crop = proc.size, proc.crop_size
    shortest = _field(size, "shortest_edge")
    if not shortest or not _field(crop, "height"):
        raise BadInput(f"unsupported CLIP image processor size {size!r} / crop {crop!r}: expected shortest_edge and crop_size")
    resample = int(getattr(proc.resample, "value", proc.resample))
    return ImagePreprocessing(
        resize_shortest_edge=int(shortest),
        crop_size=(int(_field(crop, "height")), int(_field(crop, "width"))),
        resample=_PIL_RESAMPLE.get(resample, "bicubic"),
        rescale_factor=float(proc.rescale_factor),
        mean=tuple(float(x) for x in proc.image_mean),
        std=tuple(float(x) for x in proc.image_std),
    )


def load(path: Path, max_length: int | None = None) -> LoadedModel:
    from transformers import AutoTokenizer, CLIPModel

    CLIPImageProcessor = pil_image_processor_class()

    model = CLIPModel.from_pretrained(str(path), attn_implementation="eager", local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    try:
        processor = CLIPImageProcessor.from_pretrained(str(path))
    except OSError:  # a checkpoint without preprocessor_config.json: CLIP's standard preprocessing
        n = model.config.vision_config.image_size
        processor = CLIPImageProcessor(size={"shortest_edge": n}, crop_size={"height": n, "width": n})
    max_length = int(max_length or model.config.text_config.max_position_embeddings)
    dim = int(model.config.projection_dim)

    def text_fwd(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return l2(features(model.get_text_features(input_ids=ids, attention_mask=mask)))

    def image_fwd(pixels: torch.Tensor) -> torch.Tensor:
        return l2(features(model.get_image_features(pixel_values=pixels)))

    @torch.no_grad()
    def text_reference(texts) -> np.ndarray:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return text_fwd(enc["input_ids"], enc["attention_mask"]).numpy()

    @torch.no_grad()
    def image_reference(images) -> np.ndarray:
        pixels = processor(images=[load_image(x) for x in images], return_tensors="pt")["pixel_values"]
        return image_fwd(pixels).numpy()

    def save_image_processor(d: Path) -> None:
        processor.save_pretrained(str(d))

    source = {"kind": "clip", "path": str(path)}
    text = Tower(
        role="text",
        module=FnModule(model, text_fwd),
        input_names=["input_ids", "attention_mask"],
        dim=dim,
        preprocessing=TextPreprocessing(max_length=max_length),
        write_preprocess=lambda d: tokenizer.save_pretrained(str(d)),
        reference=text_reference,
        reference_name="transformers CLIPModel.get_text_features on the HF tokenizer's encoding",
        source=source,
    )
    image = Tower(
        role="image",
        module=FnModule(model, image_fwd),
        input_names=["pixel_values"],
        dim=dim,
        preprocessing=image_spec_from_processor(processor),
        write_preprocess=save_image_processor,
        reference=image_reference,
        reference_name="transformers CLIPModel.get_image_features on CLIPImageProcessor's pixels",
        source=source,
    )
    return LoadedModel("clip", path, {"text": text, "image": image})
