"""Label and field selectors with the grammar and semantics of k8s.io/apimachinery labels/fields.

Label selectors: `a=b`, `a==b`, `a!=b` (also true when `a` is absent), `a in (x,y)`, `a notin (x,y)`
(also true when absent), `a` (exists), `!a` (does not exist). Field selectors: `=`, `==`, `!=` on
the fields the real API server indexes for each kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from testbed.cluster.status import bad_request

_KEY = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # =, !=, in, notin, exists, !
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!":
            return not has
        if self.op in ("=", "in"):
            return has and value in self.values
        return not has or value not in self.values  # != and notin


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _check_key(key: str) -> str:
    if not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise bad_request(f"unable to parse requirement: invalid label key {key!r}: name part must consist of "
                          "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                          "alphanumeric character")
    return key


def _check_value(value: str) -> str:
    if not _VALUE.match(value) or len(value) > 63:
        raise bad_request(f"unable to parse requirement: invalid label value: {value!r}: a valid label must be an "
                          "empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
                          "and end with an alphanumeric character")
    return value


_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ = re.compile(r"^(?P<key>[^=!\s]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^=!\s]*)$")


def parse_labels(text: str) -> tuple[Requirement, ...]:
    """Parse a labelSelector query value; an empty one selects everything."""
    if not text.strip():
        return ()
    reqs = []
    for part in _split_top(text):
        if not part:
            raise bad_request("unable to parse requirement: found '', expected: identifier")
        if m := _SET.match(part):
            values = frozenset(_check_value(v.strip()) for v in m["values"].split(",") if v.strip())
            if not values:
                raise bad_request("unable to parse requirement: found ')', expected: identifier")
            reqs.append(Requirement(_check_key(m["key"]), m["op"], values))
        elif m := _EQ.match(part):
            op = "=" if m["op"] in ("=", "==") else "!="
            reqs.append(Requirement(_check_key(m["key"]), op, frozenset({_check_value(m["value"])})))
        elif part.startswith("!"):
            reqs.append(Requirement(_check_key(part[1:].strip()), "!"))
        else:
            reqs.append(Requirement(_check_key(part), "exists"))
    return tuple(reqs)


def labels_match(reqs: tuple[Requirement, ...], obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


def _get(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, Mapping) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


# The field labels the real API server supports per resource (pkg/registry/core/*/strategy.go).
FIELDS = {
    "pods": ("metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
             "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP",
             "status.nominatedNodeName"),
    "nodes": ("metadata.name", "spec.unschedulable"),
    "namespaces": ("metadata.name", "status.phase"),
}


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    equal: bool
    value: str


def parse_fields(resource: str, text: str) -> tuple[FieldRequirement, ...]:
    if not text.strip():
        return ()
    reqs = []
    for part in (p.strip() for p in text.split(",")):
        m = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        name = m[1].strip()
        if name not in FIELDS.get(resource, ()):
            raise bad_request(f"field label not supported: {name}")
        reqs.append(FieldRequirement(name, m[2] != "!=", m[3].strip()))
    return tuple(reqs)


def fields_match(reqs: tuple[FieldRequirement, ...], obj: Mapping[str, Any]) -> bool:
    return all((_get(obj, r.field) == r.value) == r.equal for r in reqs)


def selector(resource: str, label_text: str, field_text: str) -> Callable[[Mapping[str, Any]], bool]:
    """One predicate for both selectors; raises a 400 `ApiError` for a malformed one."""
    labels = parse_labels(label_text)
    fields = parse_fields(resource, field_text)
    return lambda obj: labels_match(labels, obj) and fields_match(fields, obj)
