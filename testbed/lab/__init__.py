"""A real single-node container runtime for tests and demos: containerd, runc and CNI, no registry.

`hack/lab` is its command line; tests use `testbed.lab.pods.Lab` to make pods with any namespace options.
"""
