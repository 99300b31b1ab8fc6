"""What the agent needs of the kernel that Python's os module lacks, below everything that touches a
process: the calls (syscalls: prctl, setns, capset, the mount API, seccomp's) and the one wire every
helper process speaks (helperwire: JSON and fds over SEQPACKET, the sender's pid from the kernel).
Knows nothing of pods, containers or callers."""
