"""The embedded secantusdb server, run as ``python -m mmsearch.runtime.secantusd`` with ``secantusd-py``'s own
arguments, its TTL sweeper off.

Why: each minute that sweeper scans every document of a collection with a TTL index, in Python, holding
the store's global lock; at 340k query-log entries every search stalled 5 s once a minute (the searches'
document reads timed out). ``secantusd-py`` 0.7.0b3 reads ``storage.ttl_sweep_seconds`` from its config
file but never passes it to the server, hence this wrapper. The query log deletes its own expired
entries (retrieval_service.querylog); a real MongoDB keeps its TTL index working as usual.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


def main(argv: list[str] | None = None) -> int:
    try:
        from secantus import cli, server
    except ImportError as e:
        from mmsearch.runtime.embedded import missing_extra

        raise missing_extra("secantusdb", "secantusdb") from e

    def without_sweeper(*args: Any, **kwargs: Any) -> Any:
        made = server.SecantusDBServer(*args, **{**kwargs, "ttl_sweep_seconds": 0})
        if getattr(getattr(made, "storage", None), "_ttl_thread", None) is not None:  # another secantusdb version
            logging.getLogger("mmsearch.runtime.secantusd").warning("secantusdb's TTL sweeper is running despite ttl_sweep_seconds=0")
        return made

    cli.SecantusDBServer = without_sweeper
    return int(cli.main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
