"""gRPC front end: Search / Click and the documents API (PutDocuments, DeleteDocuments, GetDocument,
ListIndexes) mirroring the HTTP API, plus the health service. Documents and answers of the documents
API travel as the HTTP API's JSON, validated by the same code."""

from __future__ import annotations

import json
import logging
from typing import Any

from mmsearch.errors import BadInput
from mmsearch.protos import search_pb2 as pb
from mmsearch.protos import search_pb2_grpc as pb_grpc
from mmsearch.retrieval_service.auth import key_from
from mmsearch.retrieval_service.pipeline import SearchService
from mmsearch.retrieval_service.request import from_proto
from mmsearch.retrieval_service.response import json_bytes
from mmsearch.runtime.grpc_edge import grpc_edge
from mmsearch.runtime.observability import RpcMetrics

log = logging.getLogger("mmsearch.retrieval")


_edge = grpc_edge(log)


class SearchServicer(pb_grpc.SearchServicer):
    def __init__(self, service: SearchService):
        self.service = service
        self.rpc_metrics: RpcMetrics | None = None

    def _authenticate(self, context) -> None:
        self.service.auth.check(key_from(dict(context.invocation_metadata() or ())))

    @_edge
    def Search(self, request, context):
        self._authenticate(context)
        # the caller's gRPC deadline, when it set one shorter than the service's own, bounds the queue wait too
        out = self.service.search(from_proto(request), self.service.deadline(context.time_remaining()))
        return pb.SearchResponse(
            request_id=out.request_id, user_id=out.user_id, experiment=out.experiment, timings_ms=out.timings_ms,
            results=[pb.Result(id=h.id, score=h.score, doc_json=json_bytes(h.doc).decode(), score_type=h.score_type,
                               sources=list(h.sources)) for h in out.hits],
            has_more=out.has_more, offset=out.offset, config_version=out.config_version,
        )

    @_edge
    def Click(self, request, context):
        self._authenticate(context)
        self.service.click(request.request_id, request.doc_id, request.user_id or None)
        return pb.ClickResponse()

    # ---------------------------------------------------------------- the documents API
    def _authenticate_write(self, context) -> None:
        self.service.auth.check_write(key_from(dict(context.invocation_metadata() or ())))

    @_edge
    def PutDocuments(self, request, context):
        self._authenticate_write(context)
        docs = [_json(d, f"documents_json[{i}]") for i, d in enumerate(request.documents_json)]
        body: dict[str, Any] = {"documents": docs, **({"op_id": request.op_id} if request.op_id else {})}
        with self.service.documents.reconnecting():
            out = self.service.documents.put(request.index, body)
        return pb.WriteResponse(result_json=json.dumps(out.model_dump()))

    @_edge
    def DeleteDocuments(self, request, context):
        self._authenticate_write(context)
        body: dict[str, Any] = {"ids": list(request.ids)} if request.ids else {}
        if request.filter:
            body["filter"] = _json(request.filter, "filter")
        if request.op_id:
            body["op_id"] = request.op_id
        with self.service.documents.reconnecting():
            out = self.service.documents.delete(request.index, body)
        return pb.WriteResponse(result_json=json.dumps(out.model_dump()))

    @_edge
    def GetDocument(self, request, context):
        self._authenticate(context)
        with self.service.documents.reconnecting():
            doc = self.service.documents.get(request.index, request.id)
        return pb.GetDocumentResponse(doc_json=json_bytes(doc).decode())

    @_edge
    def ListIndexes(self, request, context):
        self._authenticate(context)
        docs = self.service.documents
        with docs.reconnecting():
            infos = [docs.index_info(request.index)] if request.index else docs.indexes()
        return pb.ListIndexesResponse(index_json=[json.dumps(i, default=str) for i in infos])


def _json(raw: str, where: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as e:
        raise BadInput(f"{where}: not valid JSON ({e})") from e
