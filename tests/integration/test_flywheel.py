"""The flywheel end to end on tiny data, through the real stack: simulated users search and click via
the API, `run_flywheel` turns the log into pairs, fine-tunes, gates against the served model, publishes
the new model (Triton and the preprocess service pick it up from the repository), rebuilds the index
and adds an arm in Consul; more simulated users then show the arm wins in ab-report. A no-better
candidate is refused and gets no arm; rerunning a finished run changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from conftest_stack import EXPERIMENTS
from finetune_data import ANIMALS, COLOURS

from mmsearch.cli import main as cli
from mmsearch.client.search_client import SearchClient
from mmsearch.clients.documents import DocumentStore
from mmsearch.errors import BadInput
from mmsearch.experiments.spec import parse_experiments
from mmsearch.offline.eval_served import Judged
from mmsearch.offline.flywheel.loop import FlywheelOptions, GateRefused, run_flywheel
from mmsearch.offline.flywheel.simulate import ClickModel, simulate
from mmsearch.offline.indexing.build import BuildOptions, build_index
from mmsearch.retrieval_service.ab_report import report
from mmsearch.retrieval_service.promote import promote
from mmsearch.runtime.net import http_ok, wait_until

KEY = "mmsearch/experiments"
CLICKS = ClickModel(patience=0.97, p_relevant=0.9, p_noise=0.01)  # patient readers: a page of 60 is mostly read
SCENE_ON_CREATURES = """
scenes:
  text2text:
    defaults: {embed_model: tiny, index: creatures, recall_top_k: 60, top_k: 60}
  text2image:
    defaults: {embed_model: clip_text, index: images, top_k: 5}
