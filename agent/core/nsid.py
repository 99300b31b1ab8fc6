"""The one identity of a namespace: its type and the (st_dev, st_ino) of /proc/PID/ns/<type>.

Two processes share a namespace exactly when stat() of their ns links gives the same device and
inode; the inode alone is unique only within one nsfs, which is one per kernel today but not a
promise. Printed as the kernel prints the link (`net:[4026531840]`), as lsns and nsenter users know it.

The link's text names the namespace too, given that device: the walks over every process read
links (a readlink costs half a stat, which follows the link into nsfs) and keep the raw text only
inside their loop; at its edge `NamespaceId.from_link(text, procns.nsfs_dev())` makes the one identity,
and `nid.link` gives the text back for a loop that compares links.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class NamespaceId:
    """A namespace as the kernel identifies it: the (st_dev, st_ino) of /proc/PID/ns/<type>."""

    type: str
    dev: int
    ino: int

    @classmethod
    def from_link(cls, text: str, dev: int) -> NamespaceId:
        """The namespace a /proc/PID/ns/<type> link's text names ("net:[4026531840]"), on the nsfs of
        device `dev` (procfs.procns.nsfs_dev()): a readlink costs half the stat it saves."""
        type_, sep, rest = text.partition(":[")
        ino = rest[:-1]
        if not (sep and type_ and rest.endswith("]") and ino.isdigit()):
            raise ValueError(f"not a namespace link: {text!r}")
        return cls(type_, dev, int(ino))

    @property
    def link(self) -> str:
        """The text of its /proc/PID/ns/<type> link, as readlink gives it: `net:[4026531840]`."""
        return f"{self.type}:[{self.ino}]"

    def __str__(self) -> str:
        return self.link
