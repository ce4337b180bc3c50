"""A/B experiments: scenes -> layers -> arms (docs/architecture.md "Experiments"), validated and assigned.

Each layer picks one arm per request from a deterministic bucket: sha256(salt + user_id) mod
10,000, arms owning consecutive ranges in proportion to their traffic. Layers have their own salts,
so they are independent. An arm's fields override the scene defaults (layers applied in order).
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmsearch.errors import BadInput

BUCKETS = 10_000
SCENES = ("text2text", "text2image", "image2image")


class Source(BaseModel):
    """One recall path of a fused arm: dense vectors of an index (one per field and model) or BM25
    over an index's lexical build. Unset model/index fall back to the arm's."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    kind: Literal["dense", "bm25"]
    embed_model: str | None = None
    index: str | None = None
    fields: list[str] | None = Field(default=None, min_length=1, max_length=16)  # bm25: fields matched (default: all)
    recall_top_k: int = Field(default=100, ge=1, le=16384)
    weight: float = Field(default=1.0, gt=0, le=100)
    # the weight instead, for a query that names a title (the arm's title_field, fusion.names_title): a lemma
    # or a product name finds its document by its words, a description by its meaning (issue 34)
    weight_title: float | None = Field(default=None, ge=0, le=100)
    # the weight instead, for a short query (at most 4 words) with a rare term (in at most the arm's rare_df
    # documents of its first BM25 source's lexical build): a rare word pins its few documents down; it takes
    # precedence over weight_title
    weight_rare: float | None = Field(default=None, ge=0, le=100)

    @model_validator(mode="after")
    def _check(self) -> "Source":
        if self.kind == "bm25" and self.embed_model:
            raise ValueError(f"source {self.name}: a bm25 source has no embed_model")
        if self.kind == "dense" and self.fields:
            raise ValueError(f"source {self.name}: fields are for bm25 sources (a dense source searches its index's vectors)")
        return self


class Params(BaseModel):
    """What an arm may set (all optional); scene defaults fill the rest."""

    model_config = ConfigDict(extra="forbid")
    embed_model: str | None = None
    index: str | None = None
    recall_top_k: int | None = Field(default=None, ge=1, le=16384)
    top_k: int | None = Field(default=None, ge=1, le=1000)
    rerank: Literal["none", "cross_encoder"] | None = None
    rerank_model: str | None = None
    rerank_top_n: int | None = Field(default=None, ge=1, le=1000)
    filter: str | None = None
    search_ef: int | None = Field(default=None, ge=1, le=32768)  # HNSW search breadth (recall vs latency)
    sources: list[Source] | None = Field(default=None, min_length=1, max_length=8)  # fused recall; unset: dense only
    fusion: Literal["rrf", "weighted", "learned"] | None = None  # how sources are fused (default rrf)
    # learned fusion: the ranker (<rankers_dir>/<ranker>.json, `mmsearch train-ranker`) that orders the candidates
    ranker: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    rrf_k: int | None = Field(default=None, ge=1, le=10000)
    # the document field holding a document's titles (comma-separated names): a short query equal to one
    # of them, among the first hits of the sources, "names a title" and is fused with each source's weight_title
    title_field: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    # a query term in at most this many documents (of the first bm25 source's lexical build) makes the query
    # "rare": fused with each source's weight_rare (default RARE_DF)
    rare_df: int | None = Field(default=None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _check_sources(self) -> "Params":
        names = [s.name for s in self.sources or []]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate source names {names}")
        titled = [s.name for s in self.sources or [] if s.weight_title is not None]
        if titled and not self.title_field:
            raise ValueError(f"sources {titled} set weight_title: the arm needs title_field (where a document's titles are)")
        if self.fusion == "learned" and not (self.ranker and self.sources):
            raise ValueError("fusion learned needs sources and a ranker (trained by `mmsearch train-ranker`)")
        rare = [s.name for s in self.sources or [] if s.weight_rare is not None]
        if rare and not any(s.kind == "bm25" for s in self.sources or []):
            raise ValueError(f"sources {rare} set weight_rare: the arm needs a bm25 source (whose terms' document counts decide)")
        return self


class Arm(Params):
    name: str = Field(min_length=1, max_length=64)
    traffic: float = Field(ge=0, le=100)


class Layer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    salt: str = Field(min_length=1)
    arms: list[Arm] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "Layer":
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"layer {self.name}: duplicate arm names {names}")
        total = sum(a.traffic for a in self.arms)
        if abs(total - 100) > 1e-6:
            raise ValueError(f"layer {self.name}: arm traffic sums to {total:g}, not 100")
        return self

    def arm_for_bucket(self, bucket: int) -> Arm:
        edge = 0.0
        for arm in self.arms:
            edge += arm.traffic * BUCKETS / 100
            if bucket < edge:
                return arm
        return self.arms[-1]


