"""Launch and stop the tritonserver binary bundled by nvidia-pytriton over a model repository.

    server = start_triton(TritonOptions(repo=Path("model_repository"), http_port=0, ...))
    ...
    server.stop()

Ports of 0 are replaced by free ones. Everything Triton needs (backends folder with the python
stub for this interpreter, the shadow repository, the LD_LIBRARY_PATH fix of docs/environment.md) is set up
here, so the user runs one command. The server runs in its own process group so stop() leaves no
tritonserver or python-stub process behind.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.errors import BadInput, MMSearchError, Unavailable
from mmsearch.modelrepo.repo_watch import RepositoryWatcher
from mmsearch.modelrepo.runtime_needs import ModelRefused
from mmsearch.runtime.net import free_port, http_ok
from mmsearch.runtime.supervisor import ChildProcess, retry_port_clash
from mmsearch.serving.repository import discover, sync_all, sync_model

log = logging.getLogger("mmsearch.serving")


@dataclass
class TritonOptions:
    repo: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    cpu_threads: int = 1
    use_cuda: bool = False
    workdir: Path | None = None  # default: a temporary folder removed on stop
    log_file: Path | None = None  # default: <workdir>/tritonserver.log
    startup_timeout_s: float = 120.0
    poll_s: float = 0.0  # > 0: load models exported into the repository later (repo_watch), without a restart
    extra_args: list[str] = field(default_factory=list)


def _pytriton_dist() -> Path:
    try:
        import pytriton
    except ImportError as e:
        raise Unavailable("tritonserver", "nvidia-pytriton is not installed (it bundles tritonserver)") from e
    return Path(pytriton.__file__).parent / "tritonserver"


def _libs_path() -> Path:
    from pytriton.utils.distribution import get_libs_path

    return Path(get_libs_path())


def prepare_backends(workdir: Path) -> Path:
    """backends/python with the stub built for this interpreter's Python version."""
    dist = _pytriton_dist()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise Unavailable("tritonserver", f"no python backend stub for Python {version} in {dist}")
    backends = workdir / "backends"
    py = backends / "python"
    py.mkdir(parents=True, exist_ok=True)
    for f in (dist / "backends" / "python").iterdir():
        if f.is_file():
            target = py / f.name
            if not target.exists():
                target.symlink_to(f)
    target = py / "triton_python_backend_stub"
    if not target.exists():
        target.symlink_to(stub)
    return backends


def server_env() -> dict[str, str]:
    """The stub must load this interpreter's libpython first (docs/environment.md), and import our packages."""
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, str(_libs_path()), env.get("LD_LIBRARY_PATH", "")) if p)
    site = [p for p in sys.path if p.endswith("site-packages")]
    env["PYTHONPATH"] = ":".join(site + [env.get("PYTHONPATH", "")]).strip(":")
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class TritonServer:
    def __init__(self, opts: TritonOptions, child: ChildProcess, workdir: Path, shadow: Path, own_workdir: bool,
                 refused: dict[str, str] | None = None):
        self.opts = opts
        self.refused: dict[str, str] = dict(refused or {})  # models this ONNX Runtime cannot run: name -> why (not served)
        self.child = child
        self.workdir = workdir
        self.shadow = shadow
        self._own_workdir = own_workdir
        self.watcher = RepositoryWatcher(opts.repo, self.load_all, opts.poll_s).start() if opts.poll_s > 0 else None

    def load_all(self, names: list[str]) -> None:
        """load() each model; the ones that failed are named together in one BadInput, after the rest loaded."""
        failed = []
        for name in names:
            try:
                self.load(name)
                log.info("loaded %s", name)
            except MMSearchError as e:
                failed.append(f"{name}: {e.message}")
        if failed:
            raise BadInput("; ".join(failed))

    @property
    def proc(self) -> subprocess.Popen:
        return self.child.proc

    @property
    def http_url(self) -> str:
        return f"{self.opts.host}:{self.opts.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.opts.host}:{self.opts.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.opts.host}:{self.opts.metrics_port}/metrics"

    @property
    def log_file(self) -> Path:
        return self.opts.log_file or self.workdir / "tritonserver.log"

    def alive(self) -> bool:
        return self.child.alive()

    def ready(self) -> bool:
        return self.child.ready()

    def load(self, name: str) -> None:
        """Load a new model, or reload one whose export changed (new version, new weights);
        models already served keep serving throughout."""
        import tritonclient.http as th
        from tritonclient.utils import InferenceServerException

        try:
            sync_model(self.opts.repo, self.shadow, name, self.opts.cpu_threads, self.opts.use_cuda)
        except ModelRefused as e:
            self.refused[name] = e.message
            log.error("%s", e.message)
            raise
        self.refused.pop(name, None)
        try:
            th.InferenceServerClient(self.http_url, network_timeout=300).load_model(name)
        except InferenceServerException as e:
            raise BadInput(f"triton could not load model {name!r}: {e.message()}") from e

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the process group (tritonserver and its python stubs), SIGKILL after timeout."""
        if self.watcher is not None:
            self.watcher.stop()
        code = self.child.stop(timeout)
        if self._own_workdir:
            import shutil

            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def check_cuda() -> None:
    """A GPU that is asked for must be there: never a silent CPU fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise Unavailable("cuda", f"--cuda asked for the GPU, but this onnxruntime has no CUDAExecutionProvider "
                                  f"(available: {', '.join(available)}); install onnxruntime-gpu on a machine with CUDA")


