"""`mmsearch search`: the shell's way into the API; bad flags are refused before any request."""

from __future__ import annotations

from mmsearch.client.search_cli import main, render


def test_render_numbers_hits_from_the_offset_and_says_how_to_page_on():
    out = {"offset": 10, "has_more": True, "results": [
        {"id": "p1", "score": 0.91234, "score_type": "cosine", "doc": {"text": "Red running shoes"}},
        {"id": "p2", "score": 0.5, "score_type": "rerank", "doc": None}]}
    text = render(out)
    assert text.splitlines()[0].split() == ["11", "p1", "0.9123", "cosine", "Red", "running", "shoes"]
    assert text.splitlines()[-1] == "(2 hits, more with --offset 12)"
    assert render({"offset": 0, "has_more": False, "results": []}) == "(0 hits)"


def test_bad_filter_and_missing_image_are_clear_errors(capsys):
    assert main(["shoes", "--filter", "{category: shoes}", "--url", "http://127.0.0.1:1"]) == 2
    assert "--filter: not valid JSON" in capsys.readouterr().err
    assert main(["--scene", "image2image", "--image", "/no/such.png", "--url", "http://127.0.0.1:1"]) != 0
    assert "--image: no such file" in capsys.readouterr().err


def test_unreachable_api_is_unavailable_naming_it(capsys):
    code = main(["shoes", "--url", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code != 0 and "retrieval service at http://127.0.0.1:1" in err
