"""Personal data at rest: crypto-shredding with a key per stream, and the erasure steps every
adapter takes. The one owner of how personal fields are stored.

The fields `PERSONAL_FIELDS` (app/domain/schema.py) names are stored sealed: AES-256-GCM (the
`cryptography` package) under a random key of the event's stream, kept in `personal_data_keys`
(app/event_store/tables.py) in the same database, written in the same transaction as the first
event that needs it. The stream id is the associated data, so a sealed value copied into another
stream does not open. A stored row holds its other fields in the clear and `sealed`: base64 of
nonce + ciphertext of the personal fields' JSON.

Reads bring the key along with the row (a join in the same statement: no second round trip, and
a key deleted by another process is never used from a cache), and `open` puts the fields back,
or None when the key is gone. An erasure (`ERASURE` event) deletes its stream's key, its snapshot,
and masks in place the personal fields of rows stored before sealing existed (plaintext), marking
them `erased` in their metadata, all in the transaction that appends the erasure event.
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.domain.schema import ERASURE, PERSONAL_FIELDS

JSONDict = dict[str, Any]
SEALED = "sealed"
SEALED_TYPES = tuple(PERSONAL_FIELDS)
"""Event types whose rows may be sealed (the ones a read joins the key of)."""
NONCE_BYTES = 12
CIPHERS_KEPT = 4096  # AESGCM objects by key: building one costs more than a decryption


class Sealer:
    """Seals the personal fields of rows about to be stored and opens them on read."""

    def __init__(self) -> None:
        self._ciphers: OrderedDict[str, AESGCM] = OrderedDict()

    def _cipher(self, key: str) -> AESGCM:
        """The cipher of `key`, kept by key value: a destroyed key is never asked for again,
        since reads only get keys still stored."""
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = AESGCM(bytes.fromhex(key))
            if len(self._ciphers) > CIPHERS_KEPT:
                self._ciphers.popitem(last=False)
        return cipher

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the ciphers of destroyed keys from memory."""
        for key in keys:
            self._ciphers.pop(key, None)

    def seal(
        self, rows: list[JSONDict], stored_keys: Mapping[str, str]
    ) -> tuple[list[JSONDict], list[tuple[str, str]]]:
        """`rows` as they are to be stored, and the (stream_id, key) rows to insert with them.

        `stored_keys` holds the keys of the streams `streams_needing_keys` named; any other
        stream sealing a row gets a new key (its first event: it cannot have one).
        """
        new: dict[str, str] = {}
        fresh: dict[str, AESGCM] = {}  # a new key seals its hire and is rarely used again soon
        out: list[JSONDict] = []
        for row in rows:
            personal = PERSONAL_FIELDS.get(row["type"])
            if not personal:
                out.append(row)
                continue
            stream = row["stream_id"]
            known = stored_keys.get(stream)
            cipher = self._cipher(known) if known is not None else fresh.get(stream)
            if cipher is None:
                key = os.urandom(32)
                cipher = fresh[stream] = AESGCM(key)
                new[stream] = key.hex()
            data = row["data"]
            nonce = os.urandom(NONCE_BYTES)
            secret = cipher.encrypt(
                nonce, orjson.dumps({name: data[name] for name in personal}), stream.encode()
            )
            stored = {name: value for name, value in data.items() if name not in personal}
            stored[SEALED] = base64.b64encode(nonce + secret).decode()
            out.append({**row, "data": stored})
        return out, list(new.items())

    def open(self, event_type: str, stream_id: str, data: JSONDict, key: str | None) -> JSONDict:
        """Stored `data` with its personal fields back: decrypted with `key`, or None when the
        key is gone (erased). Data that was never sealed is returned as it is."""
        sealed = data.get(SEALED)
        if sealed is None:
            return data
        opened = {name: value for name, value in data.items() if name != SEALED}
        values: JSONDict = {}
        if key is not None:
            raw = base64.b64decode(sealed)
            try:
                values = orjson.loads(self._cipher(key).decrypt(
                    raw[:NONCE_BYTES], raw[NONCE_BYTES:], stream_id.encode()
                ))
            except InvalidTag:  # sealed under an older key of the stream, since destroyed
                values = {}
        for name in PERSONAL_FIELDS.get(event_type, ()):
            opened[name] = values.get(name)
        return opened


def streams_needing_keys(rows: Iterable[JSONDict]) -> list[str]:
    """Streams whose rows to seal are not their first event: they may have a key already."""
    return list({row["stream_id"]: None for row in rows
                 if row["type"] in PERSONAL_FIELDS and row["version"] > 1})


def erased_streams(rows: Iterable[JSONDict]) -> list[str]:
    """Streams whose personal data the rows erase."""
    return list({row["stream_id"]: None for row in rows if row["type"] == ERASURE})


def masked(event_type: str, data: JSONDict, metadata: JSONDict) -> tuple[JSONDict, JSONDict] | None:
    """A plaintext row's data and metadata with its personal fields masked (null, and
    `erased: true` in the metadata), or None when there is nothing to mask (sealed rows: their
    key goes instead; rows masked before)."""
    personal = PERSONAL_FIELDS.get(event_type, ())
    if SEALED in data or all(data.get(name) is None for name in personal):
        return None
    return {**data, **dict.fromkeys(personal)}, {**metadata, "erased": True}