def start_triton(opts: TritonOptions) -> TritonServer:
    repo = Path(opts.repo)
    if opts.use_cuda:
        check_cuda()
    names = discover(repo)
    if not names:
        raise BadInput(f"model repository {repo} holds no exported model (run `mmsearch export` first)")
    pick = [attr for attr in ("http_port", "grpc_port", "metrics_port") if getattr(opts, attr) == 0]
    own = opts.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="mmsearch-triton-")) if opts.workdir is None else Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    shadow = workdir / "repository"
    names, refused = sync_all(repo, shadow, opts.cpu_threads, opts.use_cuda)
    for why in refused.values():
        log.error("%s", why)
    if not names:
        if own:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        raise BadInput(f"model repository {repo}: every model was refused: {'; '.join(refused.values())}")
    backends = prepare_backends(workdir)
    try:
        # retried only when we picked every port: a clash on a port the user gave is theirs to see
        child = retry_port_clash(lambda: _start_child(opts, pick, shadow, backends, workdir, names), retry=len(pick) == 3)
    except Unavailable:
        if own:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        raise
    return TritonServer(opts, child, workdir, shadow, own, refused)


def _start_child(opts: TritonOptions, pick: list[str], shadow: Path, backends: Path, workdir: Path,
                 names: list[str]) -> ChildProcess:
    for attr in pick:  # ports asked as 0: fresh free ones at each try (tritonserver cannot report what it bound)
        setattr(opts, attr, free_port(opts.host))
    binary = _pytriton_dist() / "bin" / "tritonserver"
    shm_prefix = f"mmsearch_{uuid.uuid4().hex[:8]}_"
    cmd = [
        str(binary), "--model-repository", str(shadow), "--backend-directory", str(backends),
        "--http-address", opts.host, "--http-port", str(opts.http_port),
        "--grpc-address", opts.host, "--grpc-port", str(opts.grpc_port),
        "--metrics-address", opts.host, "--metrics-port", str(opts.metrics_port), "--allow-metrics", "true",
        "--model-control-mode", "explicit", "--load-model", "*", "--strict-readiness", "true",
        "--exit-on-error", "true", "--exit-timeout-secs", "10", "--log-verbose", "0",
        "--backend-config", f"python,shm-region-prefix-name={shm_prefix}",
        "--backend-config", "python,shm-default-byte-size=4194304",
        *opts.extra_args,
    ]
    log_path = opts.log_file or workdir / "tritonserver.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting tritonserver: http %s:%d grpc %d metrics %d, %d model(s): %s",
             opts.host, opts.http_port, opts.grpc_port, opts.metrics_port, len(names), ", ".join(names))
    return ChildProcess("tritonserver", cmd, log_path, lambda: http_ok(f"http://{opts.host}:{opts.http_port}/v2/health/ready"),
                        startup_timeout_s=opts.startup_timeout_s, env=server_env(), stop_timeout_s=20)
