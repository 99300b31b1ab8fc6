"""A Kubernetes API server stand-in for tests, whose kubelet runs pods on the lab's containerd.

See testbed/cluster/README.md for what it implements and what it does not.
"""
