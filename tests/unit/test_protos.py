"""The committed generated code must be exactly what the .proto sources generate."""

from pathlib import Path

from mmsearch import protogen


def test_generated_code_matches_sources(tmp_path: Path):
    generated = protogen.generate(tmp_path)
    committed_dir = protogen.ROOT / protogen.OUT_PACKAGE
    names = {p.name for p in generated}
    assert names, "no proto sources found"
    committed = {p.name for p in committed_dir.iterdir() if p.suffix in (".py", ".pyi") and p.name != "__init__.py"}
    assert committed == names, f"stale or missing generated files: {sorted(committed ^ names)} (run `make protos`)"
    stale = [p.name for p in generated if p.read_bytes() != (committed_dir / p.name).read_bytes()]
    assert not stale, f"generated code drifted from protos/: {stale} (run `make protos`)"


def test_generated_modules_import_as_a_package():
    from mmsearch.protos import preprocess_pb2, preprocess_pb2_grpc, search_pb2, tensor_pb2

    t = tensor_pb2.Tensor(name="input_ids", dtype="int64", shape=[1, 3], data=b"\0" * 24)
    req = preprocess_pb2.PreprocessResponse(tensors=[t], truncated=[False])
    assert preprocess_pb2.PreprocessResponse.FromString(req.SerializeToString()).tensors[0].shape == [1, 3]
    assert hasattr(preprocess_pb2_grpc, "PreprocessServicer")
    assert search_pb2.SearchRequest(scene="text2text").scene == "text2text"
