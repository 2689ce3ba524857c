"""Ed25519 signatures of bundle manifests.

The manifest lists the sha256 of every file in the bundle, so one signature over the
exact bytes of ``manifest.json`` covers the whole bundle: the vocabulary, the history
settings, the signature, every model file. The signature lives beside the manifest in
``manifest.sig`` (a small JSON document naming the key that made it).

Keys:
    ``kdaliens-keygen --out DIR`` writes ``DIR/signing.key`` (secret, mode 0600; keep it
    on the release machine) and ``DIR/signing.pub`` (ship it with the app). Both are
    small JSON files holding the key as hex.

Trust:
    :meth:`kdaliens.sdk.Bundle.load` and :meth:`kdaliens.sdk.Ranker.load` take
    ``trusted_keys``: paths of ``signing.pub`` files, their bytes, or raw 32-byte public
    keys. With keys given, a bundle must be signed by one of them, or it is refused with
    :class:`~kdaliens.sdk.errors.BundleError`. Without keys, an unsigned bundle still
    loads, with a one-line warning in ``meta``.

Signing and verifying use PyNaCl (libsodium), imported only when a key is used:
``pip install -e ".[signing]"`` in a clone of the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import BackendUnavailable, BundleError, InputError
from .extras import install_command
from .fileio import atomic_write, read_or_raise, read_regular

KEY_FILE = "signing.key"
PUB_FILE = "signing.pub"
SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"
MAX_KEY_FILE_BYTES = 4096
_SECRET_KIND = "kdaliens-ed25519-signing-key"
_PUBLIC_KIND = "kdaliens-ed25519-public-key"
_SIGNATURE_KIND = "kdaliens-manifest-signature"

__all__ = ["KEY_FILE", "PUB_FILE", "SIGNATURE_FILE", "generate_keys", "key_id", "load_signing_key",
           "public_keys", "sign_manifest", "verify_manifest"]


def _nacl() -> Any:
    try:
        import nacl.exceptions
        import nacl.signing
    except ImportError as e:
        raise BackendUnavailable(f"bundle signatures need PyNaCl ({e}); install it with: "
                                 f"{install_command('signing')}") from None
    return nacl


def key_id(public_key: bytes) -> str:
    """A short, stable name of a public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def generate_keys(out_dir: str | os.PathLike, force: bool = False) -> tuple[Path, Path]:
    """Write a new key pair: ``out_dir/signing.key`` (secret, mode 0600) and ``out_dir/signing.pub``.

    Raises:
        InputError: a key file is already there (``force`` overwrites it).
    """
    nacl = _nacl()
    out = Path(out_dir)
    key_path, pub_path = out / KEY_FILE, out / PUB_FILE
    existing = [str(p) for p in (key_path, pub_path) if os.path.lexists(p)]
    if existing and not force:
        raise InputError(f"{', '.join(existing)} already exist; refusing to overwrite a key "
                         "(bundles signed with it would no longer verify). Choose another folder or pass --force")
    sk = nacl.signing.SigningKey.generate()
    pub = bytes(sk.verify_key)
    out.mkdir(parents=True, exist_ok=True)
    old = os.umask(0o077)  # the secret key is never readable by others, not even for a moment
    try:
        atomic_write(key_path, json.dumps({"kind": _SECRET_KIND, "seed": bytes(sk).hex(), "key_id": key_id(pub)},
                                          indent=1) + "\n", mode=0o600)
    finally:
        os.umask(old)
    os.chmod(key_path, 0o600)
    atomic_write(pub_path, json.dumps({"kind": _PUBLIC_KIND, "key": pub.hex(), "key_id": key_id(pub)}, indent=1)
                 + "\n")
    os.chmod(pub_path, 0o644)
    return key_path, pub_path


