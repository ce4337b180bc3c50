"""Typed configuration, read once at start: defaults <- YAML file <- ``MMSEARCH_*`` environment.

Environment names are derived from the model: ``MMSEARCH_<SECTION>_<FIELD>`` (for example
``MMSEARCH_MILVUS_URI``, ``MMSEARCH_SERVING_HTTP_PORT``) and ``MMSEARCH_<FIELD>`` for top-level
fields. ``MMSEARCH_CONFIG`` names the YAML file. An unknown ``MMSEARCH_*`` variable or YAML key is
an error, so a typo never silently falls back to a default. This is the only module that reads
``os.environ``; everything else receives a ``Config``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmsearch.errors import BadInput, ConfigError

# printable ASCII without spaces: what an HTTP header value (an API key) or a request path carries as it is
HTTP_TOKEN = re.compile(r"[!-~]+")

ENV_PREFIX = "MMSEARCH_"
CONFIG_FILE_ENV = "MMSEARCH_CONFIG"

KEY_CHARS = "an API key is printable ASCII without spaces (what an HTTP header carries as it is)"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Endpoint(_Section):
    host: str = "127.0.0.1"


class ServingConfig(Endpoint):
    """Triton Inference Server (serving tier)."""

    http_port: int = Field(8000, ge=0, le=65535)
    grpc_port: int = Field(8001, ge=0, le=65535)
    metrics_port: int = Field(8002, ge=0, le=65535)
    url: str = ""  # "host:port" of a remote Triton gRPC endpoint; empty = the local one
    cpu_threads: int = Field(1, ge=0)
    timeout_s: float = Field(10.0, gt=0)


class PreprocessConfig(Endpoint):
    port: int = Field(60051, ge=0, le=65535)
    metrics_port: int = Field(60052, ge=0, le=65535)  # Prometheus /metrics over HTTP; 0: off
    max_message_mb: int = Field(64, gt=0, le=2047)
    max_workers: int = Field(8, ge=1, le=256)
    max_batch: int = Field(256, ge=1)  # items per request
    max_text_bytes: int = Field(65536, ge=16)  # a query longer than this is refused, not silently cut
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024)
    length_buckets: list[int] = Field(default_factory=lambda: [16, 32, 64, 128, 256, 512])
    timeout_s: float = Field(5.0, gt=0)  # client-side deadline


class RetrievalConfig(Endpoint):
    http_port: int = Field(8080, ge=0, le=65535)
    grpc_port: int = Field(50051, ge=0, le=65535)
    request_timeout_s: float = Field(2.0, gt=0, le=120)  # whole-request deadline
    stage_timeout_s: float = Field(1.0, gt=0, le=120)  # each dependency call
    max_body_mb: float = Field(8.0, gt=0, le=64)
    query_log: bool = True
    query_log_ttl_days: float = Field(30.0, ge=0, le=36500)  # entries expire (MongoDB TTL index); 0 = kept forever
    query_log_flush_s: float = Field(0.5, ge=0, le=10)  # entries are written together at most this often (0: at once)
    query_log_sweep_s: float = Field(600.0, ge=1, le=86400)  # how often expired entries are deleted (with a TTL)
    workers: int = Field(16, ge=1, le=512)  # gRPC server threads, and the HTTP server's
    # Admission control (retrieval_service/admission.py): at most max_inflight searches (and embeddings,
    # model listings) at once per process; behind them a FIFO queue of at most max_queue, each waiting only
    # as long as its request deadline (request_timeout_s from arrival, or a shorter gRPC deadline) allows.
    # A request is refused at once (429 + Retry-After / RESOURCE_EXHAUSTED + retry-after metadata) when the
    # queue is full or its estimated wait ((queued ahead + 1) x recent service time / max_inflight) plus its
    # service time would pass its deadline. These defaults suit a process whose models run elsewhere
    # (mostly waiting on Triton and Milvus); `mmsearch up`, everything on one host, sizes both to the cores
    # unless set (launcher/up.sized_for_one_host). MMSEARCH_RETRIEVAL_MAX_INFLIGHT, MMSEARCH_RETRIEVAL_MAX_QUEUE.
    max_inflight: int = Field(8, ge=1, le=1024)  # searches served at once per process
    max_queue: int = Field(16, ge=0, le=4096)  # searches waiting for a slot (two service times deep); more get 429
    api_keys: list[str] = Field(default_factory=list, repr=False)  # empty: no key needed (demo); production sets them
    # keys that may also write (the documents API: PUT/DELETE /v1/indexes/{index}/documents); a key of api_keys only reads
    # (403 on a write). Keys are on when either list is set; both empty: open (the demo)
    write_api_keys: list[str] = Field(default_factory=list, repr=False)
    # fault injection for the crash tests: a pause between the stores of a document write, widening the window a
    # SIGKILL can land in (MMSEARCH_RETRIEVAL_FAULT_WRITE_PAUSE_S); 0, always, outside tests
    fault_write_pause_s: float = Field(0.0, ge=0, le=60)
    documents_max_batch: int = Field(1000, ge=1, le=100_000)  # documents (or ids) per write; more: 413
    documents_max_bytes: int = Field(1024 * 1024, ge=1024, le=16 * 1024 * 1024)  # one document's JSON; more: 413
    documents_max_image_bytes: int = Field(4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)  # one inline image (image_b64), decoded
    # expiry of what writes leave behind (retrieval_service/retention.py); 0 keeps it forever. The journal's
    # retention is also how far back a rollback reaches; an op_id resent after its retention is a new write
    documents_journal_days: float = Field(7.0, ge=0, le=36500)
    documents_op_ids_days: float = Field(1.0, ge=0, le=36500)
    documents_sweep_s: float = Field(600.0, ge=1, le=86400)  # how often the service sweeps
    # text queries: tokenized in this process from model_repository (local: no network hop), or by the
    # preprocess service (service); images always go to the preprocess service
    tokenize: Literal["local", "service"] = "local"
    # text queries: encoded in this process with ONNX Runtime from model_repository, the file Triton serves
    # (local: no round trip to Triton; /v1/embed of a text too), or by Triton (triton); images and rerank always go to Triton
    encode: Literal["local", "triton"] = "local"
    encode_threads: int = Field(1, ge=1, le=64)  # ONNX Runtime threads per local query encoding

    @field_validator("api_keys", "write_api_keys")
    @classmethod
    def _strong_keys(cls, keys: list[str]) -> list[str]:
        """A key list that is set must hold real keys: an empty or short one would silently weaken the guard."""
        if any(len(k) < 16 for k in keys):
            raise ValueError("every API key must be at least 16 characters (an empty list turns keys off)")
        if any(not HTTP_TOKEN.fullmatch(k) for k in keys):
            raise ValueError(KEY_CHARS)
        return keys


class WebConfig(Endpoint):
    port: int = Field(8090, ge=0, le=65535)
    retrieval_url: str = "http://127.0.0.1:8080"
    threads: int = Field(16, ge=1, le=512)  # the page's WSGI server threads
    api_key: str = Field("", repr=False)  # sent to the search API when it requires keys

    @field_validator("api_key")
    @classmethod
    def _sendable_key(cls, key: str) -> str:
        if key and not HTTP_TOKEN.fullmatch(key):
            raise ValueError(KEY_CHARS)
        return key


class MilvusConfig(_Section):
    """Vectors: the server, and how each new build is indexed (recorded on the build)."""

    uri: str = ""  # empty = the embedded Milvus standalone server of data_dir (started when needed)
    # IVF_SQ8 / IVF_PQ: compressed codes (1 byte per dimension / ivf_pq_m codes of ivf_pq_nbits bits per vector)
    index_type: Literal["HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ", "FLAT", "AUTOINDEX"] = "HNSW"
    hnsw_m: int = Field(16, ge=2, le=2048)
    hnsw_ef_construction: int = Field(200, ge=8, le=4096)
    ivf_nlist: int = Field(1024, ge=1, le=65536)  # IVF_*: lists (k-means cells); search_ef is their nprobe
    ivf_pq_m: int = Field(48, ge=1, le=4096)  # IVF_PQ: codes per vector; must divide the model's dimension (checked at build)
    ivf_pq_nbits: int = Field(8, ge=1, le=16)  # IVF_PQ: bits per code
    search_ef: int = Field(128, ge=1, le=32768)  # default search breadth; an experiment arm may set its own
    # documents up to this many bytes (JSON) are kept beside their vectors, so searches return them without a
    # MongoDB read; Milvus holds them in memory (at most this x the rows); larger ones are read from MongoDB; 0: none
    stored_doc_max_bytes: int = Field(4096, ge=0, le=65535)


class LexicalConfig(_Section):
    """BM25 recall (tantivy): where builds' term indexes live (a shared volume in a distributed deploy)."""

    root: Path = Path("")  # empty = <data_dir>/lexical


