"""A pod to its sandbox, containers and init PIDs. Two PodSources (source.py: one protocol, one
PodList) answer the same question: the runtime's CRI API (cri: the client, cri_source) and, when it
is down, the runtime's records on disk (bundles, proc_source) with the cgroup tree for pods no
record names (cgroups: the Kubernetes cgroup layouts; cgroup_pods); fallback.Resolver, a PodSource
too, picks between them in one place.

Reads /proc only through procfs. The only package below server/ that speaks gRPC, and only to the
runtime (cri, cri_source); it never imports observe, enter or server (its counts go out through
fallback.Counts)."""
