"""The preprocess gRPC service, in-process on a free port, against Hugging Face's own preprocessing."""

from __future__ import annotations

import io
import random
import shutil
import struct
import zlib
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from mmsearch.clients.preprocess import PreprocessClient
from mmsearch.config import load_config
from mmsearch.errors import BadInput, DeadlineExceeded, NotFound
from mmsearch.preprocess_service.server import create_server
from mmsearch.protos import preprocess_pb2 as pb
from mmsearch.protos import preprocess_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pre_repo(tmp_path_factory, minilm_export, clip_export, dual_export, cross_export) -> Path:
    repo = tmp_path_factory.mktemp("pre") / "repo"
    repo.mkdir()
    for src in (minilm_export, clip_export["clip_text"], clip_export["clip_image"], dual_export["dual_image"], cross_export):
        shutil.copytree(src, repo / src.name)
    return repo


@pytest.fixture(scope="module")
def server(pre_repo):
    s = create_server(load_config(environ={}), "127.0.0.1:0", pre_repo)
    yield s
    s.stop(0)


@pytest.fixture(scope="module")
def client(server):
    c = PreprocessClient(f"127.0.0.1:{server.port}", timeout_s=30)
    yield c
    c.close()


def varied_strings(n: int = 240) -> list[str]:
    rng = random.Random(7)
    pools = ["hello", "world", "Search", "ENGINE", "naïve", "café", "Straße", "東京", "北京烤鸭", "русский", "עברית",
             "हिन्दी", "🙂", "🚀🔥", "👩‍👩‍👧", "e\u0301", "Å", "ﬁ", "１２３", "don't", "e-mail", "C++", "x²", "$9.99",
             "<b>", "&amp;", "\t", "tab\there", "new\nline", "https://example.com/a?b=c", "a.b.c", "...", "ــ", "ǅ"]
    out = []
    for _i in range(n):
        k = rng.choice([1, 2, 3, 5, 8, 20, 80, 400])
        text = " ".join(rng.choice(pools) for _ in range(k))
        out.append(text if text.strip() else text + "x")  # whitespace-only is refused as empty (tested below)
    return out


def assert_ids_equal(batch, ref_ids: list[list[int]]) -> None:
    ids, mask = batch.tensors["input_ids"], batch.tensors["attention_mask"]
    for i, ref in enumerate(ref_ids):
        assert ids[i][mask[i] == 1].tolist() == ref, f"item {i}"


@pytest.mark.parametrize("model, source", [("minilm", "minilm"), ("clip_text", "clip")])
def test_token_ids_equal_hugging_face(client, model, source, tiny_clip):
    from tiny_models import minilm_dir
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir() if source == "minilm" else tiny_clip))
    max_len = 256 if source == "minilm" else 77
    texts = varied_strings()
    assert len(texts) >= 200
    for start in range(0, len(texts), 60):
        chunk = texts[start : start + 60]
        batch = client.tokenize(model, chunk)
        ref = tok(chunk, truncation=True, max_length=max_len)["input_ids"]
        assert_ids_equal(batch, ref)
        full = tok(chunk, truncation=False)["input_ids"]
        assert batch.truncated.tolist() == [len(f) > max_len for f in full]
        assert batch.tensors["input_ids"].dtype == np.int64


def test_clip_77_token_limit_truncates_never_errors(client):
    batch = client.tokenize("clip_text", ["a photo of " * 100, "short"])
    assert batch.truncated.tolist() == [True, False]
    assert batch.tensors["input_ids"].shape == (2, 77)


def test_bucket_padding(client):
    plain = client.tokenize("minilm", ["red shoes"])
    bucketed = client.tokenize("minilm", ["red shoes"], bucket=True)
    assert plain.tensors["input_ids"].shape == (1, 4) and bucketed.tensors["input_ids"].shape == (1, 16)
    assert bucketed.tensors["input_ids"][0, :4].tolist() == plain.tensors["input_ids"][0].tolist()
    assert bucketed.tensors["attention_mask"][0, 4:].sum() == 0
    assert client.tokenize("minilm", ["word " * 300], bucket=True).tensors["input_ids"].shape == (1, 256)


