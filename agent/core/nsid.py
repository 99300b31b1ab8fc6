"""The one identity of a namespace: its type and the (st_dev, st_ino) of /proc/PID/ns/<type>.

Two processes share a namespace exactly when stat() of their ns links gives the same device and
inode; the inode alone is unique only within one nsfs, which is one per kernel today but not a
promise. Printed as the kernel prints the link (`net:[4026531840]`), as lsns and nsenter users know it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class NamespaceId:
    """A namespace as the kernel identifies it: the (st_dev, st_ino) of /proc/PID/ns/<type>."""

    type: str
    dev: int
    ino: int

    def __str__(self) -> str:
        return f"{self.type}:[{self.ino}]"
