"""Standard Webhooks v1 signatures (symmetric HMAC-SHA256).

A secret is 32 random bytes shown as `whsec_` + base64. The signed content is
`{webhook-id}.{webhook-timestamp}.{body}`; the header carries one `v1,<base64>` entry per
secret in force (two while a rotated secret is in its grace period), space-separated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"  # noqa: S105  (a prefix, not a secret)
SECRET_BYTES = 32  # the specification allows 24 to 64


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_bytes(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("not a whsec_ secret")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def fingerprint(secret: str) -> str:
    """What the event log and the API may show of a secret: enough to tell two apart."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_in_force: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_in_force)
