"""The CLI's commands, one module each (ns, nsmap, ps, net, exec, debug, verify, completion), and
their table (table.py): name, help, flags and the function that runs it, which main registers.

A command's module is imported only when that command runs, so importing the table (and so
`nsinspect --help`) loads neither grpc nor the kubernetes client nor yaml. A command takes the run's
Context (how to reach the agent, the credentials, the output format) and its own parsed flags.
"""
