"""gRPC servicer: validates requests at the edge and maps mmsearch errors to gRPC statuses once."""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from mmsearch.config import PreprocessConfig
from mmsearch.errors import BadInput, DeadlineExceeded
from mmsearch.modelrepo.manifest import ImagePreprocessing
from mmsearch.modelrepo.preprocess_registry import Registry, check_batch, tokenize
from mmsearch.modelrepo.tensors import to_proto
from mmsearch.protos import preprocess_pb2 as pb
from mmsearch.protos import preprocess_pb2_grpc as pb_grpc
from mmsearch.runtime.grpc_edge import grpc_edge
from mmsearch.runtime.observability import RpcMetrics

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

    @_edge
    def Tokenize(self, request: pb.TokenizeRequest, context) -> pb.PreprocessResponse:
        batch = tokenize(self.registry.get(request.model), request.model, request.texts, request.documents,
                         request.bucket, self.cfg)
        _check_deadline(context, "tokenization")
        return pb.PreprocessResponse(tensors=[to_proto(k, v) for k, v in batch.tensors.items()],
                                     truncated=batch.truncated.tolist())

    @_edge
    def ProcessImages(self, request: pb.ImagesRequest, context) -> pb.PreprocessResponse:
        entry = self.registry.get(request.model)
        if entry.image is None:
            raise BadInput(f"model {request.model!r} is a {entry.manifest.kind}: send text to Tokenize")
        check_batch(len(request.images), "images", self.cfg)
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