def test_cross_encoder_pairs_equal_hugging_face(client, tiny_cross, pre_repo):
    from transformers import AutoTokenizer

    from mmsearch.modelrepo.manifest import read_manifest

    tok = AutoTokenizer.from_pretrained(str(tiny_cross))
    max_len = read_manifest(pre_repo / "rerank").preprocessing.max_length
    q, d = varied_strings(30)[:15], varied_strings(30)[15:]
    batch = client.tokenize("rerank", q, d)
    ref = tok(q, d, truncation=True, max_length=max_len)
    assert_ids_equal(batch, ref["input_ids"])
    for i in range(len(q)):
        m = batch.tensors["attention_mask"][i] == 1
        assert batch.tensors["token_type_ids"][i][m].tolist() == ref["token_type_ids"][i]


def encoded_images() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    base = Image.fromarray((rng.random((150, 210, 3)) * 255).astype(np.uint8))
    out = {}
    for label, (img, fmt) in {
        "png": (base, "PNG"), "jpeg": (base, "JPEG"), "rgba": (base.convert("RGBA"), "PNG"),
        "palette": (base.convert("P"), "PNG"), "grey": (base.convert("L"), "PNG"), "grey-jpeg": (base.convert("L"), "JPEG"),
        "tall": (base.resize((40, 300)), "PNG"), "webp": (base, "WEBP"),
    }.items():
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[label] = buf.getvalue()
    return out


@pytest.mark.parametrize("model", ["clip_image", "dual_image"])
def test_pixels_equal_hugging_face_image_processor(client, pre_repo, model):
    """clip_image: the tiny CLIP's own CLIPImageProcessor; dual_image: EfficientNet-Lite0's reference
    preprocessing as the exported preprocessor_config.json states it, run by HF's implementation."""
    from mmsearch.offline.models.clip import pil_image_processor_class

    proc = pil_image_processor_class().from_pretrained(str(pre_repo / model / "preprocess"))
    imgs = encoded_images()
    got = client.process_images(model, list(imgs.values()))
    for i, (label, data) in enumerate(imgs.items()):
        ref = proc(images=[Image.open(io.BytesIO(data))], return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(got[i], ref, atol=1e-5, err_msg=label)


def png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def _raw(server) -> pb_grpc.PreprocessStub:
    return pb_grpc.PreprocessStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))


@pytest.mark.parametrize(
    "call, code, fragment",
    [
        (lambda s: s.Tokenize(pb.TokenizeRequest(model="minilm", texts=[b"ok", b""])), "INVALID_ARGUMENT", r"texts\[1\]: empty"),
        (lambda s: s.Tokenize(pb.TokenizeRequest(model="minilm", texts=[b"a" * 1_000_000])), "INVALID_ARGUMENT", r"texts\[0\]: 1,000,000 bytes"),
        (lambda s: s.Tokenize(pb.TokenizeRequest(model="minilm", texts=[b"ok", b"\xff\xfebad"])), "INVALID_ARGUMENT", r"texts\[1\]: invalid UTF-8"),
        (lambda s: s.Tokenize(pb.TokenizeRequest(model="minilm")), "INVALID_ARGUMENT", "empty batch"),
        (lambda s: s.Tokenize(pb.TokenizeRequest(model="nope", texts=[b"x"])), "NOT_FOUND", "model 'nope' not found"),
        (lambda s: s.Tokenize(pb.TokenizeRequest(model="clip_image", texts=[b"x"])), "INVALID_ARGUMENT", "image_encoder"),
        (lambda s: s.ProcessImages(pb.ImagesRequest(model="clip_image", images=[encoded_images()["png"][:200]])),
         "INVALID_ARGUMENT", r"images\[0\]: (corrupt or truncated|not a readable)"),
        (lambda s: s.ProcessImages(pb.ImagesRequest(model="clip_image", images=[encoded_images()["png"], b"GIF89a garbage"])),
         "INVALID_ARGUMENT", r"images\[1\]"),
        (lambda s: s.ProcessImages(pb.ImagesRequest(model="clip_image", images=[b"%PDF-1.4 not an image"])),
         "INVALID_ARGUMENT", r"images\[0\]: not a readable image"),
        (lambda s: s.ProcessImages(pb.ImagesRequest(model="clip_image", images=[png_header_only(20000, 20000)])),
         "INVALID_ARGUMENT", r"images\[0\]: image is .*over the 64,000,000-pixel limit"),
        (lambda s: s.ProcessImages(pb.ImagesRequest(model="clip_image")), "INVALID_ARGUMENT", "empty batch"),
        (lambda s: s.ProcessImages(pb.ImagesRequest(model="missing", images=[b"x"])), "NOT_FOUND", "missing"),
        (lambda s: s.ProcessImages(pb.ImagesRequest(model="minilm", images=[b"x"])), "INVALID_ARGUMENT", "send text to Tokenize"),
    ],
    ids=["empty-text", "1MB-text", "invalid-utf8", "empty-text-batch", "unknown-model", "text-to-image-model",
         "truncated-image", "corrupt-image", "not-an-image", "20000x20000", "empty-image-batch", "unknown-image-model",
         "image-to-text-model"],
)
def test_bad_input_named_and_server_stays_up(server, client, call, code, fragment):
    import re

    with pytest.raises(grpc.RpcError) as e:
        call(_raw(server))
    assert e.value.code().name == code, e.value.details()
    assert re.search(fragment, e.value.details()), e.value.details()
    assert client.tokenize("minilm", ["still serving"]).tensors["input_ids"].shape[0] == 1


