"""A throwaway CA and a serving certificate for 127.0.0.1, made once per process with `openssl`.

The stand-in must speak HTTPS: client-go (kubectl) never sends a bearer token over plain HTTP.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_EXTENSIONS = ("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
               "keyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n")


@dataclass(frozen=True)
class Credentials:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@functools.cache
def credentials() -> Credentials:
    if shutil.which("openssl") is None:
        raise RuntimeError("the stand-in needs the `openssl` command to make its TLS certificate")
    d = Path(tempfile.mkdtemp(prefix="nsinspect-standin-tls-"))
    atexit.register(shutil.rmtree, d, True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=nsinspect-standin-ca", "-keyout", "ca.key",
             "-out", "ca.crt", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _openssl("req", *ec, "-subj", "/CN=nsinspect-standin", "-keyout", "server.key", "-out", "server.csr", cwd=d)
    (d / "ext.cnf").write_text(_EXTENSIONS)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt", cwd=d)
    return Credentials(d / "ca.crt", d / "server.crt", d / "server.key")