def _read_key_doc(source: str | os.PathLike | bytes, what: str) -> dict[str, Any] | bytes:
    """A key file's parsed JSON (or raw bytes of length 32 given directly)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        if len(raw) == 32:
            return raw
        where = f"{what} given as bytes"
    elif isinstance(source, (str, os.PathLike)):
        where = str(source)
        raw = read_or_raise(lambda: read_regular(source, MAX_KEY_FILE_BYTES), where, what, InputError)
    else:
        raise InputError(f"a {what} must be a path or bytes, got {type(source).__name__}")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        raise InputError(f"{where}: not a kdaliens key file (expected the JSON written by kdaliens-keygen, "
                         "or 32 raw key bytes)")
    doc["_where"] = where
    return doc


def _hex32(doc: dict[str, Any], field: str, what: str) -> bytes:
    try:
        value = bytes.fromhex(doc[field])
    except (KeyError, TypeError, ValueError):
        value = b""
    if len(value) != 32:
        raise InputError(f"{doc['_where']}: {what} has no valid {field!r} (64 hex digits)")
    return value


def load_signing_key(source: str | os.PathLike | bytes) -> Any:
    """The secret key of a ``signing.key`` file (a path or its bytes), as a PyNaCl ``SigningKey``.

    Raises:
        InputError: missing, unreadable or not a secret key file (a ``signing.pub`` included).
    """
    nacl = _nacl()
    doc = _read_key_doc(source, "signing key")
    if isinstance(doc, bytes):
        return nacl.signing.SigningKey(doc)
    if doc["kind"] != _SECRET_KIND:
        hint = " (that is the public key: sign with signing.key)" if doc["kind"] == _PUBLIC_KIND else ""
        raise InputError(f"{doc['_where']}: not a signing key{hint}")
    return nacl.signing.SigningKey(_hex32(doc, "seed", "signing key"))


def public_keys(trusted_keys: Iterable[str | os.PathLike | bytes]) -> dict[str, bytes]:
    """``key_id -> public key`` of ``trusted_keys`` (``signing.pub`` paths, their bytes, or raw 32-byte keys).

    Raises:
        InputError: no keys, or one that is unreadable, malformed, or a secret key.
    """
    if isinstance(trusted_keys, (str, bytes, bytearray, os.PathLike)):
        trusted_keys = [trusted_keys]
    try:
        sources = list(trusted_keys)
    except TypeError:
        raise InputError(f"trusted_keys must be a list of key paths or bytes, got {type(trusted_keys).__name__}"
                         ) from None
    if not sources:
        raise InputError("trusted_keys is empty: give at least one signing.pub (or None to accept unsigned bundles)")
    keys: dict[str, bytes] = {}
    for source in sources:
        doc = _read_key_doc(source, "trusted key")
        if isinstance(doc, bytes):
            pub = doc
        elif doc["kind"] == _SECRET_KIND:
            raise InputError(f"{doc['_where']}: this is a secret signing key; devices trust the public key "
                             f"({PUB_FILE}) and the secret key never leaves the release machine")
        elif doc["kind"] != _PUBLIC_KIND:
            raise InputError(f"{doc['_where']}: not a kdaliens public key (kind {str(doc['kind'])[:40]!r})")
        else:
            pub = _hex32(doc, "key", "public key")
        keys[key_id(pub)] = pub
    return keys


def sign_manifest(manifest_bytes: bytes, signing_key: Any) -> bytes:
    """The ``manifest.sig`` document for the exact bytes of ``manifest.json``."""
    pub = bytes(signing_key.verify_key)
    sig = signing_key.sign(manifest_bytes).signature
    return (json.dumps({"kind": _SIGNATURE_KIND, "algorithm": ALGORITHM, "key_id": key_id(pub),
                        "signature": bytes(sig).hex()}, indent=1) + "\n").encode()


def verify_manifest(manifest_bytes: bytes, signature_doc: bytes | None, keys: dict[str, bytes], where: str) -> str:
    """Check ``manifest.sig`` against the manifest's bytes and the trusted ``keys``; the signer's key id.

    Raises:
        BundleError: no signature, a malformed one, one by a key not in ``keys``, or one
            that does not match the manifest (the manifest was changed after signing).
    """
    nacl = _nacl()
    if signature_doc is None:
        raise BundleError(f"{where}: the bundle is not signed ({SIGNATURE_FILE} is missing) and trusted_keys "
                          "were given; sign it with kdaliens-export --sign")
    try:
        doc = json.loads(signature_doc.decode("utf-8"))
        kid, sig = doc["key_id"], bytes.fromhex(doc["signature"])
        ok = doc.get("algorithm") == ALGORITHM and isinstance(kid, str) and len(sig) == 64
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise BundleError(f"{where}: {SIGNATURE_FILE} is malformed")
    if kid not in keys:
        raise BundleError(f"{where}: signed by key {kid[:16]!r}, which is not among the trusted keys "
                          f"({', '.join(sorted(keys))})")
    try:
        nacl.signing.VerifyKey(keys[kid]).verify(manifest_bytes, sig)
    except nacl.exceptions.BadSignatureError:
        raise BundleError(f"{where}: the signature does not match manifest.json (changed after signing?)") from None
    return kid
