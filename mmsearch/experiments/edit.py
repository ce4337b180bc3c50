"""Give a new model an arm, or promote a winning arm: edit the experiments config (the watched file,
or Consul KV) safely.

The arm goes into a layer of its own (default ``flywheel``), appended after the scene's other layers
so its model and index win, with a small share taken from that layer's ``control`` arm (which sets
nothing, so it serves what the scene serves today). The YAML is edited round-trip (comments and
layout kept), validated with the same parser the services use before anything is written, written
atomically (file) or with check-and-set (Consul), so a concurrent edit is never overwritten.
Re-adding an arm that is already there with the same settings changes nothing. Promoting an arm
makes its settings the scene's defaults and removes its layer.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmsearch.clients.consul_kv import acl_denied, consul_client
from mmsearch.errors import AlreadyExists, BadInput, NotFound, Unauthenticated, Unavailable
from mmsearch.experiments.spec import parse_experiments

CONTROL = "control"


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()  # round-trip: comments, order and flow style survive
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)  # block sequences indented under their key, as the shipped files are
    return y


def add_arm(text: str, scene: str, layer: str, arm: str, params: dict[str, Any], traffic: float) -> tuple[str, bool]:
    """The experiments YAML with ``arm`` (``params``, ``traffic`` %) in ``layer`` of ``scene``;
    (new text, changed). The share comes from the layer's control arm."""
    if not 0 < traffic < 100:
        raise BadInput(f"traffic must be between 0 and 100 %, got {traffic}")
    parse_experiments(text, "the current experiments")  # refuse to build on a config the services refuse
    y = _yaml()
    doc = y.load(text) or {}
    scenes = doc.setdefault("scenes", {})
    if scene not in scenes:
        raise NotFound(f"scene {scene!r} is not in the experiments config (scenes: {', '.join(scenes) or 'none'})")
    s = scenes[scene] if scenes[scene] is not None else {}
    scenes[scene] = s
    layers = s.setdefault("layers", [])
    found = next((lay for lay in layers if lay.get("name") == layer), None)
    if found is None:
        found = {"name": layer, "salt": f"{layer}-{secrets.token_hex(4)}", "arms": [{"name": CONTROL, "traffic": 100}]}
        layers.append(found)
    arms = found["arms"]
    existing = next((a for a in arms if a.get("name") == arm), None)
    if existing is not None:
        same = all(existing.get(k) == v for k, v in params.items()) and float(existing.get("traffic", 0)) == traffic
        if same:
            return text, False
        raise AlreadyExists(f"layer {layer} of {scene} already has an arm {arm!r} with other settings: choose another name")
    control = next((a for a in arms if a.get("name") == CONTROL), None)
    if control is None:
        raise BadInput(f"layer {layer} of {scene} has no {CONTROL!r} arm to take traffic from")
    if float(control.get("traffic", 0)) < traffic:
        raise BadInput(f"the {CONTROL} arm of layer {layer} has {control.get('traffic')} % left, "
                       f"less than the {traffic} % asked for: retire an arm first")
    left = float(control["traffic"]) - traffic
    control["traffic"] = int(left) if left.is_integer() else left
    arms.append({"name": arm, "traffic": int(traffic) if float(traffic).is_integer() else traffic, **params})
    buf = io.StringIO()
    y.dump(doc, buf)
    out = buf.getvalue()
    parse_experiments(out, "the edited experiments")  # what we write is what the services accept
    return out, True


