"""The one inference client the project uses to reach Triton (gRPC by default, HTTP as an option).

It knows each model's max_batch_size (read once from the server) and splits larger inputs into
chunks, applies a timeout to every call, and turns tritonclient's exceptions into mmsearch errors:
a server that is down is ``Unavailable("triton at host:port")``, an unknown model ``NotFound``, a
request Triton rejects ``BadInput`` with Triton's own message.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Mapping
from typing import Any, Literal

import grpc
import numpy as np

from mmsearch.errors import BadInput, DeadlineExceeded, Internal, MMSearchError, NotFound, Unavailable, from_grpc_status, from_http_status
from mmsearch.runtime.deadline import call_timeout

_NP_TO_TRITON = {np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32", np.dtype(np.float32): "FP32",
                 np.dtype(np.float16): "FP16"}


def _translate(e: Exception, url: str, model: str | None) -> MMSearchError:
    """Map a tritonclient exception onto our hierarchy by its status alone: gRPC errors carry
    "StatusCode.<NAME>", HTTP errors the response's status code."""
    status = str(getattr(e, "status", lambda: "")() or "")
    msg = (e.message() if hasattr(e, "message") and callable(e.message) else str(e)) or str(e)
    where = f"triton at {url}"
    if status.startswith("StatusCode.") and status[len("StatusCode."):] in grpc.StatusCode.__members__:
        err = from_grpc_status(grpc.StatusCode[status[len("StatusCode."):]], msg, where)
    elif status.isdigit():
        err = from_http_status(int(status), msg, where)
    else:  # raised by the client library itself, with no answer from the server
        return Internal(f"{where}: {msg}")
    if isinstance(err, NotFound):
        return NotFound(f"model {model!r} not found on {where}: {msg}")
    if isinstance(err, BadInput):
        return BadInput(f"{model}: {msg}")
    return err


