"""One key ring per fleet: new keys, and the check that every host holds the same ones.

Each host reads its signing keys from `IMPORTER_SECRET_KEYS` (newest first). The
database records each key's id with a fingerprint (an HMAC of a fixed label, never the
secret). A host whose keys disagree with the record refuses to start, naming the key it
lacks or holds differently, instead of signing jobs every other host counts as forgeries.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from importer.db.engine import Database
from importer.db.models import SigningKey
from importer.errors import ConfigError
from importer.payload import Keyring, fingerprint

FIX = "give every host the same IMPORTER_SECRET_KEYS (newest key first)"


def new_key() -> str:
    """A fresh `kid:secret` for IMPORTER_SECRET_KEYS: a dated key id, 256 random bits."""
    return f"k{datetime.now(UTC):%Y%m%d}{secrets.token_hex(2)}:{secrets.token_urlsafe(32)}"


def check_fleet_keys(db: Database, ring: Keyring) -> list[str]:
    """Refuse (ConfigError) a ring that disagrees with the keys the fleet recorded; record
    this host's keys the database does not know yet. Returns warnings for a person."""
    for attempt in range(3):
        try:
            return _check_and_record(db, ring)
        except IntegrityError:  # another host recorded the same key at the same moment
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _check_and_record(db: Database, ring: Keyring) -> list[str]:
    mine = [(kid, fingerprint(secret)) for kid, secret in ring]
    with db.session() as s:
        rows = s.execute(select(SigningKey.kid, SigningKey.fingerprint, SigningKey.seq)).all()
        recorded = {kid: (fp, seq) for kid, fp, seq in rows}
        for kid, fp in mine:
            if kid in recorded and recorded[kid][0] != fp:
                raise ConfigError(
                    f"signing key {kid!r} of this host is not the key {kid!r} other hosts"
                    f" recorded in the database (fingerprint {fp} here, {recorded[kid][0]}"
                    f" there): {FIX}"
                )
        newest_kid = mine[0][0]
        if recorded:
            fleet_newest = max(recorded, key=lambda kid: recorded[kid][1])
            if fleet_newest not in dict(mine):
                raise ConfigError(
                    f"this host lacks signing key {fleet_newest!r}, the fleet's newest (recorded"
                    f" in the database): {FIX}"
                )
            if newest_kid in recorded and newest_kid != fleet_newest:
                raise ConfigError(
                    f"this host signs with {newest_kid!r}, but the fleet's newest key is"
                    f" {fleet_newest!r}: put {fleet_newest!r} first in IMPORTER_SECRET_KEYS"
                )
        seq = max((seq for _, seq in recorded.values()), default=0) + 1
        for kid, fp in reversed(mine):  # oldest first, so this host's newest ends highest
            if kid not in recorded:
                s.add(SigningKey(kid=kid, fingerprint=fp, seq=seq))
                seq += 1
        s.flush()
    return [
        f"signing key {kid!r}, recorded by other hosts, is not in this host's"
        " IMPORTER_SECRET_KEYS: jobs signed with it will be refused here"
        for kid in recorded
        if kid not in dict(mine)
    ]
