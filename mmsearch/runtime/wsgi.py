"""The production WSGI server (waitress) every HTTP API of ours runs on, started in-process so
tests and the services share one factory: bind (port 0 picks a free port), serve on a thread, stop."""

from __future__ import annotations

import threading
from typing import Any

from mmsearch.errors import Unavailable


class WsgiServer:
    def __init__(self, app: Any, host: str, port: int, threads: int, name: str):
        from waitress.server import create_server

        self.app = app
        try:
            # connection_limit well above threads: waiting connections queue in waitress, not in the kernel
            self._server = create_server(app, host=host, port=port, threads=threads, connection_limit=max(100, threads * 8),
                                         channel_timeout=120, ident="mmsearch", asyncore_use_poll=True)
        except OSError as e:
            raise Unavailable(name, f"cannot bind {host}:{port}: {e.strerror}") from e
        self.port: int = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, name=f"{name}-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening, close open connections and end the worker threads (close() alone leaves both)."""
        from waitress import wasyncore

        self._server.close()
        self._server.task_dispatcher.shutdown()
        wasyncore.close_all(self._server._map)
        self._thread.join(timeout=5)
