"""The search request is validated once at the edge; every refusal names the field at fault."""

from __future__ import annotations

import base64
import json

import pytest

from mmsearch.errors import BadInput
from mmsearch.experiments.spec import SCENES
from mmsearch.protos import search_pb2 as pb
from mmsearch.retrieval_service.request import MAX_OFFSET, MAX_TEXT_CHARS, MAX_TOP_K, SearchRequest, from_json, from_proto

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"
B64 = base64.b64encode(PNG).decode()


def test_text_request_from_json():
    r = from_json({"scene": "text2image", "query": {"text": "red shoes"}, "user_id": "u-1", "top_k": 5,
                   "force": {"model": "base"}})
    assert r == SearchRequest("text2image", "red shoes", None, "u-1", 5, {"model": "base"})


def test_image_request_from_json_plain_and_data_url():
    plain = from_json({"scene": "image2image", "query": {"image_b64": B64}})
    data_url = from_json({"scene": "image2image", "query": {"image_b64": "data:image/png;base64," + B64}})
    assert plain.image == data_url.image == PNG
    assert plain.text is None and plain.user_id is None and plain.top_k is None and plain.force == {}


def test_optional_fields_may_be_null_or_empty():
    r = from_json({"scene": "text2text", "query": {"text": "x", "image_b64": None}, "user_id": "", "top_k": None, "force": None})
    assert (r.user_id, r.top_k, r.force) == (None, None, {})


def test_limits_are_inclusive():
    assert from_json({"scene": "text2text", "query": {"text": "x" * MAX_TEXT_CHARS}, "top_k": MAX_TOP_K}).top_k == MAX_TOP_K
    assert from_json({"scene": "text2text", "query": {"text": "x"}, "top_k": 1, "user_id": "a" * 128}).user_id == "a" * 128


def test_force_is_copied_not_shared():
    force = {"model": "base"}
    r = from_json({"scene": "text2text", "query": {"text": "x"}, "force": force})
    force["model"] = "changed"
    assert r.force == {"model": "base"}


@pytest.mark.parametrize(
    "body, field",
    [
        ([], "body"),
        ("text", "body"),
        ({"scene": "text2text", "query": {"text": "x"}, "topk": 3}, "topk"),
        ({"scene": "text2text"}, "query"),
        ({"scene": "text2text", "query": "red shoes"}, "query"),
        ({"scene": "text2text", "query": {}}, "query"),
        ({"scene": "text2text", "query": {"text": "x", "image": "y"}}, "query.image"),
        ({"scene": "text2video", "query": {"text": "x"}}, "scene"),
        ({"query": {"text": "x"}}, "scene"),
        ({"scene": 1, "query": {"text": "x"}}, "scene"),
        ({"scene": "text2text", "query": {"text": "x", "image_b64": B64}}, "query"),
        ({"scene": "image2image", "query": {"text": "x"}}, "query"),
        ({"scene": "text2image", "query": {"image_b64": B64}}, "query"),
        ({"scene": "text2text", "query": {"text": 5}}, "query.text"),
        ({"scene": "text2text", "query": {"text": "   "}}, "query.text"),
        ({"scene": "text2text", "query": {"text": "x" * (MAX_TEXT_CHARS + 1)}}, "query.text"),
        ({"scene": "image2image", "query": {"image_b64": 123}}, "query.image_b64"),
        ({"scene": "image2image", "query": {"image_b64": "not base64!"}}, "query.image_b64"),
        ({"scene": "image2image", "query": {"image_b64": ""}}, "query.image_b64"),
        ({"scene": "image2image", "query": {"image_b64": "data:image/png;base64,"}}, "query.image_b64"),
        ({"scene": "image2image", "query": {"image_b64": B64[:-2] + "\n" + B64[-2:]}}, "query.image_b64"),
        ({"scene": "text2text", "query": {"text": "x"}, "user_id": "has space"}, "user_id"),
        ({"scene": "text2text", "query": {"text": "x"}, "user_id": "a" * 129}, "user_id"),
        ({"scene": "text2text", "query": {"text": "x"}, "user_id": 42}, "user_id"),
        ({"scene": "text2text", "query": {"text": "x"}, "user_id": "<script>"}, "user_id"),
        ({"scene": "text2text", "query": {"text": "x"}, "user_id": "a\n"}, "user_id"),
        ({"scene": "text2text", "query": {"text": "x"}, "top_k": 0}, "top_k"),
        ({"scene": "text2text", "query": {"text": "x"}, "top_k": MAX_TOP_K + 1}, "top_k"),
        ({"scene": "text2text", "query": {"text": "x"}, "top_k": -5}, "top_k"),
        ({"scene": "text2text", "query": {"text": "x"}, "top_k": "10"}, "top_k"),
        ({"scene": "text2text", "query": {"text": "x"}, "top_k": 10.0}, "top_k"),
        ({"scene": "text2text", "query": {"text": "x"}, "top_k": True}, "top_k"),
        ({"scene": "text2text", "query": {"text": "x"}, "force": ["model:base"]}, "force"),
        ({"scene": "text2text", "query": {"text": "x"}, "force": {"model": 1}}, "force.model"),
        ({"scene": "text2text", "query": {"text": "x"}, "offset": -1}, "offset"),
        ({"scene": "text2text", "query": {"text": "x"}, "offset": MAX_OFFSET + 1}, "offset"),
        ({"scene": "text2text", "query": {"text": "x"}, "offset": "10"}, "offset"),
        ({"scene": "text2text", "query": {"text": "x"}, "fields": "text"}, "fields"),
        ({"scene": "text2text", "query": {"text": "x"}, "fields": [1]}, "fields.0"),
        ({"scene": "text2text", "query": {"text": "x"}, "fields": [""]}, "fields"),
        ({"scene": "text2text", "query": {"text": "x"}, "filter": "a > 1"}, "filter"),
        ({"scene": "text2text", "query": {"text": "x"}, "filter": [{"a": 1}]}, "filter"),
        ({"scene": "text2text", "query": {"text": "x"}, "force": "model:base"}, "force"),
    ],
)
def test_every_json_refusal_names_its_field(body, field):
    with pytest.raises(BadInput) as e:
        from_json(body)
    assert e.value.message.startswith(f"{field}:"), e.value.message


