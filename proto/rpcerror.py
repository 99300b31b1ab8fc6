"""Read the status out of a grpc.RpcError; the typed stubs cannot express that it is also a Call."""

from __future__ import annotations

import grpc


def rpc_status(err: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    """(code, details) of a failed call, or (None, text) for errors that carry no status."""
    code = getattr(err, "code", None)
    details = getattr(err, "details", None)
    return (code() if callable(code) else None, (details() if callable(details) else None) or str(err))