def promote_arm(text: str, scene: str, layer: str, arm: str) -> tuple[str, dict[str, Any]]:
    """The experiments YAML with ``arm``'s settings made ``scene``'s defaults and ``layer`` removed;
    (new text, the settings promoted, plus ``_dropped_arms``: the layer's other arms, if any). Refused
    when another layer's arms set one of those settings (they would still override the defaults for
    their users)."""
    parse_experiments(text, "the current experiments")
    y = _yaml()
    doc = y.load(text) or {}
    s = (doc.get("scenes") or {}).get(scene)
    if s is None:
        raise NotFound(f"scene {scene!r} is not in the experiments config")
    layers = s.get("layers") or []
    found = next((lay for lay in layers if lay.get("name") == layer), None)
    if found is None:
        raise NotFound(f"scene {scene} has no layer {layer!r} (layers: {', '.join(str(lay.get('name')) for lay in layers) or 'none'})")
    chosen = next((a for a in found.get("arms") or [] if a.get("name") == arm), None)
    if chosen is None or arm == CONTROL:
        raise NotFound(f"layer {layer} of {scene} has no arm {arm!r} to promote")
    params = {k: v for k, v in chosen.items() if k not in ("name", "traffic")}
    dropped = [str(a.get("name")) for a in found.get("arms") or [] if a.get("name") not in (arm, CONTROL)]
    for other in layers:
        if other is found:
            continue
        clash = sorted({k for a in other.get("arms") or [] for k in a if k in params})
        if clash:
            raise BadInput(f"layer {other.get('name')} of {scene} sets {', '.join(clash)} in its arms, which would still override "
                           f"the promoted defaults for its users: retire that layer first, or edit the config by hand")
    defaults = s.get("defaults")
    if defaults is None:
        s["defaults"] = defaults = {}
    for k, v in params.items():
        defaults[k] = v
    layers.remove(found)
    if not layers:
        del s["layers"]
    buf = io.StringIO()
    y.dump(doc, buf)
    out = buf.getvalue()
    parse_experiments(out, "the edited experiments")
    return out, {**params, **({"_dropped_arms": dropped} if dropped else {})}


def edit_file(path: Path, edit: Callable[[str], tuple[str, bool]]) -> bool:
    """Apply ``edit`` to the experiments file, replacing it atomically if it changed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(f"cannot read the experiments file {path}: {e}") from e
    out, changed = edit(text)
    if changed:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(out, encoding="utf-8")
        try:  # another writer since our read (a person, the flywheel, promote): theirs is kept, ours refused
            if path.read_text(encoding="utf-8") != text:
                raise Unavailable(f"experiments file {path}", "it changed while it was edited; run again")
            os.replace(tmp, path)  # the watcher never reads half a file
        finally:
            tmp.unlink(missing_ok=True)
    return changed


def edit_consul(addr: str, key: str, token: str, edit: Callable[[str], tuple[str, bool]]) -> bool:
    """Apply ``edit`` to the experiments in Consul with check-and-set: a concurrent edit is never lost."""
    try:
        c = consul_client(addr, token)
        _, item = c.kv.get(key)
        if item is None or item.get("Value") is None:
            raise NotFound(f"consul at {addr} has no experiments at {key} (push one first: mmsearch experiments push)")
        out, changed = edit(item["Value"].decode("utf-8"))
        if changed and not c.kv.put(key, out, cas=item["ModifyIndex"]):
            raise Unavailable(f"consul at {addr}", f"{key} changed while it was edited; run again")
        return changed
    except (BadInput, NotFound, AlreadyExists, Unavailable):
        raise
    except Exception as e:  # requests / consul errors
        if acl_denied(e):
            raise Unauthenticated(f"consul at {addr}: permission denied on {key} (set consul.token / MMSEARCH_CONSUL_TOKEN)") from e
        raise Unavailable(f"consul at {addr}", str(e)) from e


def add_arm_to_file(path: Path, scene: str, layer: str, arm: str, params: dict[str, Any], traffic: float) -> bool:
    return edit_file(path, lambda text: add_arm(text, scene, layer, arm, params, traffic))


def add_arm_to_consul(addr: str, key: str, token: str, scene: str, layer: str, arm: str, params: dict[str, Any],
                      traffic: float) -> bool:
    return edit_consul(addr, key, token, lambda text: add_arm(text, scene, layer, arm, params, traffic))
