"""Running a command in a container's namespaces, as the container: the helper processes (fork
server, enterer, the static reaper), what they read of the target (credentials, environment,
confinement), the tools mode, and the agent's sessions that drive them. Everything a pod's
processes can see or attack lives here; the stage table is in helper.py."""
