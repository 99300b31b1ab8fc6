"""The lab's toolbox for `exec --tools`: a directory with bin/busybox (static) and its applets.

`.venv/bin/python -m testbed.toolbox [DIR]` builds it (default: the main lab's run dir); tests get it
from the `toolbox` fixture. Built beside its final place and renamed in, so a reader never sees half.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from testbed.lab import images
from testbed.lab.config import LabConfig


def default_dir(cfg: LabConfig | None = None) -> Path:
    return (cfg or LabConfig()).run / "toolbox"


def build(dest: Path) -> Path:
    """bin/busybox plus one symlink per applet; nothing else (no /etc: tools mode links the target's)."""
    if (dest / "bin" / "busybox").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".toolbox-", dir=dest.parent))
    try:
        (tmp / "bin").mkdir()
        shutil.copy2(images.BUSYBOX, tmp / "bin" / "busybox")
        for applet in images._applets():
            if "/" not in applet:
                os.symlink("busybox", tmp / "bin" / applet)
        tmp.chmod(0o755)
        try:
            tmp.rename(dest)
        except OSError:  # built meanwhile by someone else
            if not (dest / "bin" / "busybox").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else default_dir()))
