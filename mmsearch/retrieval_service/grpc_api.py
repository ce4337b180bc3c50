"""gRPC front end: Search / Click mirroring the HTTP API, plus the health service."""

from __future__ import annotations

import logging

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
