"""Client of the preprocess service: texts/images in, named numpy tensors out."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import numpy as np

from mmsearch.clients.grpc_errors import translate
from mmsearch.errors import Unavailable
from mmsearch.modelrepo.preprocessing import TextBatch
from mmsearch.modelrepo.tensors import from_proto
from mmsearch.protos import preprocess_pb2 as pb
from mmsearch.protos import preprocess_pb2_grpc as pb_grpc
from mmsearch.runtime.deadline import call_timeout
from mmsearch.runtime.net import grpc_serving


class PreprocessClient:
    def __init__(self, address: str, timeout_s: float = 5.0, max_message_mb: int = 64):
        self.address = address
        self.timeout_s = timeout_s
        size = max_message_mb * 1024 * 1024
        self._channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", size), ("grpc.max_send_message_length", size)])
        self._stub = pb_grpc.PreprocessStub(self._channel)

    def _call(self, rpc, request):
        try:
            return rpc(request, timeout=call_timeout(self.timeout_s))
        except grpc.RpcError as e:
            raise translate(e, f"preprocess service at {self.address}") from e
        except ValueError as e:  # "Cannot invoke RPC on closed channel!"
            raise Unavailable(f"preprocess service at {self.address}", str(e)) from e

    @staticmethod
    def _encode(texts: Sequence[str]) -> list[bytes]:
        return [t.encode("utf-8", "surrogatepass") if isinstance(t, str) else bytes(t) for t in texts]

    def tokenize(self, model: str, texts: Sequence[str], documents: Sequence[str] = (), bucket: bool = False) -> TextBatch:
        resp = self._call(self._stub.Tokenize, pb.TokenizeRequest(
            model=model, texts=self._encode(texts), documents=self._encode(documents), bucket=bucket))
        return TextBatch({t.name: from_proto(t) for t in resp.tensors}, np.asarray(resp.truncated, dtype=bool))

    def process_images(self, model: str, images: Sequence[bytes]) -> np.ndarray:
        resp = self._call(self._stub.ProcessImages, pb.ImagesRequest(model=model, images=list(images)))
        return from_proto(resp.tensors[0])

    def list_models(self) -> pb.ListModelsResponse:
        return self._call(self._stub.ListModels, pb.ListModelsRequest())

    def reload(self) -> pb.ListModelsResponse:
        return self._call(self._stub.Reload, pb.ReloadRequest())

    def serving(self, timeout_s: float = 1.0) -> bool:
        """The gRPC health service says SERVING."""
        return grpc_serving(self._channel, timeout_s)

    def close(self) -> None:
        self._channel.close()
