"""Credentials at rest: AES-256-GCM, keys from VIGIL_CREDENTIAL_KEYS (never SECRET_KEY).

The ciphertext is bound to its organization and provider through the associated data, so a
ciphertext copied onto another organization's connection does not decrypt. Format:
key id (8 bytes) | nonce (12 bytes) | ciphertext+tag. The first key encrypts; all keys decrypt,
which is what `rotate_credentials` relies on.
"""

import base64
import hashlib
import json
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class CredentialError(Exception):
    """The stored credentials cannot be read (wrong organization, unknown or rotated-away key)."""


def _dev_key_file():
    from csm.embedded import DATA_DIR

    path = DATA_DIR / "credential_key"
    if not path.exists():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        os.chmod(path, 0o600)
    return path.read_text().strip()


def keys() -> list[bytes]:
    raw = settings.VIGIL_CREDENTIAL_KEYS
    if not raw:
        if not settings.DEBUG:
            raise ImproperlyConfigured("VIGIL_CREDENTIAL_KEYS must be set (base64 32-byte keys, newest first)")
        raw = _dev_key_file()
    found = []
    for item in raw.split(","):
        key = base64.urlsafe_b64decode(item.strip() + "=" * (-len(item.strip()) % 4))
        if len(key) != 32:
            raise ImproperlyConfigured("each VIGIL_CREDENTIAL_KEYS entry must decode to 32 bytes")
        found.append(key)
    return found


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:8]


def _associated_data(org_id: int, provider: str) -> bytes:
    return f"vigil:credentials:org={org_id}:provider={provider}".encode()


def encrypt(*, org_id: int, provider: str, values: dict) -> bytes:
    key = keys()[0]
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(key).encrypt(nonce, json.dumps(values).encode(), _associated_data(org_id, provider))
    return _key_id(key) + nonce + sealed


def decrypt(*, org_id: int, provider: str, blob: bytes) -> dict:
    blob = bytes(blob)
    if not blob:
        return {}
    key_id, nonce, sealed = blob[:8], blob[8:20], blob[20:]
    for key in keys():
        if _key_id(key) == key_id:
            try:
                return json.loads(AESGCM(key).decrypt(nonce, sealed, _associated_data(org_id, provider)))
            except InvalidTag as error:
                raise CredentialError("the stored credentials do not belong to this connection") from error
    raise CredentialError("the stored credentials were encrypted with a key that is no longer configured")


def needs_rotation(blob: bytes) -> bool:
    return bool(blob) and bytes(blob)[:8] != _key_id(keys()[0])
