"""The TLS settings of every client of ours that dials gearmand through stunnel.

They match pygearman's (the workers' client): our CA only, the server's name checked, a
client certificate, TLS 1.2 or newer. So a probe that gets through proves what the
workers will see.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(
    *, ca_certs: str | Path, certfile: str | Path, keyfile: str | Path
) -> ssl.SSLContext:
    """A context that trusts `ca_certs` only and presents `certfile` with `keyfile`."""
    context = ssl.create_default_context(cafile=str(ca_certs))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(certfile), str(keyfile))
    return context
