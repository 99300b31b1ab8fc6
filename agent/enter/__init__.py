"""Running a command in a container's namespaces, as the container: the helper processes (fork
server, enterer, the static reaper), what they read of the target (credentials, environment,
confinement), the tools mode, and the agent's sessions that drive them. Everything a pod's
processes can see or attack lives here; the stage table is in forkserver.py.

  helper processes  forkserver (the `python -m` entry: fork server, spares, once), warmup (before
                    the first session: warmed, then sealed), enterer (one session's steps on the
                    node's side), join (the target held and its namespaces joined), creds (who the
                    command runs as, its environment), confine (the container's confinement),
                    toolbox (tools mode), spawn (finding the program, the static reaper: reaper.c),
                    failure (what a failure reports)
  the agent's side  sessions (all sessions), session (one), stdio (its pipes or pty), subtree (its
                    processes killed in passes), confinecheck (the reaper's confinement checked
                    from the node's side), launchers (how the helper starts), cgroup (the helpers'
                    own)

Nothing here speaks gRPC: plans come from core/plan.py, failures go out as core exception names."""