PROVIDER_METRIC = "mmsearch_model_execution_provider"  # serving/triton_model.py reports it from the live session
_PROVIDER_LINE = re.compile(PROVIDER_METRIC + r"\{([^}]*)\}\s+([0-9.eE+-]+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def live_providers(metrics_text: str) -> dict[str, str]:
    """model -> the execution provider its live ONNX Runtime session runs on, from Triton's /metrics text
    (every instance of a model reports; a GPU instance wins over a CPU one)."""
    out: dict[str, str] = {}
    for m in _PROVIDER_LINE.finditer(metrics_text):
        labels = dict(_LABEL.findall(m.group(1)))
        model, provider = labels.get("model"), labels.get("provider")
        if model and provider and float(m.group(2)) > 0 and out.get(model) != "CUDAExecutionProvider":
            out[model] = provider
    return out


class InferenceClient:
    def __init__(self, url: str, protocol: Literal["grpc", "http"] = "grpc", timeout_s: float = 10.0,
                 metrics_url: str | None = None):
        self.metrics_url = metrics_url  # Triton's /metrics: the providers the models' live sessions run on
        if protocol not in ("grpc", "http"):
            raise BadInput(f"protocol must be grpc or http, got {protocol!r}")
        self.url = url
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._max_batch: dict[str, int] = {}
        self._lock = threading.Lock()
        if protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc
        self._tc = tc
        try:
            if protocol == "grpc":
                self._client = tc.InferenceServerClient(url)
            else:
                self._client = tc.InferenceServerClient(url, connection_timeout=timeout_s, network_timeout=timeout_s)
        except Exception as e:  # malformed URL and the like
            raise BadInput(f"cannot create a triton {protocol} client for {url!r}: {e}") from e

    def _call(self, fn, model: str | None, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return fn(*args, **kwargs)
        except InferenceServerException as e:
            raise _translate(e, self.url, model) from e
        except TimeoutError as e:  # HTTP client: no answer within network_timeout
            raise DeadlineExceeded(f"triton at {self.url}: {e}") from e
        except (ConnectionError, OSError) as e:
            raise Unavailable(f"triton at {self.url}", str(e)) from e

    def _timeout_kw(self) -> dict:
        return {"client_timeout": call_timeout(self.timeout_s)} if self.protocol == "grpc" else {}

    def server_ready(self) -> bool:
        try:
            return bool(self._call(self._client.is_server_ready, None))
        except MMSearchError:
            return False

    def model_ready(self, model: str) -> bool:
        try:
            return bool(self._call(self._client.is_model_ready, model, model))
        except MMSearchError:
            return False

    def models(self) -> list[dict[str, Any]]:
        """The served models: name, state, and where they run: ``provider`` is the execution provider the
        model's live ONNX Runtime session runs on (Triton's metrics, ``provider_source`` "session"), or
        with no metrics to read, what its config asks (``provider_source`` "config"); a GPU asked for but
        absent from the live session fails the load (serving/triton_model.py), so what is READY runs as
        asked. ``instance_kind`` is the config's."""
        kw = {"as_json": True} if self.protocol == "grpc" else {}
        index = self._call(self._client.get_model_repository_index, None, **kw, **self._timeout_kw())
        rows = index.get("models", []) if isinstance(index, dict) else index
        live = self._live_providers()
        out = []
        for m in rows:
            name, state = m.get("name", ""), m.get("state", "")
            row: dict[str, Any] = {"name": name, "version": m.get("version", ""), "state": state}
            if state == "READY":
                cfg = self._call(self._client.get_model_config, name, name, **kw, **self._timeout_kw())
                cfg = cfg.get("config", cfg)
                params = cfg.get("parameters", {})
                provider = params.get("execution_provider", {}).get("string_value", "") or "cpu"
                kinds = sorted({str(g.get("kind", "KIND_CPU")) for g in cfg.get("instance_group", [])}) or ["KIND_CPU"]
                asked = {"cuda": "CUDAExecutionProvider"}.get(provider, "CPUExecutionProvider")
                # the live session's provider where Triton's metrics say it; else what the config asks
                row.update(provider=live.get(name, asked), provider_source="session" if name in live else "config",
                           instance_kind=kinds, max_batch_size=int(cfg.get("max_batch_size", 0) or 0))
            out.append(row)
        return out

    def _live_providers(self) -> dict[str, str]:
        """From Triton's /metrics (short timeout); empty when there is no metrics URL or no answer."""
        if not self.metrics_url:
            return {}
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=min(2.0, self.timeout_s)) as r:
                return live_providers(r.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return {}

    def max_batch_size(self, model: str) -> int:
        with self._lock:
            if model not in self._max_batch:
                kw = {"as_json": True} if self.protocol == "grpc" else {}
                cfg = self._call(self._client.get_model_config, model, model, **kw, **self._timeout_kw())
                cfg = cfg.get("config", cfg)
                self._max_batch[model] = int(cfg.get("max_batch_size", 0) or 0)
            return self._max_batch[model]

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], output: str | None = None) -> np.ndarray:
        """Run ``model`` on batch-major ``inputs``; return its (first or named) output, chunked by max_batch_size."""
        if not inputs:
            raise BadInput(f"{model}: no inputs given")
        arrays = {k: np.ascontiguousarray(v) for k, v in inputs.items()}
        sizes = {len(a) for a in arrays.values()}
        if len(sizes) != 1:
            raise BadInput(f"{model}: inputs disagree on batch size {sorted(sizes)}")
        n = sizes.pop()
        if n == 0:
            raise BadInput(f"{model}: empty batch")
        step = self.max_batch_size(model) or n
        parts = [self._infer_once(model, {k: a[i : i + step] for k, a in arrays.items()}, output) for i in range(0, n, step)]
        return np.concatenate(parts)

    def _infer_once(self, model: str, arrays: Mapping[str, np.ndarray], output: str | None) -> np.ndarray:
        tc = self._tc
        reqs = []
        for name, a in arrays.items():
            dt = _NP_TO_TRITON.get(a.dtype)
            if dt is None:
                raise BadInput(f"{model}: input {name!r} has unsupported dtype {a.dtype}")
            t = tc.InferInput(name, list(a.shape), dt)
            t.set_data_from_numpy(a) if self.protocol == "grpc" else t.set_data_from_numpy(a, binary_data=True)
            reqs.append(t)
        outs = None
        if output:
            outs = [tc.InferRequestedOutput(output)] if self.protocol == "grpc" else [tc.InferRequestedOutput(output, binary_data=True)]
        res = self._call(self._client.infer, model, model, reqs, outputs=outs, **self._timeout_kw())
        if output is None:
            resp = res.get_response(as_json=True) if self.protocol == "grpc" else res.get_response()
            output = resp["outputs"][0]["name"]
        arr = res.as_numpy(output)
        if arr is None:
            raise Internal(f"triton at {self.url}: {model} returned no output {output!r}")
        return arr

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a dead connection is not an error worth raising
            pass