"""


@pytest.fixture(scope="module")
def creatures(stack, tmp_path_factory):
    """120 documents 'a crimson feline creature', searched as 'red cat': no shared word, so the tiny
    model ranks them at random until it learns the synonyms from clicks."""
    base = tmp_path_factory.mktemp("creatures")
    judged, rows = [], []
    for i, (c, sc) in enumerate(COLOURS.items()):
        for j, (a, sa) in enumerate(ANIMALS.items()):
            rows.append({"id": f"c{i}_{j}", "text": f"a {sc} {sa} creature"})
            judged.append(Judged(f"{c} {a}", {f"c{i}_{j}": 1.0}))
    (base / "creatures.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = stack["cfg"]
    build_index(BuildOptions(index="creatures", docs=base / "creatures.jsonl", model="tiny", repo=stack["repo"],
                             data_dir=cfg.data_dir, milvus_uri=cfg.milvus.uri, mongo_uri=cfg.mongo.uri, progress=False))
    client = SearchClient(stack["url"])
    stack["consul"].put(KEY, SCENE_ON_CREATURES)
    assert wait_until(lambda: "creatures" in json.dumps(client.config()["experiments"]), 10)
    assert wait_until(lambda: http_ok(stack["url"] + "/readyz"), 30)  # the new index loaded into Milvus
    try:
        stats = simulate(client, "text2text", judged, users=200, searches_per_user=6, model=CLICKS, seed=1, top_k=60,
                         progress=False)
        assert not stats.get("errors"), stats
        yield {"judged": judged, "client": client, "cfg": cfg.model_copy(update={"flywheel": cfg.flywheel.model_copy(
            update={"min_users": 2, "traffic": 50, "min_heldout_queries": 5})}), "stats": stats}
    finally:
        stack["consul"].put(KEY, EXPERIMENTS)
        wait_until(lambda: "creatures" not in json.dumps(client.config()["experiments"]), 10)


def test_a_no_better_candidate_is_refused_and_gets_no_arm(stack, creatures, tmp_path):
    opts = FlywheelOptions(tmp_path / "same", "creatures", "tiny", epochs=1, lr=1e-12, batch_size=16,
                           api=stack["url"], progress=False)
    with pytest.raises(GateRefused, match="refused tiny_same"):
        run_flywheel(opts, creatures["cfg"], say=lambda _: None)
    state = json.loads((tmp_path / "same" / "state.json").read_text())
    assert state["steps"]["gate"]["passed"] is False and "publish" not in state["steps"]
    assert not (stack["repo"] / "tiny_same").exists()
    assert "tiny_same" not in json.dumps(creatures["client"].config()["experiments"])
    lines: list[str] = []
    with pytest.raises(GateRefused):  # a rerun never gets past a refusal, and trains nothing again
        run_flywheel(opts, creatures["cfg"], say=lines.append)
    assert [line.split(":")[0] for line in lines] == ["pairs", "finetune", "stage", "gate"], lines
    assert all("done before" in line for line in lines)


def test_the_flywheel_turns_clicks_into_an_arm_that_wins(stack, creatures, tmp_path, capsys):
    cfg, client = creatures["cfg"], creatures["client"]
    opts = FlywheelOptions(tmp_path / "fw1", "creatures", "tiny", epochs=6, lr=1e-3, batch_size=16,
                           api=stack["url"], progress=False)
    lines: list[str] = []
    state = run_flywheel(opts, cfg, say=lines.append)
    steps = state["steps"]
    assert steps["gate"]["passed"] and steps["gate"]["candidate"] > steps["gate"]["incumbent"], steps["gate"]
    assert steps["pairs"]["train_pairs"] >= 20 and steps["index"]["indexed"] == 120
    held = [j for j in creatures["judged"] if j.query in (tmp_path / "fw1" / "pairs" / "heldout.jsonl").read_text()]
    assert held  # the gate's queries were never trained on
    train_text = (tmp_path / "fw1" / "pairs" / "train.jsonl").read_text()
    assert not any(f'"query": "{j.query}"' in train_text for j in held)
    exp = client.config()["experiments"]["scenes"]["text2text"]["layers"]
    arms = {a["name"]: a for lay in exp if lay["name"] == "flywheel" for a in lay["arms"]}
    assert arms["tiny_fw1"]["index"] == "creatures_fw1" and arms["tiny_fw1"]["traffic"] == 50 and arms["control"]["traffic"] == 50

    version = client.config()["version"]
    again: list[str] = []
    run_flywheel(opts, cfg, say=again.append)  # rerunning a finished run does no harm
    steps_again = [line.split(":")[0] for line in again[:-1]]
    assert steps_again == ["pairs", "finetune", "stage", "gate", "publish", "index", "arm"], again  # every step reported
    assert all("done before" in line for line in again[:-1]) and client.config()["version"] == version

    store = DocumentStore(cfg.mongo.uri)
    with pytest.raises(BadInput, match="does not show tiny_fw1 better"):  # no A/B evidence yet: nothing is promoted
        promote(cfg, store, "text2text", "tiny_fw1", since=time.time(), say=lambda _: None)
    # the A/B phase reads first pages of 10, where a better ranking earns more clicks
    started = time.time()
    simulate(client, "text2text", creatures["judged"], users=300, searches_per_user=2, model=CLICKS, seed=2, top_k=10,
             user_prefix="ab", progress=False)
    rows = report(DocumentStore(cfg.mongo.uri), "text2text", parse_experiments(stack["consul"].kv[KEY][0].decode()),
                  control="control", since=started)
    row = next(r for r in rows if r["layer"] == "flywheel" and r["arm"] == "tiny_fw1")
    assert row["users"] > 100 and row["vs_control"]["low"] > 0, row
    assert sum(r["users"] for r in rows if r["layer"] == "flywheel") == 300  # only the A/B phase's users
    when = dt.datetime.fromtimestamp(started, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert cli(["ab-report", "--mongo-uri", cfg.mongo.uri, "--scene", "text2text", "--control", "control", "--since", when]) == 0
    assert "tiny_fw1" in capsys.readouterr().out
    assert cli(["ab-report", "--mongo-uri", cfg.mongo.uri, "--since", "yesterday"]) == 2
    # the winner becomes what every user gets, and its layer goes
    done = promote(cfg, store, "text2text", "tiny_fw1", since=started, say=lambda _: None)
    assert done["defaults"] == {"embed_model": "tiny_fw1", "index": "creatures_fw1"} and not done["forced"]
    scene = parse_experiments(stack["consul"].kv[KEY][0].decode()).scenes["text2text"]
    assert scene.defaults.embed_model == "tiny_fw1" and all(lay.name != "flywheel" for lay in scene.layers)
    assert wait_until(lambda: not client.config()["experiments"]["scenes"]["text2text"].get("layers"), 10)
    assert client.search("text2text", "red cat", top_k=5)["experiment"] == {}


SCENE_ON_SHAPES = """
scenes:
  text2text:
    defaults: {embed_model: tiny, index: texts}
  text2image:
    defaults: {embed_model: shapes_text, index: shapes, recall_top_k: 48, top_k: 48}
