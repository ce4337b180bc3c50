"""gRPC servicer: validates requests at the edge and maps mmsearch errors to gRPC statuses once."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from mmsearch.config import PreprocessConfig
from mmsearch.errors import BadInput, DeadlineExceeded
from mmsearch.grpc_edge import grpc_edge
from mmsearch.manifest import ImagePreprocessing
from mmsearch.observability import RpcMetrics
from mmsearch.preprocess_service.registry import Registry
from mmsearch.protos import preprocess_pb2 as pb
from mmsearch.protos import preprocess_pb2_grpc as pb_grpc
from mmsearch.tensors import to_proto

log = logging.getLogger("mmsearch.preprocess")


_edge = grpc_edge(log)


def _check_deadline(context: grpc.ServicerContext, stage: str) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        raise DeadlineExceeded(f"deadline exceeded during {stage}")


class PreprocessServicer(pb_grpc.PreprocessServicer):
    def __init__(self, registry: Registry, cfg: PreprocessConfig):
        self.registry = registry
        self.cfg = cfg
        self.rpc_metrics: RpcMetrics | None = None  # counted by grpc_edge when the server exposes /metrics
        self.on_reload: Callable[[], None] | None = None  # the server re-derives its health from the registry

    def _decode_texts(self, items, field: str) -> list[str]:
        out = []
        for i, raw in enumerate(items):
            if len(raw) > self.cfg.max_text_bytes:
                raise BadInput(f"{field}[{i}]: {len(raw):,} bytes, over the {self.cfg.max_text_bytes:,}-byte limit")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadInput(f"{field}[{i}]: invalid UTF-8 at byte {e.start}") from e
            if not text.strip():
                raise BadInput(f"{field}[{i}]: empty")
            out.append(text)
        return out

    def _check_batch(self, n: int, what: str) -> None:
        if n == 0:
            raise BadInput(f"empty batch: no {what} given")
        if n > self.cfg.max_batch:
            raise BadInput(f"{n} {what} in one request, over the limit of {self.cfg.max_batch}")

    @_edge
    def Tokenize(self, request: pb.TokenizeRequest, context) -> pb.PreprocessResponse:
        entry = self.registry.get(request.model)
        if entry.text is None:
            raise BadInput(f"model {request.model!r} is an {entry.manifest.kind}: send images to ProcessImages")
        self._check_batch(len(request.texts), "texts")
        texts = self._decode_texts(request.texts, "texts")
        buckets = self.cfg.length_buckets if request.bucket else None
        if entry.text.pair:
            if len(request.documents) != len(request.texts):
                raise BadInput(f"model {request.model!r} scores pairs: {len(request.texts)} texts but "
                               f"{len(request.documents)} documents")
            batch = entry.text.pairs(texts, self._decode_texts(request.documents, "documents"), buckets)
        else:
            if request.documents:
                raise BadInput(f"model {request.model!r} is a {entry.manifest.kind}: documents are for cross-encoders")
            batch = entry.text(texts, buckets)
        _check_deadline(context, "tokenization")
        return pb.PreprocessResponse(tensors=[to_proto(k, v) for k, v in batch.tensors.items()],
                                     truncated=batch.truncated.tolist())

    @_edge
    def ProcessImages(self, request: pb.ImagesRequest, context) -> pb.PreprocessResponse:
        entry = self.registry.get(request.model)
        if entry.image is None:
            raise BadInput(f"model {request.model!r} is a {entry.manifest.kind}: send text to Tokenize")
        self._check_batch(len(request.images), "images")
        arrays = []
        for i, data in enumerate(request.images):
            if len(data) > self.cfg.max_image_bytes:
                raise BadInput(f"images[{i}]: {len(data):,} bytes, over the {self.cfg.max_image_bytes:,}-byte limit")
            arrays.append(entry.image.one(bytes(data), f"images[{i}]"))
            _check_deadline(context, f"images[{i}]")
        import numpy as np

        return pb.PreprocessResponse(tensors=[to_proto("pixel_values", np.stack(arrays))])

    def _list(self) -> pb.ListModelsResponse:
        models = []
        for name, e in sorted(self.registry.entries().items()):
            m = e.manifest
            info = pb.ModelInfo(name=name, kind=m.kind, inputs=m.input_names, embedding_dim=m.embedding_dim or 0)
            if e.text is not None:
                info.max_length = e.text.max_length
            elif isinstance(m.preprocessing, ImagePreprocessing):
                info.image_size.extend(m.preprocessing.crop_size)
            models.append(info)
        return pb.ListModelsResponse(models=models, errors=self.registry.errors)

    @_edge
    def ListModels(self, request, context) -> pb.ListModelsResponse:
        return self._list()

    @_edge
    def Reload(self, request, context) -> pb.ListModelsResponse:
        self.registry.reload()
        if self.on_reload is not None:
            self.on_reload()
        return self._list()
