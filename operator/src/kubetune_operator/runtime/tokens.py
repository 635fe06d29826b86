"""Per-resource progress tokens: HMAC-SHA256 of the resource UID under the operator's key.

The operator writes the token into the resource's `<name>-progress` Secret and never stores it:
it recomputes and compares on every POST. A token dies with its resource (a new resource with the
same name has a new UID).
"""

from __future__ import annotations

import hashlib
import hmac


def progress_token(key: bytes, uid: str) -> str:
    return hmac.new(key, uid.encode("utf-8"), hashlib.sha256).hexdigest()


def token_matches(key: bytes, uid: str, presented: str) -> bool:
    return hmac.compare_digest(progress_token(key, uid).encode("ascii"), presented.encode("utf-8", "replace"))
