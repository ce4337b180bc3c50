"""`pip install .` without the `embedded` extra (the production image): the CLIs and the retrieval service run
against Milvus and MongoDB given by URI, and nothing they do needs the embedded servers' packages.

The child processes here start with ``milvus``, ``milvus_lite`` and ``secantusdb`` unimportable (as if not
installed: an import of one raises ImportError); the servers they talk to are started by the test, as a real
deployment's would be, elsewhere. A build, a search, a documents-API write and the index admin all work; asking
for an embedded store without a URI fails naming the extra.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from documents_stack import EXPERIMENTS

from mmsearch.client.search_client import SearchClient
from mmsearch.config import child_environ, load_config
from mmsearch.errors import MMSearchError
from mmsearch.runtime.embedded import MilvusServer, SecantusServer
from mmsearch.runtime.net import wait_until

pytestmark = pytest.mark.integration

EMBEDDED_PACKAGES = ("milvus", "milvus_lite", "secantusdb")
WITHOUT_EMBEDDED = (
    "import sys\n"
    f"for name in {EMBEDDED_PACKAGES!r}:\n"
    "    sys.modules[name] = None  # not installed: importing it raises ImportError\n"
    "from mmsearch.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def mmsearch_without_embedded(args: list[str]) -> list[str]:
    return [sys.executable, "-c", WITHOUT_EMBEDDED, *args]


def child_env(cfg) -> dict[str, str]:
    return child_environ(cfg)


def test_the_stack_serves_by_uri_without_the_embedded_packages(tmp_path, tiny_text):
    from mmsearch.offline.export import export_model

    repo = tmp_path / "repo"
    export_model(tiny_text, repo, "tiny")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "title": f"title {i}", "text": f"document about topic {i}"}) + "\n"
                            for i in range(50)))
    (tmp_path / "experiments.yaml").write_text(EXPERIMENTS)
    with SecantusServer(tmp_path / "mongo") as mongo:
        milvus = MilvusServer(tmp_path / "milvus")
        proc = None
        try:
            cfg = load_config(environ={}, overrides={
                "model_repository": str(repo), "data_dir": str(tmp_path / "data"),
                "experiments_file": str(tmp_path / "experiments.yaml"), "milvus": {"uri": milvus.uri}, "mongo": {"uri": mongo.uri},
                "retrieval": {"request_timeout_s": 30, "stage_timeout_s": 20, "query_log": False}})
            env = child_env(cfg)
            build = subprocess.run(mmsearch_without_embedded(["build-index", "--index", "docs", "--docs", str(docs), "--model", "tiny",
                                                              "--lexical", "title,text", "--no-progress"]),
                                   env=env, capture_output=True, text=True, timeout=300)
            assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
            assert "indexed 50" in build.stdout + build.stderr, build.stdout + build.stderr

            ports = tmp_path / "ports.json"
            log = open(tmp_path / "retrieval.log", "wb")  # noqa: SIM115 - closed with the child below
            proc = subprocess.Popen(mmsearch_without_embedded(["serve-retrieval", "--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0",
                                                               "--ports-file", str(ports)]),
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            assert wait_until(lambda: ports.is_file() or proc.poll() is not None, 120) and proc.poll() is None, \
                (tmp_path / "retrieval.log").read_text()[-3000:]
            client = SearchClient(f"http://127.0.0.1:{json.loads(ports.read_text())['http']}", timeout_s=60)
            # (no Triton here, so /readyz stays 503: text queries are tokenized and encoded in the service itself)

            def search() -> list[dict]:
                try:
                    return client.search("text2text", text="document about topic 7", top_k=5)["results"]
                except MMSearchError:
                    return []

            assert wait_until(search, 120, 0.5), (tmp_path / "retrieval.log").read_text()[-3000:]
            hits = search()
            assert hits and hits[0]["id"] == "d7", hits
            client.put_documents("docs", [{"id": "new1", "title": "a written title", "text": "a document written through the API"}])
            assert client.get_document("docs", "new1")["text"] == "a document written through the API"

            listed = subprocess.run(mmsearch_without_embedded(["index", "list", "docs"]), env=env, capture_output=True, text=True,
                                    timeout=120)
            assert listed.returncode == 0 and "LIVE" in listed.stdout, listed.stdout + listed.stderr

            # no URI: the embedded store is what it would need, and the error says which extra brings it
            bare = {**env, "MMSEARCH_MILVUS_URI": "", "MMSEARCH_MONGO_URI": ""}
            missing = subprocess.run(mmsearch_without_embedded(["index", "list"]), env=bare, capture_output=True, text=True,
                                     timeout=120)
            assert missing.returncode != 0 and "mmsearch[embedded]" in missing.stderr, missing.stdout + missing.stderr
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
            milvus.stop()
