"""The nsinspect node agent: resolves pods to processes and namespaces, and serves them over gRPC.

One package per job; the arrows point one way (tests/test_layout.py keeps them so):

    core  <-  procfs  <-  resolve  <-  observe, enter  <-  server  <-  main

- core:     values only (the model, the one NamespaceId, the exception family, input rules).
- procfs:   the one /proc layer: pid dirfds, "gone", walking every process, cgroup files.
- resolve:  a pod to its sandbox, containers and PIDs: CRI first, the runtime's records on disk after.
- observe:  what a resolved pod holds: namespaces compared and verified, processes, network, the node map.
- enter:    running a command in a container's namespaces: the helper processes and the sessions.
- server:   the gRPC face: services, the wire mapping, auth, admission, audit and metrics.
- main:     `nsinspect-agent`, the composition of all of the above.
"""
