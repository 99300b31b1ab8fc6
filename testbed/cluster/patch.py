"""The three PATCH flavours the API server accepts for built-in kinds, for Pod objects.

- strategic merge (`application/strategic-merge-patch+json`): maps merge; lists with a merge key
  (containers and ephemeralContainers by `name`, env by `name`, ...) merge item by item; other
  lists are replaced. Directives: `$patch: replace|delete|merge`, `$setElementOrder/<list>`,
  `$deleteFromPrimitiveList/<list>`, `$retainKeys`.
- JSON merge patch (RFC 7386, `application/merge-patch+json`): maps merge, every list is replaced.
- JSON patch (RFC 6902, `application/json-patch+json`): add, remove, replace, move, copy, test.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from testbed.cluster.status import ApiError, bad_request, unsupported_media_type

Json = dict[str, Any]
Path = tuple[str, ...]

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
ACCEPTED = [JSON_PATCH, MERGE, APPLY, STRATEGIC]

_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
# patchMergeKey of the Pod's lists (k8s.io/api/core/v1 types.go), "*" standing for any list item.
MERGE_KEYS: dict[Path, str] = {
    ("metadata", "ownerReferences"): "uid",
    ("spec", "volumes"): "name",
    ("spec", "imagePullSecrets"): "name",
    ("spec", "hostAliases"): "ip",
    ("status", "conditions"): "type",
    ("status", "podIPs"): "ip",
    ("status", "hostIPs"): "ip",
}
for _list in _CONTAINER_LISTS:
    MERGE_KEYS[("spec", _list)] = "name"
    for _field, _key in (("env", "name"), ("ports", "containerPort"), ("volumeMounts", "mountPath"),
                         ("volumeDevices", "devicePath")):
        MERGE_KEYS[("spec", _list, "*", _field)] = _key
MERGE_PRIMITIVES: set[Path] = {("metadata", "finalizers")}


class PatchError(ApiError):
    """A patch that is well-formed JSON but cannot be applied (422, as the server answers)."""

    def __init__(self, message: str) -> None:
        super().__init__(422, "Invalid", message)


def _strip(value: Any) -> Any:
    """A patch value with its directives removed, for insertion where nothing merges into it."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$") and v is not None}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def _merge_list(original: list[Any], patch: list[Any], key: str, path: Path) -> list[Any]:
    result = copy.deepcopy(original)
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip(i) for i in patch if not (isinstance(i, dict) and i.get("$patch") == "replace")]
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"unable to merge a list of primitives into the list at {'.'.join(path)}")
        if key not in item:
            raise bad_request(f"map: {item} does not contain declared merge key: {key}")
        index = next((i for i, o in enumerate(result) if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip(item))
        else:
            result[index] = _merge_map(result[index], item, (*path, "*"))
    return result


def _merge_map(original: Json, patch: Json, path: Path) -> Json:
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip(patch)  # type: ignore[no-any-return]
    if directive not in (None, "merge", "delete"):
        raise bad_request(f"Unknown patch type: {directive}")
    result = copy.deepcopy(original)
    for name, value in patch.items():
        if name.startswith("$"):
            continue
        here = (*path, name)
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(name, None)
        elif isinstance(value, dict) and isinstance(result.get(name), dict):
            result[name] = _merge_map(result[name], value, here)
        elif isinstance(value, list) and here in MERGE_KEYS:
            result[name] = _merge_list(_list_at(result, name), value, MERGE_KEYS[here], here)
        elif isinstance(value, list) and here in MERGE_PRIMITIVES:
            current = _list_at(result, name)
            result[name] = current + [v for v in value if v not in current]
        else:
            result[name] = _strip(value)
    for name, value in patch.items():
        if name.startswith("$deleteFromPrimitiveList/") and isinstance(value, list):
            field = name.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
        elif name.startswith("$setElementOrder/") and isinstance(value, list):
            field = name.split("/", 1)[1]
            result[field] = _reorder(result.get(field) or [], value, MERGE_KEYS.get((*path, field)))
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _list_at(obj: Json, name: str) -> list[Any]:
    value = obj.get(name)
    return value if isinstance(value, list) else []


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """`$setElementOrder`: listed items first, in the given order; the rest keep their order after."""
    def ident(v: Any) -> Any:
        return v.get(key) if key and isinstance(v, dict) else json.dumps(v, sort_keys=True)
    wanted = [ident(o) for o in order]
    ranked = sorted(enumerate(items), key=lambda p: (wanted.index(ident(p[1])) if ident(p[1]) in wanted
                                                     else len(wanted) + p[0]))
    return [v for _, v in ranked]


def strategic_merge(original: Json, patch: Any) -> Json:
    if not isinstance(patch, dict):
        raise bad_request("json: cannot unmarshal array into Go value of type map[string]interface {}")
    return _merge_map(original, patch, ())


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386: null deletes, objects merge, anything else (lists included) replaces."""
    if not isinstance(patch, dict):
        return patch
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str], op: str, path: str) -> tuple[Any, str]:
    cur = doc
    for part in parts[:-1]:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise PatchError(f"{op} operation does not apply: doc is missing path: \"{path}\": missing value")
    return cur, parts[-1]


def _get(doc: Any, path: str, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent, last = _parent(doc, parts, op, path)
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent[int(last)]
    raise PatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")


def _remove(doc: Any, path: str, op: str) -> Any:
    parent, last = _parent(doc, _pointer(path), op, path)
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        return parent.pop(int(last))
    raise PatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")


def _add(doc: Any, path: str, value: Any, op: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _parent(doc, parts, op, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and (last == "-" or (last.isdigit() and int(last) <= len(parent))):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        raise PatchError(f"{op} operation does not apply: doc is missing path: \"{path}\": missing value")
    return doc


def json_patch(original: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(original)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request(f"invalid JSON patch operation: {json.dumps(operation)}")
        op, path = operation["op"], operation["path"]
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(operation.get("value")), op)
        elif op == "remove":
            _remove(doc, path, op)
        elif op == "replace":
            _get(doc, path, op)
            parts = _pointer(path)
            if not parts:
                doc = copy.deepcopy(operation.get("value"))
            else:
                parent, last = _parent(doc, parts, op, path)
                parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(operation.get("value"))
        elif op in ("move", "copy"):
            value = _remove(doc, operation["from"], op) if op == "move" else copy.deepcopy(
                _get(doc, operation["from"], op))
            doc = _add(doc, path, value, op)
        elif op == "test":
            if _get(doc, path, op) != operation.get("value"):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise bad_request(f"Unexpected kind: {op}")
    return doc


def apply(content_type: str, original: Json, body: bytes) -> Json:
    """Apply a PATCH body by its Content-Type; raises 400/415/422 `ApiError`s as the server does."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in (STRATEGIC, MERGE, JSON_PATCH):
        raise unsupported_media_type(ACCEPTED)
    try:
        patch = json.loads(body or b"null")
    except ValueError as err:
        raise bad_request(f"error decoding patch: {err}") from None
    if kind == STRATEGIC:
        result = strategic_merge(original, patch)
    elif kind == MERGE:
        result = merge_patch(original, patch)
    else:
        result = json_patch(original, patch)
    if not isinstance(result, dict):
        raise PatchError("the patch did not produce an object")
    return result
