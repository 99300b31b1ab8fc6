"""A throwaway PKI made with `openssl` for mTLS tests: a CA, server certificates for loopback
addresses, and client certificates whose CN and O fields name a user and its groups."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path

_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class Pki:
    """`Pki(dir)`: a new CA in `dir` (its certificate is `.ca`); each call issues one more pair."""

    def __init__(self, directory: Path, name: str = "nsinspect-test-ca") -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = directory / "ca.crt"
        self._serial = itertools.count(1)
        _openssl("req", "-x509", *_EC, "-days", "2", "-subj", f"/CN={name}", "-keyout", "ca.key", "-out", "ca.crt",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 cwd=directory)

    def _issue(self, subject: str, extensions: str) -> tuple[Path, Path]:
        n = next(self._serial)
        (self.dir / f"{n}.ext").write_text(extensions)
        _openssl("req", *_EC, "-subj", subject, "-keyout", f"{n}.key", "-out", f"{n}.csr", cwd=self.dir)
        _openssl("x509", "-req", "-in", f"{n}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", str(n),
                 "-days", "2", "-extfile", f"{n}.ext", "-out", f"{n}.crt", cwd=self.dir)
        return self.dir / f"{n}.crt", self.dir / f"{n}.key"

    def server(self, ip: str = "127.0.0.1") -> tuple[Path, Path]:
        return self._issue("/CN=nsinspect-agent", f"subjectAltName=IP:{ip},DNS:localhost\n"
                                                  "extendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n")

    def client(self, user: str, groups: list[str], also_cn: str = "") -> tuple[Path, Path]:
        """CN=user, one O per group (as Kubernetes reads client certificates); `also_cn`: a second CN."""
        subject = "".join(f"/O={g}" for g in groups) + f"/CN={user}" + (f"/CN={also_cn}" if also_cn else "")
        return self._issue(subject, "extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n")
