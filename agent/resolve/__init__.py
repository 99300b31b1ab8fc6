"""A pod to its sandbox, containers and init PIDs. Two sources answer the same question: the
runtime's CRI API (cri, cri_source) and, when it is down, the runtime's records on disk and the
cgroup tree (bundles, cgroups, proc_source); fallback picks between them in one place. The only
package below server/ that speaks gRPC, and only to the runtime."""