"""


def test_a_text_to_image_round_fine_tunes_the_dual_and_rebuilds_the_image_index(stack, tiny_dual, tmp_path):
    """The served dual's text tower and image tower (untrained heads) rank 48 shape images at random;
    clicks on 'a red circle' teach the heads colours and shapes, the gate compares both towers with the
    served pair on held-out queries, and the arm searches an image index rebuilt with the new image tower."""
    from finetune_data import shape_image_pairs

    from mmsearch.offline.export import export_model

    cfg = stack["cfg"]
    imgs = tmp_path / "shapes"
    judged: dict[str, dict[str, float]] = {}
    rows = []
    for p in shape_image_pairs(imgs, per_combo=2):
        doc = Path(p.positive).stem
        rows.append({"id": doc, "image": Path(p.positive).name})
        judged.setdefault(p.query, {})[doc] = 1.0
    (tmp_path / "shapes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    export_model(tiny_dual, stack["repo"], "shapes")
    build_index(BuildOptions(index="shapes", docs=tmp_path / "shapes.jsonl", model="shapes_image", repo=stack["repo"],
                             image_root=imgs, data_dir=cfg.data_dir, milvus_uri=cfg.milvus.uri, mongo_uri=cfg.mongo.uri,
                             progress=False))
    client = SearchClient(stack["url"])
    stack["consul"].put(KEY, SCENE_ON_SHAPES)
    try:
        assert wait_until(lambda: "shapes" in json.dumps(client.config()["experiments"]), 10)
        assert wait_until(lambda: http_ok(stack["url"] + "/readyz"), 60)  # the served towers and the index loaded
        queries = [Judged(q, rel) for q, rel in judged.items()]
        stats = simulate(client, "text2image", queries, users=150, searches_per_user=8, model=CLICKS, seed=3, top_k=48,
                         progress=False)
        assert not stats.get("errors"), stats
        fw_cfg = cfg.model_copy(update={"flywheel": cfg.flywheel.model_copy(
            update={"min_users": 2, "traffic": 50, "min_heldout_queries": 2})})
        opts = FlywheelOptions(tmp_path / "fw", "shapes", "shapes_text", scene="text2image", epochs=30, lr=1e-2,
                               batch_size=16, api=stack["url"], progress=False)
        steps = run_flywheel(opts, fw_cfg, say=lambda _: None)["steps"]
        assert steps["gate"]["passed"] and steps["gate"]["candidate"] > steps["gate"]["incumbent"], steps["gate"]
        assert steps["stage"]["model"] == "shapes_fw_text" and steps["stage"]["image_model"] == "shapes_fw_image"
        assert (stack["repo"] / "shapes_fw_text").is_dir() and (stack["repo"] / "shapes_fw_image").is_dir()
        assert steps["index"]["index"] == "shapes_fw" and steps["index"]["indexed"] == len(rows)
        train = (tmp_path / "fw" / "pairs" / "train.jsonl").read_text()
        assert str(imgs.resolve()) in train  # image pairs name the image files the live build read
        layers = client.config()["experiments"]["scenes"]["text2image"]["layers"]
        arm = next(a for lay in layers if lay["name"] == "flywheel" for a in lay["arms"] if a["name"] == "shapes_fw_text")
        assert arm["embed_model"] == "shapes_fw_text" and arm["index"] == "shapes_fw"
        assert wait_until(lambda: http_ok(stack["url"] + "/readyz"), 60)
        res = client.search("text2image", "a red circle", force={"flywheel": "shapes_fw_text"}, top_k=5)
        assert res["experiment"]["flywheel"] == "shapes_fw_text" and len(res["results"]) == 5
    finally:
        stack["consul"].put(KEY, EXPERIMENTS)
        wait_until(lambda: "shapes" not in json.dumps(client.config()["experiments"]), 10)
