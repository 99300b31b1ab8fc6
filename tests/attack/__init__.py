"""Attack programs the tests run inside pods, and building them: small C sources here, compiled
statically with gcc (so they run in the busybox-only lab images) and cached under the lab's cache
dir, keyed by the source's hash. gcc and libc6-dev are installed from Debian when missing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from testbed.lab import runtime
from testbed.lab.config import LabConfig

HERE = Path(__file__).parent
FDSCAN = HERE / "fdscan.c"
BUILD_PACKAGES = ("gcc", "libc6-dev")
CFLAGS = ("-O2", "-static", "-Wall", "-Wextra", "-Werror")


def static_binary(source: Path, cfg: LabConfig | None = None) -> Path:
    """`source` compiled into a static executable, built once per content and compiler flags."""
    cache = (cfg or LabConfig()).cache / "attack"
    key = hashlib.sha256(source.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    binary = cache / f"{source.stem}-{key}"
    if binary.is_file():
        return binary
    if shutil.which("gcc") is None or runtime.missing_packages(BUILD_PACKAGES):
        runtime.install_packages(packages=BUILD_PACKAGES)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", dir=cache)
    os.close(fd)
    try:
        subprocess.run(["gcc", *CFLAGS, "-o", tmp, str(source)], check=True, capture_output=True, text=True)
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary)  # atomic: a concurrent run sees the whole file or none
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"gcc failed on {source}:\n{err.stderr}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return binary
