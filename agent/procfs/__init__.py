"""The one /proc layer: a process's namespaces read without ever mistaking one process for another,
pid dirfds and the errnos that mean "gone", the walk over every process, and cgroup files.
Knows the kernel's formats, not Kubernetes: which pod a cgroup names is resolve's business."""
