"""UI-format workflows (what the frontend saves) checked against /object_info and converted to API prompts.

Written from the frontend's rules, independently of scripts/build_workflows.py:
- a node's widgets are its widget inputs (INT, FLOAT, STRING, BOOLEAN, COMBO, unless forceInput) in /object_info's
  input_order (required, then optional); an input with control_after_generate adds one more value right after
  its own ("fixed", "increment", "decrement", "randomize") that the API prompt never carries (so does an INT input
  named seed or noise_seed whose spec does not say control_after_generate at all), and an input with
  image_upload (LoadImage) is followed by its upload button's value, "image";
- a link into a widget input replaces the widget's value;
- mode 4 (bypass) passes each output through from the first input of the same type (the same slot first);
  mode 2 (muted) removes the node and leaves the inputs it fed unconnected;
- Note, MarkdownNote, Reroute and PrimitiveNode exist only in the frontend: notes are dropped, links through a
  Reroute are followed, a PrimitiveNode's value is written into the inputs it drives.
"""
from __future__ import annotations

import math

FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_VALUE = "image"  # what the frontend saves for LoadImage's upload button
MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


class WorkflowError(ValueError):
    pass


def _options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_widget(spec) -> bool:
    return not _options(spec).get("forceInput") and (isinstance(spec[0], list) or spec[0] in WIDGET_TYPES)


def input_specs(info: dict) -> list[tuple[str, list, bool]]:
    """(name, spec, optional) of every input in /object_info's order."""
    out = []
    for group in ("required", "optional"):
        for name in info.get("input_order", {}).get(group, []):
            out.append((name, info["input"][group][name], group == "optional"))
    return out


def combo_options(spec) -> list | None:
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO":
        return _options(spec).get("options", [])
    return None


def has_control(name: str, spec) -> bool:
    """Whether the frontend gives the widget a control_after_generate widget: when its spec says so, or, when the
    spec does not say, for an INT named seed or noise_seed (the frontend's integer widget does this)."""
    flag = _options(spec).get("control_after_generate")
    if flag is None:
        return spec[0] == "INT" and name in ("seed", "noise_seed")
    return bool(flag)


def widget_values(node: dict, info: dict) -> dict:
    """Widget name -> value of a UI node; raises WorkflowError when widgets_values does not fit the schema."""
    values = list(node.get("widgets_values") or [])
    out, i = {}, 0
    for name, spec, _ in input_specs(info):
        if not is_widget(spec):
            continue
        if i >= len(values):
            raise WorkflowError(f"node {node['id']} ({node['type']}): widgets_values has {len(values)} entries, "
                                f"too few for widget {name!r}")
        out[name] = values[i]
        i += 1
        if has_control(name, spec):
            if i >= len(values) or values[i] not in CONTROL_VALUES:
                raise WorkflowError(f"node {node['id']} ({node['type']}): {name!r} must be followed by its "
                                    f"control_after_generate value (one of {sorted(CONTROL_VALUES)}), got "
                                    f"{values[i] if i < len(values) else 'nothing'!r}")
            i += 1
        if _options(spec).get("image_upload"):
            if i >= len(values) or values[i] != UPLOAD_VALUE:
                got = values[i] if i < len(values) else "nothing"
                raise WorkflowError(f"node {node['id']} ({node['type']}): {name!r} must be followed by its upload "
                                    f"button's value {UPLOAD_VALUE!r}, got {got!r}")
            i += 1
    if i != len(values):
        raise WorkflowError(f"node {node['id']} ({node['type']}): widgets_values has {len(values)} entries, the "
                            f"schema takes {i}: {values!r}")
    return out


def check_value(name: str, spec, value, model_files=()) -> str | None:
    """Why `value` does not fit the widget `spec`, or None. A combo of model files (empty here because the files
    are absent) accepts a value that the node's properties.models names."""
    kind, opts = spec[0], _options(spec)
    options = combo_options(spec)
    if options is not None:
        if value in options:
            return None
        if value in model_files:
            return None
        return f"{name}={value!r} is not one of the options {options[:12]}"
    if kind == "INT":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name}={value!r} is not an integer"
    elif kind == "FLOAT":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            return f"{name}={value!r} is not a number"
    elif kind == "STRING":
        return None if isinstance(value, str) else f"{name}={value!r} is not a string"
    elif kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"{name}={value!r} is not a boolean"
    if "min" in opts and value < opts["min"]:
        return f"{name}={value!r} is below the minimum {opts['min']}"
    if "max" in opts and value > opts["max"]:
        return f"{name}={value!r} is above the maximum {opts['max']}"
    return None