class Scene(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layers: list[Layer] = Field(default_factory=list)
    defaults: Params = Field(default_factory=Params)

    @model_validator(mode="after")
    def _check(self) -> "Scene":
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate layer names {names}")
        # every possible arm combination must end with a model and an index
        for layer in self.layers:
            for arm in layer.arms:
                merged = self.defaults.model_copy(update=_set_fields(arm))
                missing = [f for f in ("embed_model", "index") if not getattr(merged, f) and not self._others_set(layer, f)]
                if missing:
                    raise ValueError(f"arm {layer.name}/{arm.name}: no {', '.join(missing)} in it or the defaults")
        if not self.layers and (not self.defaults.embed_model or not self.defaults.index):
            raise ValueError("a scene without layers needs embed_model and index in its defaults")
        return self

    def arm_params(self, name: str) -> Params | None:
        """The named arm's effective parameters (the scene's defaults under the arm's own), or None."""
        arm = next((a for lay in self.layers for a in lay.arms if a.name == name), None)
        return None if arm is None else self.defaults.model_copy(update=_set_fields(arm))

    def _others_set(self, layer: Layer, field: str) -> bool:
        return any(all(getattr(a, field) for a in other.arms) for other in self.layers if other is not layer)


class Experiments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenes: dict[str, Scene] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "Experiments":
        unknown = set(self.scenes) - set(SCENES)
        if unknown:
            raise ValueError(f"unknown scenes {sorted(unknown)} (known: {', '.join(SCENES)})")
        return self

    def indexes(self) -> list[str]:
        """Every index some arm of some scene may search (what must be loaded before traffic comes)."""
        params = [p for _, p in _scene_params(self)]
        names = {p.index for p in params} | {s.index for p in params for s in p.sources or [] if s.kind == "dense"}
        return sorted(n for n in names if n)

    def rankers(self) -> list[str]:
        """Every learned ranker some arm names (each must load for that arm's searches)."""
        return sorted({p.ranker for _, p in _scene_params(self) if p.ranker and p.fusion == "learned"})

    def lexical_indexes(self) -> dict[str, list[str]]:
        """Index -> the fields its bm25 sources match ([] = all): each needs a live lexical build.
        A source without an index uses its arm's, which the scene's defaults may give."""
        out: dict[str, set[str]] = {}
        for scene, p in _scene_params(self):
            for s in p.sources or []:
                index = s.index or p.index or scene.defaults.index
                if s.kind == "bm25" and index:
                    out.setdefault(index, set()).update(s.fields or [])
        return {k: sorted(v) for k, v in sorted(out.items())}


def _scene_params(exp: "Experiments") -> list[tuple[Scene, Params]]:
    """Every scene's defaults and arms, each with its scene."""
    return [(scene, p) for scene in exp.scenes.values() for p in [scene.defaults, *(a for lay in scene.layers for a in lay.arms)]]


def _set_fields(p: BaseModel) -> dict[str, Any]:
    """The params an arm sets, as objects (model_dump would turn sources into dicts that model_copy keeps)."""
    return {k: getattr(p, k) for k in Params.model_fields if getattr(p, k) is not None}


def parse_experiments(text: str | bytes, origin: str = "experiments") -> Experiments:
    """Parse and validate; any problem is a BadInput naming where it is."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BadInput(f"{origin}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise BadInput(f"{origin}: expected a mapping with 'scenes'")
    try:
        return Experiments.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or '<root>'}: {x['msg']}" for x in e.errors())
        raise BadInput(f"{origin}: {problems}") from e


def bucket(salt: str, user_id: str) -> int:
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(scene: Scene, user_id: str, force: dict[str, str] | None = None) -> tuple[dict[str, str], Params, dict[str, int]]:
    """(layer -> arm name, merged params, layer -> bucket). ``force`` overrides arms (debug); unknown names are errors."""
    force = dict(force or {})
    unknown_layers = set(force) - {layer.name for layer in scene.layers}
    if unknown_layers:
        raise BadInput(f"force: unknown layer {sorted(unknown_layers)[0]!r} (layers: {', '.join(layer.name for layer in scene.layers) or 'none'})")
    params = scene.defaults.model_copy()
    arms: dict[str, str] = {}
    buckets: dict[str, int] = {}
    for layer in scene.layers:
        b = bucket(layer.salt, user_id)
        buckets[layer.name] = b
        if layer.name in force:
            arm = next((a for a in layer.arms if a.name == force[layer.name]), None)
            if arm is None:
                raise BadInput(f"force: layer {layer.name!r} has no arm {force[layer.name]!r} "
                               f"(arms: {', '.join(a.name for a in layer.arms)})")
        else:
            arm = layer.arm_for_bucket(b)
        arms[layer.name] = arm.name
        params = params.model_copy(update=_set_fields(arm))
    return arms, params, buckets
