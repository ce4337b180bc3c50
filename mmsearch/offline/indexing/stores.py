"""Open the two stores for a tool run: configured URIs, or the embedded servers of the data dir.

No Milvus URI: the embedded Milvus standalone server of ``<data_dir>/milvus-standalone``; no
MongoDB URI: the secantusdb server of ``<data_dir>/mongo``. When `mmsearch up` (or another tool)
is already serving that data dir, its servers are used, so a build lands where the stack searches;
otherwise they are started for this run and stopped when it ends. Both are checked before any
work is done, so an unreachable store fails fast, naming itself.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from mmsearch.clients.documents import DocumentStore
from mmsearch.clients.vectors import IndexSpec, VectorStore
from mmsearch.runtime.embedded import embedded_store

log = logging.getLogger("mmsearch.index")


@contextlib.contextmanager
def open_stores(milvus_uri: str, mongo_uri: str, data_dir: Path, database: str = "mmsearch",
                spec: IndexSpec | None = None) -> Iterator[tuple[VectorStore, DocumentStore]]:
    with contextlib.ExitStack() as stack:
        milvus_uri = milvus_uri or stack.enter_context(embedded_store("milvus", data_dir))
        vectors = stack.enter_context(contextlib.closing(VectorStore(milvus_uri, spec=spec)))
        mongo_uri = mongo_uri or stack.enter_context(embedded_store("mongo", data_dir))
        docs = stack.enter_context(contextlib.closing(DocumentStore(mongo_uri, database)))
        yield vectors, docs