def test_client_raises_our_errors(client):
    with pytest.raises(NotFound):
        client.tokenize("nope", ["x"])
    with pytest.raises(BadInput, match="invalid UTF-8"):
        client.tokenize("minilm", ["ok", "\udcff"])  # a lone surrogate reaches the server as invalid UTF-8


def test_deadline_honoured(server, pre_repo):
    c = PreprocessClient(f"127.0.0.1:{server.port}", timeout_s=0.001)
    with pytest.raises(DeadlineExceeded):
        c.process_images("dual_image", [encoded_images()["png"]] * 50)
    c.close()


def test_health_reflection_and_reload(server, client, pre_repo):
    ch = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    h = health_pb2_grpc.HealthStub(ch)
    assert h.Check(health_pb2.HealthCheckRequest(service="mmsearch.v1.Preprocess")).status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    refl = reflection_pb2_grpc.ServerReflectionStub(ch)
    resp = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    assert "mmsearch.v1.Preprocess" in [s.name for s in resp.list_services_response.service]

    names = {m.name for m in client.list_models().models}
    assert {"minilm", "clip_text", "clip_image", "dual_image", "rerank"} <= names
    shutil.copytree(pre_repo / "minilm", pre_repo / "minilm_copy")
    (pre_repo / "broken").mkdir()
    (pre_repo / "broken" / "mmsearch.json").write_text("{nope")
    try:
        r = client.reload()
        assert "minilm_copy" in {m.name for m in r.models}
        assert any(e.startswith("broken:") for e in r.errors)
        assert client.tokenize("minilm_copy", ["new model"]).tensors["input_ids"].shape[0] == 1
        # a model that failed to load: the service says NOT_SERVING (readiness), and serves the others meanwhile
        assert h.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        shutil.rmtree(pre_repo / "minilm_copy")
        shutil.rmtree(pre_repo / "broken")
    assert "minilm_copy" not in {m.name for m in client.reload().models}
    assert h.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING


def test_metrics_endpoint_counts_rpcs_by_method_and_status(server, client):
    import urllib.request

    from mmsearch.errors import BadInput as _BadInput

    client.tokenize("minilm", ["hello"])
    with pytest.raises(_BadInput):
        client.tokenize("minilm", ["x" * (load_config(environ={}).preprocess.max_text_bytes + 1)])
    assert server.metrics is not None and server.metrics.port not in (0, 60052)  # ':0' address: a free port here too
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics.port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'mmsearch_rpc_requests_total{code="OK",method="Tokenize",service="preprocess"}' in text
    assert 'code="INVALID_ARGUMENT",method="Tokenize"' in text and "process_cpu_seconds_total" in text