def validate(workflow: dict, object_info: dict) -> list[str]:
    """Every problem the frontend or the server would have with this UI workflow."""
    errors = []
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        if key not in workflow:
            errors.append(f"top-level key {key!r} is missing")
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    if len(nodes) != len(workflow.get("nodes", [])):
        errors.append("node ids are not unique")
    if nodes and workflow.get("last_node_id", 0) < max(nodes):
        errors.append("last_node_id is below the largest node id")
    links = {l[0]: l for l in workflow.get("links", [])}
    if links and workflow.get("last_link_id", 0) < max(links):
        errors.append("last_link_id is below the largest link id")
    for node in nodes.values():
        where = f"node {node['id']} ({node['type']})"
        for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties"):
            if key not in node:
                errors.append(f"{where}: key {key!r} is missing")
        if node["type"] in FRONTEND_ONLY:
            continue
        info = object_info.get(node["type"])
        if info is None:
            errors.append(f"{where}: node type is not in /object_info")
            continue
        try:
            values = widget_values(node, info)
        except WorkflowError as e:
            errors.append(str(e))
            continue
        model_files = {m["name"] for m in node.get("properties", {}).get("models", [])}
        specs = {name: spec for name, spec, _ in input_specs(info)}
        for name, value in values.items():
            problem = check_value(name, specs[name], value, model_files)
            if problem:
                errors.append(f"{where}: {problem}")
        for slot, entry in enumerate(node.get("inputs", [])):
            if entry["name"] not in specs:
                errors.append(f"{where}: input {entry['name']!r} is not in the schema")
            link = entry.get("link")
            if link is None:
                continue
            if link not in links:
                errors.append(f"{where}: input {entry['name']!r} refers to missing link {link}")
            elif links[link][3] != node["id"] or links[link][4] != slot:
                errors.append(f"{where}: link {link} does not end at input {entry['name']!r} (slot {slot})")
        for slot, entry in enumerate(node.get("outputs", [])):
            if slot >= len(info["output"]) or entry["type"] != info["output"][slot]:
                errors.append(f"{where}: output {slot} {entry.get('type')!r} does not match {info['output']}")
            for link in entry.get("links") or []:
                if link not in links or links[link][1] != node["id"] or links[link][2] != slot:
                    errors.append(f"{where}: output {slot} lists link {link}, which does not start there")
    for link_id, origin, origin_slot, target, target_slot, kind in links.values():
        if origin not in nodes or target not in nodes:
            errors.append(f"link {link_id} joins missing nodes {origin} -> {target}")
            continue
        dst = nodes[target]
        if target_slot >= len(dst["inputs"]) or dst["inputs"][target_slot].get("link") != link_id:
            errors.append(f"link {link_id}: node {target} input {target_slot} does not refer back to it")
            continue
        src_info, dst_info = object_info.get(nodes[origin]["type"]), object_info.get(dst["type"])
        if src_info is None or dst_info is None:
            continue
        produced = src_info["output"][origin_slot]
        spec = dict((n, s) for n, s, _ in input_specs(dst_info)).get(dst["inputs"][target_slot]["name"])
        if spec is None:
            continue
        wanted = "COMBO" if combo_options(spec) is not None else spec[0]
        if not _types_match(produced, wanted):
            errors.append(f"link {link_id}: {nodes[origin]['type']} gives {produced!r} but {dst['type']}."
                          f"{dst['inputs'][target_slot]['name']} takes {wanted!r}")
    return errors


def _types_match(produced, wanted) -> bool:
    if isinstance(produced, list):
        produced = "COMBO"
    if "*" in (produced, wanted) or produced == wanted:
        return True
    return bool(set(str(produced).split(",")) & set(str(wanted).split(",")))


def to_api(workflow: dict, object_info: dict) -> dict:
    """The API prompt ({id: {"class_type", "inputs", "_meta"}}) that the frontend would queue."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {l[0]: l for l in workflow["links"]}

    def resolve(link_id, seen=()):
        """(origin id, slot) that really feeds this link, a ("value", v) of a PrimitiveNode, or None."""
        if link_id is None or link_id not in links:
            return None
        _, origin, slot, _, _, kind = links[link_id]
        if origin in seen:
            raise WorkflowError(f"bypass/reroute loop through node {origin}")
        src = nodes[origin]
        if src["type"] == "PrimitiveNode":
            return ("value", src["widgets_values"][0])
        if src["type"] == "Reroute":
            return resolve(src["inputs"][0].get("link"), (*seen, origin))
        if src.get("mode", 0) == MODE_NEVER:
            return None
        if src.get("mode", 0) == MODE_BYPASS:
            out_type = src["outputs"][slot]["type"]
            candidates = [i for i, e in enumerate(src["inputs"]) if _types_match(e["type"], out_type)]
            if not candidates:
                return None
            index = slot if slot in candidates else candidates[0]
            return resolve(src["inputs"][index].get("link"), (*seen, origin))
        return (str(origin), slot)

    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY or node.get("mode", 0) != MODE_ALWAYS:
            continue
        info = object_info[node["type"]]
        inputs = widget_values(node, info)
        for entry in node.get("inputs", []):
            if entry.get("link") is None:
                continue
            source = resolve(entry["link"])
            if source is None:
                inputs.pop(entry["name"], None)
            elif source[0] == "value":
                inputs[entry["name"]] = source[1]
            else:
                inputs[entry["name"]] = [source[0], source[1]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or info.get("display_name") or node["type"]}}
    return prompt
