"""The JSON filter form compiles to a Milvus expression, and refuses what it cannot check, naming the field."""

from __future__ import annotations

import pytest

from mmsearch.api.filters import MAX_TERMS, combine, compile_filter, parse_field_spec, quote
from mmsearch.errors import BadInput

FIELDS = {"category": "str", "price": "float", "stock": "int", "active": "bool"}


@pytest.mark.parametrize("f, expr", [
    (None, ""),
    ({"category": "shoes"}, 'category == "shoes"'),
    ({"price": {"gte": 10, "lt": 50}}, "(price >= 10.0 and price < 50.0)"),
    ({"stock": {"in": [1, 2]}}, "stock in [1, 2]"),
    ({"active": False}, "active == false"),
    ({"category": "a", "stock": {"ne": 0}}, '(category == "a" and stock != 0)'),
    ({"or": [{"category": "a"}, {"not": {"price": {"gt": 3}}}]}, '(category == "a" or not (price > 3.0))'),
    ({"id": {"in": ["d1", "d\"2"]}}, 'id in ["d1", "d\\"2"]'),
])
def test_compiles_to_a_milvus_expression(f, expr):
    assert compile_filter(f, FIELDS) == expr


@pytest.mark.parametrize("f, where", [
    ({"colour": "red"}, "filter.colour: unknown field"),
    ({"price": "cheap"}, "filter.price: field price holds float values"),
    ({"price": True}, "filter.price: field price holds float values"),
    ({"stock": 1.5}, "filter.stock: field stock holds int values"),
    ({"category": 3}, "filter.category: field category holds str values"),
    ({"category": "x" * 600}, "filter.category: field category holds str of at most 512"),
    ({"price": float("nan")}, "filter.price: field price holds float values"),
    ({"price": {"gte": 10**400}}, "filter.price.gte: field price holds float values"),
    ({"stock": -(2**63)}, "filter.stock: field stock holds int values"),
    ({"category": "\ud800"}, "filter.category: field category holds str"),
    ({"active": {"gt": True}}, "filter.active.gt: field active is bool"),
    ({"stock": {"between": [1, 2]}}, "filter.stock.between: unknown operator"),
    ({"stock": {"in": []}}, "filter.stock.in: expected a list"),
    ({"stock": {"in": [1, "2"]}}, "filter.stock.in[1]: field stock holds int"),
    ({"and": {"stock": 1}}, "filter.and: expected a non-empty list"),
    ({"or": [{"stock": 1}, "x"]}, "filter.or[1]: expected a non-empty object"),
    ({}, "filter: expected a non-empty object"),
    ({"stock": {}}, "filter.stock: empty condition"),
])
def test_refusals_name_the_field(f, where):
    with pytest.raises(BadInput) as e:
        compile_filter(f, FIELDS)
    assert e.value.message.startswith(where), e.value.message


def test_unknown_field_lists_what_the_index_stores():
    with pytest.raises(BadInput, match="stores: active, category, id, price, stock"):
        compile_filter({"colour": "red"}, FIELDS)


def test_hostile_sizes_are_bounded():
    deep: dict = {"stock": 1}
    for _ in range(20):
        deep = {"not": deep}
    with pytest.raises(BadInput, match="nested deeper"):
        compile_filter(deep, FIELDS)
    with pytest.raises(BadInput, match=f"more than {MAX_TERMS}"):
        compile_filter({"or": [{"stock": i} for i in range(MAX_TERMS + 1)]}, FIELDS)


def test_values_cannot_break_out_of_their_string():
    expr = compile_filter({"category": 'x" or id != "'}, FIELDS)
    assert expr == 'category == "x\\" or id != \\""'
    assert quote("a\\b\nc") == '"a\\\\b\\nc"'


def test_combine_ands_the_non_empty():
    assert combine("", "") == ""
    assert combine('id != "x"', "") == 'id != "x"'
    assert combine('id != "x"', "stock > 1") == '(id != "x") and (stock > 1)'


@pytest.mark.parametrize("spec, out", [("category:str", ("category", "str")), ("price:float", ("price", "float"))])
def test_field_spec(spec, out):
    assert parse_field_spec(spec) == out


@pytest.mark.parametrize("spec", ["category", "category:text", "1x:int", "id:str", "a-b:int", ":int"])
def test_bad_field_spec(spec):
    with pytest.raises(BadInput):
        parse_field_spec(spec)
