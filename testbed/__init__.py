"""Programs the tests and the dev scripts run, that are not tests themselves: the node lab (real
containerd, runc and CNI), the stand-in Kubernetes API server with its kubelet half (cluster), the
benchmarks (bench), the reliability scenarios, and the small clients they share (an agent process,
an exec client, the busybox toolbox). Nothing under agent/ or cli/ imports them."""