def test_scene_error_lists_the_scenes():
    with pytest.raises(BadInput) as e:
        from_json({"scene": "nope", "query": {"text": "x"}})
    assert all(s in e.value.message for s in SCENES) and "'nope'" in e.value.message


def test_top_k_error_gives_type_or_range():
    with pytest.raises(BadInput, match=r"top_k: Input should be a valid integer \(got False\)"):
        from_json({"scene": "text2text", "query": {"text": "x"}, "top_k": False})
    with pytest.raises(BadInput, match=r"top_k: Input should be greater than or equal to 1 \(got 0\)"):
        from_json({"scene": "text2text", "query": {"text": "x"}, "top_k": 0})


def test_paging_fields_and_filter_from_json_and_proto_agree():
    flt = {"category": "shoes", "price": {"lt": 50}}
    j = from_json({"scene": "text2text", "query": {"text": "x"}, "top_k": 5, "offset": 10, "fields": ["text"], "filter": flt})
    p = from_proto(pb.SearchRequest(scene="text2text", query=pb.Query(text="x"), top_k=5, offset=10, fields=["text"],
                                    filter=json.dumps(flt)))
    assert j == p and (j.offset, j.fields, j.filter) == (10, ["text"], flt)


def test_proto_filter_must_be_json():
    with pytest.raises(BadInput, match="filter: not valid JSON"):
        from_proto(pb.SearchRequest(scene="text2text", query=pb.Query(text="x"), filter="price < 5"))


# --- gRPC ------------------------------------------------------------------------------------


def test_text_request_from_proto():
    r = from_proto(pb.SearchRequest(scene="text2text", query=pb.Query(text="hello"), user_id="u.1", top_k=7,
                                    force={"rerank": "wide"}))
    assert r == SearchRequest("text2text", "hello", None, "u.1", 7, {"rerank": "wide"})
    assert type(r.force) is dict


def test_image_request_from_proto_round_trips_the_wire():
    msg = pb.SearchRequest(scene="image2image", query=pb.Query(image=PNG))
    r = from_proto(pb.SearchRequest.FromString(msg.SerializeToString()))
    assert r.image == PNG and isinstance(r.image, bytes) and r.text is None


def test_proto_zero_values_mean_defaults():
    r = from_proto(pb.SearchRequest(scene="text2text", query=pb.Query(text="x")))
    assert r.user_id is None and r.top_k is None and r.force == {}


@pytest.mark.parametrize(
    "msg, field",
    [
        (pb.SearchRequest(scene="text2text"), "query"),
        (pb.SearchRequest(scene="text2text", query=pb.Query()), "query"),
        (pb.SearchRequest(scene="text2text", query=pb.Query(text="")), "query.text"),
        (pb.SearchRequest(scene="image2image", query=pb.Query(image=b"")), "query.image"),
        (pb.SearchRequest(scene="", query=pb.Query(text="x")), "scene"),
        (pb.SearchRequest(scene="image2image", query=pb.Query(text="x")), "query"),
        (pb.SearchRequest(scene="text2text", query=pb.Query(text="x"), top_k=-1), "top_k"),
        (pb.SearchRequest(scene="text2text", query=pb.Query(text="x"), top_k=MAX_TOP_K + 1), "top_k"),
        (pb.SearchRequest(scene="text2text", query=pb.Query(text="x"), user_id="white space"), "user_id"),
    ],
)
def test_every_proto_refusal_names_its_field(msg, field):
    with pytest.raises(BadInput) as e:
        from_proto(msg)
    assert e.value.message.startswith(f"{field}:"), e.value.message
