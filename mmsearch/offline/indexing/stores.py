"""Open the two stores for a tool run: configured URIs, or the embedded defaults.

No Milvus URI: a Milvus Lite file under <data_dir>/milvus/. No MongoDB URI: a secantusdb server
started on a free 127.0.0.1 port over <data_dir>/mongo and stopped when the run ends. Both are
checked before any work is done, so an unreachable store fails fast, naming itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from mmsearch.clients.documents import DocumentStore
from mmsearch.clients.vectors import VectorStore
from mmsearch.embedded import SecantusServer, embedded_milvus_uri

log = logging.getLogger("mmsearch.index")


@contextlib.contextmanager
def open_stores(milvus_uri: str, mongo_uri: str, data_dir: Path, database: str = "mmsearch") -> Iterator[tuple[VectorStore, DocumentStore]]:
    server = None
    vectors = docs = None
    try:
        vectors = VectorStore(milvus_uri or embedded_milvus_uri(data_dir))
        if not mongo_uri:
            server = SecantusServer(data_dir / "mongo", log_file=data_dir / "logs" / "secantusdb-build.log")
            mongo_uri = server.uri
            log.info("started embedded secantusdb on %s (data %s)", mongo_uri, data_dir / "mongo")
        docs = DocumentStore(mongo_uri, database)
        yield vectors, docs
    finally:
        if docs is not None:
            docs.close()
        if vectors is not None:
            vectors.close()
        if server is not None:
            server.stop()
