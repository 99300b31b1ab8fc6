"""What a resolved pod holds, read from the node's side without touching the pod: its namespaces
compared and verified against the pod's facts, its processes, its network, and the node-wide map.
Reads the kernel through procfs and pods through resolve; knows nothing of gRPC or of callers."""