# ---------------------------------------------------------------- the same preprocessing in-process
@pytest.fixture(scope="module")
def local(pre_repo):
    from mmsearch.modelrepo.preprocess_registry import LocalTokenizer

    t = LocalTokenizer(pre_repo, load_config(environ={}).preprocess, 0)
    yield t
    t.close()


@pytest.mark.parametrize("model", ["minilm", "clip_text"])
@pytest.mark.parametrize("bucket", [False, True])
def test_local_tokenizer_equals_the_service(client, local, model, bucket):
    """The retrieval service tokenizes text queries in-process (retrieval.tokenize local): the tensors and the
    truncation flags must be the service's, item for item, bucket padding included."""
    texts = varied_strings(60)
    for i in range(0, len(texts), 6):  # the service's batch shapes: a query alone, and batches of mixed lengths
        for chunk in (texts[i : i + 1], texts[i : i + 6]):
            remote, mine = client.tokenize(model, chunk, bucket=bucket), local.tokenize(model, chunk, bucket=bucket)
            assert remote.tensors.keys() == mine.tensors.keys()
            for k in remote.tensors:
                np.testing.assert_array_equal(remote.tensors[k], mine.tensors[k], err_msg=f"{model} {k} {chunk!r}")
            assert remote.truncated.tolist() == mine.truncated.tolist()


def test_local_tokenizer_pairs_equal_the_service(client, local):
    q, d = varied_strings(40)[:20], varied_strings(40)[20:]
    remote, mine = client.tokenize("rerank", q, d), local.tokenize("rerank", q, d)
    for k in remote.tensors:
        np.testing.assert_array_equal(remote.tensors[k], mine.tensors[k])
    assert remote.truncated.tolist() == mine.truncated.tolist()


@pytest.mark.parametrize("call, fragment", [
    (lambda t: t.tokenize("minilm", ["ok", "  "]), r"texts\[1\]: empty"),
    (lambda t: t.tokenize("minilm", ["a" * 1_000_000]), r"texts\[0\]: 1,000,000 bytes, over the 65,536-byte limit"),
    (lambda t: t.tokenize("minilm", ["ok", "\udcff"]), r"texts\[1\]: invalid UTF-8"),
    (lambda t: t.tokenize("minilm", []), "empty batch: no texts given"),
    (lambda t: t.tokenize("minilm", ["x"] * 257), "257 texts in one request, over the limit of 256"),
    (lambda t: t.tokenize("clip_image", ["x"]), "image_encoder: send images to ProcessImages"),
    (lambda t: t.tokenize("minilm", ["q"], ["d"]), "documents are for cross-encoders"),
    (lambda t: t.tokenize("rerank", ["q", "r"], ["d"]), "2 texts but 1 documents"),
], ids=["blank", "1MB", "lone-surrogate", "empty-batch", "too-many", "image-model", "documents-to-embedder", "unpaired"])
def test_local_tokenizer_refuses_what_the_service_refuses(local, client, call, fragment):
    with pytest.raises(BadInput, match=fragment):
        call(local)
    with pytest.raises(BadInput, match=fragment):
        call(client)


def test_local_tokenizer_unknown_model_and_reload(tmp_path, pre_repo):
    from mmsearch.modelrepo.preprocess_registry import LocalTokenizer

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(pre_repo / "minilm", repo / "minilm")
    t = LocalTokenizer(repo, load_config(environ={}).preprocess, 0.2)
    try:
        with pytest.raises(NotFound, match="model 'rerank' not found"):
            t.tokenize("rerank", ["q"], ["d"])
        assert t.serving()
        shutil.copytree(pre_repo / "rerank", repo / "rerank")  # exported after start: loaded by the watcher
        from mmsearch.runtime.net import wait_until

        assert wait_until(lambda: "rerank" in t.registry.entries(), 10, 0.1)
        assert t.tokenize("rerank", ["q"], ["d"]).tensors["input_ids"].shape[0] == 1
        (repo / "broken").mkdir()
        (repo / "broken" / "mmsearch.json").write_text("{nope")
        assert wait_until(lambda: not t.serving(), 10, 0.1)  # readiness, as the service's health says NOT_SERVING
        assert t.tokenize("minilm", ["still here"]).tensors["input_ids"].shape[0] == 1
    finally:
        t.close()
