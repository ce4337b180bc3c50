from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Query(_message.Message):
    __slots__ = ("text", "image")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("scene", "query", "user_id", "top_k", "force", "filter", "offset", "fields", "consistency")
    class ForceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SCENE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    scene: str
    query: Query
    user_id: str
    top_k: int
    force: _containers.ScalarMap[str, str]
    filter: str
    offset: int
    fields: _containers.RepeatedScalarFieldContainer[str]
    consistency: str
    def __init__(self, scene: _Optional[str] = ..., query: _Optional[_Union[Query, _Mapping]] = ..., user_id: _Optional[str] = ..., top_k: _Optional[int] = ..., force: _Optional[_Mapping[str, str]] = ..., filter: _Optional[str] = ..., offset: _Optional[int] = ..., fields: _Optional[_Iterable[str]] = ..., consistency: _Optional[str] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("id", "score", "doc_json", "score_type", "sources")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DOC_JSON_FIELD_NUMBER: _ClassVar[int]
    SCORE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    doc_json: str
    score_type: str
    sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., doc_json: _Optional[str] = ..., score_type: _Optional[str] = ..., sources: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("request_id", "results", "experiment", "timings_ms", "user_id", "has_more", "offset", "config_version")
    class ExperimentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    HAS_MORE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    results: _containers.RepeatedCompositeFieldContainer[Result]
    experiment: _containers.ScalarMap[str, str]
    timings_ms: _containers.ScalarMap[str, float]
    user_id: str
    has_more: bool
    offset: int
    config_version: str
    def __init__(self, request_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ..., experiment: _Optional[_Mapping[str, str]] = ..., timings_ms: _Optional[_Mapping[str, float]] = ..., user_id: _Optional[str] = ..., has_more: _Optional[bool] = ..., offset: _Optional[int] = ..., config_version: _Optional[str] = ...) -> None: ...

class ClickRequest(_message.Message):
    __slots__ = ("request_id", "doc_id", "user_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DOC_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    doc_id: str
    user_id: str
    def __init__(self, request_id: _Optional[str] = ..., doc_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class ClickResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PutDocumentsRequest(_message.Message):
    __slots__ = ("index", "documents_json", "op_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    index: str
    documents_json: _containers.RepeatedScalarFieldContainer[str]
    op_id: str
    def __init__(self, index: _Optional[str] = ..., documents_json: _Optional[_Iterable[str]] = ..., op_id: _Optional[str] = ...) -> None: ...

class DeleteDocumentsRequest(_message.Message):
    __slots__ = ("index", "ids", "filter", "op_id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    OP_ID_FIELD_NUMBER: _ClassVar[int]
    index: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    filter: str
    op_id: str
    def __init__(self, index: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., filter: _Optional[str] = ..., op_id: _Optional[str] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("result_json",)
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    result_json: str
    def __init__(self, result_json: _Optional[str] = ...) -> None: ...

class GetDocumentRequest(_message.Message):
    __slots__ = ("index", "id")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    index: str
    id: str
    def __init__(self, index: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class GetDocumentResponse(_message.Message):
    __slots__ = ("doc_json",)
    DOC_JSON_FIELD_NUMBER: _ClassVar[int]
    doc_json: str
    def __init__(self, doc_json: _Optional[str] = ...) -> None: ...

class ListIndexesRequest(_message.Message):
    __slots__ = ("index",)
    INDEX_FIELD_NUMBER: _ClassVar[int]
    index: str
    def __init__(self, index: _Optional[str] = ...) -> None: ...

class ListIndexesResponse(_message.Message):
    __slots__ = ("index_json",)
    INDEX_JSON_FIELD_NUMBER: _ClassVar[int]
    index_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, index_json: _Optional[_Iterable[str]] = ...) -> None: ...
