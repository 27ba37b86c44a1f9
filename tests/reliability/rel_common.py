"""Shared by the reliability tests and conftest.py: the session's credentials and the record of
every output that must never contain the secret (see conftest.py)."""
import json
import secrets
from pathlib import Path

ACCESS_KEY = "RELIABILITYKEY%s" % secrets.token_hex(3).upper()
# Distinctive and random per session, so a hit can only be a leak.
SECRET_KEY = "Sec-%s-DoNotLeak" % secrets.token_hex(12)

_SEEN = []  # (where, text)


def seen(where, text):
    """Record output that must never contain the secret (scanned at session end)."""
    if text is None:
        return
    if not isinstance(text, str):
        text = json.dumps(text)
    _SEEN.append((where, text))


def seen_files(where, root):
    """Record every small text-ish file under root (state files, logs)."""
    for p in Path(root).rglob("*"):
        if p.is_file() and p.stat().st_size < (1 << 20) and not p.name.endswith((".db", ".sqlite", "-wal", "-shm")):
            try:
                seen("%s:%s" % (where, p), p.read_bytes().decode("utf-8", "replace"))
            except OSError:
                pass


def leaks():
    out = []
    for where, text in _SEEN:
        i = text.find(SECRET_KEY)
        if i >= 0:
            out.append("%s: ...%s..." % (where, text[max(0, i - 120):i + len(SECRET_KEY) + 40]))
    return out
