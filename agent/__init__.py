"""The nsinspect node agent: resolves pods to processes and namespaces, and serves them over gRPC."""