class MongoConfig(_Section):
    uri: str = ""  # empty = embedded secantusdb server under data_dir
    database: str = "mmsearch"


class ConsulConfig(_Section):
    addr: str = ""  # empty = experiments from experiments_file
    key: str = "mmsearch/experiments"
    token: str = Field("", repr=False)  # ACL token (X-Consul-Token) when Consul has ACLs on; never logged


class ExportConfig(_Section):
    """Defaults for `mmsearch export`."""

    max_batch_size: int = Field(64, ge=1, le=4096)
    opset: int = Field(17, ge=13)
    parity_min_cosine: float = Field(0.9999, gt=0, le=1)
    text_max_length: int = Field(256, ge=8, le=8192)
    preferred_batch_sizes: list[int] = Field(default_factory=lambda: [8, 16, 32])
    max_queue_delay_us: int = Field(100, ge=0)  # measured: 100 beat 500 at c=1 (p50 -9%) and c=8 (+4% qps) on the demo
    instance_count: int = Field(1, ge=1)
    instance_kind: Literal["cpu", "gpu"] = "cpu"  # config.pbtxt KIND_CPU (demo) or KIND_GPU (production repository)


class FlywheelConfig(_Section):
    """`mmsearch flywheel`: clicks -> pairs -> fine-tune -> gate -> a new arm (offline/flywheel)."""

    gate_metric: str = Field("ndcg@10", pattern=r"^(recall|precision|mrr|map|ndcg)@(1|10)$")
    gate_margin: float = Field(0.02, ge=0, le=10)  # relative gain over the served model the candidate must show
    traffic: float = Field(10.0, gt=0, lt=100)  # % of the scene's users the new arm gets
    layer: str = Field("flywheel", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    min_users: int = Field(2, ge=1)  # distinct users who clicked a (query, document) before it is a pair
    min_click_rate: float = Field(0.1, ge=0, le=1)  # ... and that share of the users shown it for that query
    max_user_rate: int = Field(60, ge=1)  # searches per minute above which a user is taken for a bot
    min_train_pairs: int = Field(20, ge=2)
    min_heldout_queries: int = Field(10, ge=1)


class SupervisorConfig(_Section):
    """`mmsearch up`: a crashed child (Milvus, secantusdb, Triton, a service, the page) is started again
    with backoff while the rest serves; only a crash loop stops the stack (runtime/supervisor.py RestartPolicy)."""

    restart: bool = True  # false: the first crash stops the stack
    max_restarts: int = Field(5, ge=1, le=1000)  # a child restarted this many times within window_s that dies again: stop
    window_s: float = Field(300.0, gt=0, le=86400)
    backoff_s: float = Field(0.5, ge=0, le=600)  # wait before the first restart in the window; doubled for each further one
    backoff_max_s: float = Field(30.0, ge=0, le=3600)


class GateConfig(_Section):
    """The admission gate (mmsearch/retrieval_service/gate/): a small proxy process in front of the search API's HTTP that
    refuses searches beyond the service's max_inflight + max_queue itself, in its own process, so a
    refusal does not wait behind the searches for the service's interpreter lock (docs/architecture.md)."""

    enabled: bool = True  # `mmsearch up` runs it on retrieval.http_port, the service's HTTP behind it on a free port
    upstream_timeout_s: float = Field(300.0, gt=0, le=3600)  # the longest the gate waits for the service's answer
    max_connections: int = Field(1000, ge=1, le=100_000)  # client connections held at once; more are answered 503 and closed
    # at stop (SIGTERM): requests already with the service get this long to be answered (with Connection: close);
    # idle connections close at once and no new one is accepted, so a rolling restart loses no answer
    drain_s: float = Field(10.0, ge=0, le=300)


class Config(_Section):
    data_dir: Path = Path(".mmsearch")
    model_repository: Path = Path("model_repository")
    repository_poll_s: float = Field(5.0, ge=0, le=3600)  # Triton and preprocess load newly exported models; 0: off
    image_root: Path = Path(".")
    experiments_file: Path = Path("deploy/experiments.yaml")
    rankers_dir: Path = Path("deploy/rankers")  # learned rankers of fused arms (experiments: fusion learned, ranker NAME)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # mmsearch's loggers in every service
    log_json: bool = False  # JSON log lines (one object per line, with the request id)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    milvus: MilvusConfig = Field(default_factory=MilvusConfig)
    mongo: MongoConfig = Field(default_factory=MongoConfig)
    lexical: LexicalConfig = Field(default_factory=LexicalConfig)
    consul: ConsulConfig = Field(default_factory=ConsulConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    flywheel: FlywheelConfig = Field(default_factory=FlywheelConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    gate: GateConfig = Field(default_factory=GateConfig)


def lexical_root(config: Config) -> Path:
    return config.lexical.root if str(config.lexical.root) not in ("", ".") else config.data_dir / "lexical"


def _env_names() -> dict[str, tuple[str, ...]]:
    """Map every accepted environment name to its path in the config tree."""
    names: dict[str, tuple[str, ...]] = {}
    for field, info in Config.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, _Section):
            for sub in ann.model_fields:
                names[f"{ENV_PREFIX}{field}_{sub}".upper()] = (field, sub)
        else:
            names[f"{ENV_PREFIX}{field}".upper()] = (field,)
    return names


def _is_text_field(path: tuple[str, ...]) -> bool:
    """str/Path fields take the variable verbatim (so "0123" or "yes" stay strings)."""
    model: Any = Config
    for key in path[:-1]:
        model = model.model_fields[key].annotation
    return model.model_fields[path[-1]].annotation in (str, Path)


def _env_value(raw: str) -> Any:
    """Environment values are YAML scalars/lists, so `8001`, `true` and `[8, 16]` keep their types."""
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def _format_validation(err: ValidationError, origin: str) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return f"invalid configuration ({origin}): " + "; ".join(parts)


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the one Config of a process.

    ``path`` (or ``MMSEARCH_CONFIG``) is an optional YAML file; ``environ`` defaults to
    ``os.environ``; ``overrides`` (nested dict, e.g. from CLI flags) win over everything.
    """
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    path = path or env.get(CONFIG_FILE_ENV) or None
    origin = "defaults"
    if path:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {p}") from e
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read config file {p}: {e}") from e
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top, got {type(loaded).__name__}")
        data = loaded
        origin = str(p)

    known = _env_names()
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_FILE_ENV:
            continue
        if name not in known:
            raise ConfigError(f"unknown environment variable {name} (known: {', '.join(sorted(known))})")
        target = data
        *parents, leaf = known[name]
        for key in parents:
            node = target.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: config section {key!r} is not a mapping")
            target = node
        target[leaf] = raw if _is_text_field(known[name]) else _env_value(raw)
        origin = f"{origin} + environment"

    for key, value in (overrides or {}).items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, origin)) from e


def flag_overrides(flags: Mapping[str, Any]) -> dict[str, Any]:
    """CLI flags as ``load_config`` overrides: dotted config paths to values, flags not given (None) left out.

    ``flag_overrides({"model_repository": args.repo, "milvus.uri": args.milvus_uri})`` →
    ``{"model_repository": ..., "milvus": {"uri": ...}}`` with only the flags the user passed.
    """
    out: dict[str, Any] = {}
    for dotted, value in flags.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def split_address(address: str, flag: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:80`` too) from a CLI flag; BadInput naming the flag otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise BadInput(f"{flag} must be host:port, got {address!r}")
    return host, int(port)


def config_to_env(config: Config) -> dict[str, str]:
    """The MMSEARCH_* environment that makes a child process load exactly this config."""
    env: dict[str, str] = {}
    data = config.model_dump(mode="json")
    for name, path in _env_names().items():
        value = data
        for key in path:
            value = value[key]
        env[name] = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    return env


def child_environ(config: Config, environ: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child process that loads exactly ``config``: this one's (``environ``, default
    os.environ) without any MMSEARCH_* of its own, then the config's, then ``extra``."""
    base = os.environ if environ is None else environ
    return {**{k: v for k, v in base.items() if not k.startswith("MMSEARCH_")}, **config_to_env(config), **extra}
