"""The nsinspect command line (also the `kubectl nsinspect` plugin): it talks to the Kubernetes API
and to the agent on a pod's node, and turns the agent's answers into tables, JSON or YAML.

main.py parses the command line and builds the run's Context (context.py: how to reach the agent,
the credentials, the kube client made on first use); commands/ holds one module per command and
the table that registers them. The plumbing they share, one job each: kube (the API server),
portforward (a pod's port through it), agentclient (a channel to an agent, its errors in one
line), target (which agent serves the pod, and one call to it), fanout (many pods on many nodes),
render (text and JSON/YAML), facts (what a pod spec says), tty (the local terminal), errors (exit
codes). Imports inside are relative; from outside only `nsinspect.proto` (the wire). It never
imports agent/: the two meet only over gRPC.
"""
