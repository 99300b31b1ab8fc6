"""The one /proc layer. procns: a process's namespaces read without ever mistaking one process for
another (pid dirfds, start times, the errnos that mean "gone"), the host's namespaces, nsfs's
device for NamespaceId.from_link. walk: the one walk over every process of the node, through a
/proc dir fd, for the node map, the outsider pass and the cgroup fallback alike.

Knows the kernel's formats, not Kubernetes: which pod a cgroup names is resolve's business. Imports
only core and linux; no gRPC, no runtime, no caches of anything a process can change."""
