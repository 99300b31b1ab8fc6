"""`Status` error bodies shaped exactly like k8s.io/apimachinery's api/errors and field errors.

Clients (kubectl, the Python client, our CLI) branch on `reason`, `code` and `details`, so each
constructor here mirrors one apimachinery constructor: same message format, same details.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class FieldError:
    """One field.Error: type, path and message body as `ErrorBody()` prints it."""

    type: str  # FieldValueForbidden, FieldValueNotFound, ...
    field: str
    body: str

    def __str__(self) -> str:
        return f"{self.field}: {self.body}"


def _quote(value: object) -> str:
    """Go's %q for the strings we quote (json.dumps escapes the same characters we produce)."""
    return json.dumps(str(value), ensure_ascii=False)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError("FieldValueForbidden", field, f"Forbidden: {detail}")


def not_found(field: str, value: str) -> FieldError:
    return FieldError("FieldValueNotFound", field, f"Not found: {_quote(value)}")


def duplicate(field: str, value: str) -> FieldError:
    return FieldError("FieldValueDuplicate", field, f"Duplicate value: {_quote(value)}")


def required(field: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def invalid(field: str, value: object, detail: str) -> FieldError:
    shown = _quote(value) if isinstance(value, str) else json.dumps(value)
    return FieldError("FieldValueInvalid", field, f"Invalid value: {shown}: {detail}")


def not_supported(field: str, value: str, supported: list[str]) -> FieldError:
    choices = ", ".join(_quote(s) for s in supported)
    body = f"Unsupported value: {_quote(value)}: supported values: {choices}"
    return FieldError("FieldValueNotSupported", field, body)


class ApiError(Exception):
    """An error answered as a `Status` object with its HTTP code."""

    def __init__(self, code: int, reason: str, message: str, details: Json | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Json:
        body: Json = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": self.message, "reason": self.reason}
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _resource(group: str, resource: str) -> str:
    """schema.GroupResource.String(): `pods`, `tokenreviews.authentication.k8s.io`."""
    return f"{resource}.{group}" if group else resource


def _details(name: str, group: str, kind: str) -> Json:
    details: Json = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    return details


def not_found_error(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(404, "NotFound", f"{_resource(group, resource)} {_quote(name)} not found",
                    _details(name, group, resource))


def path_not_found() -> ApiError:
    """What the mux answers for a path nothing serves: kubectl reads the empty details.name
    as 'ephemeral containers are disabled for this cluster'."""
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(resource: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f"{resource} {_quote(name)} already exists", _details(name, "", resource))


def conflict(resource: str, name: str) -> ApiError:
    why = "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, "Conflict", f"Operation cannot be fulfilled on {resource} {_quote(name)}: {why}",
                    _details(name, "", resource))


def invalid_error(kind: str, name: str, errors: list[FieldError], group: str = "") -> ApiError:
    """apierrors.NewInvalid: the aggregate message drops duplicates and brackets several."""
    unique: list[str] = []
    for err in errors:
        if str(err) not in unique:
            unique.append(str(err))
    qualified = f"{kind}.{group}" if group else kind
    message = f"{qualified} {_quote(name)} is invalid"
    if unique:
        message += ": " + (unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]")
    causes = [{"reason": e.type, "message": e.body, "field": e.field} for e in errors]
    details = _details(name, group, kind)
    details["causes"] = causes
    return ApiError(422, "Invalid", message, details)


def forbidden_error(resource: str, name: str, why: str, group: str = "") -> ApiError:
    """apierrors.NewForbidden, as RBAC denials and admission plugins produce it."""
    qualified = _resource(group, resource)
    message = f"{qualified} {_quote(name)} is forbidden: {why}" if name else f"{qualified} is forbidden: {why}"
    return ApiError(403, "Forbidden", message, _details(name, group, resource))


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    """apierrors.NewResourceExpired: what a watch from a compacted resourceVersion gets."""
    return ApiError(410, "Expired", message)


def method_not_supported(resource: str, action: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"{action} is not supported on resources of kind {_quote(resource)}",
                    {"kind": resource})


def unsupported_media_type(accepted: list[str]) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    + ", ".join(accepted))
