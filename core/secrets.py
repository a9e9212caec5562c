"""Redaction: keep tokens and keys out of everything a job writes, shows or uploads.

Two tools: `redact` replaces known secret values (the job's HF token, bucket keys) in any text, and
`sanitize_config` drops secret-looking keys from a config and masks secret-looking values (HF tokens, AWS
keys, passwords in URLs) that nobody told us about.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MASK = "***"
# Values shorter than this are not treated as secrets to redact: masking "a" or "s3" would garble every message,
# and no real token or key is that short.
MIN_SECRET_LENGTH = 6

# Name parts that mark a key as secret. Keys are split into words first, so `tokenizer_max_length` and
# `keep_tokens` stay while `hub_token`, `aws_secret_access_key` and `apiKey` go.
_SECRET_WORDS = {"token", "secret", "password", "passwd", "pwd", "apikey", "credential", "credentials", "auth",
                 "authorization", "bearer", "passphrase", "cookie"}
_KEY_QUALIFIERS = {"api", "access", "private", "secret", "signing", "encryption", "auth", "account", "client"}

# Values that are secrets whatever key holds them, and what replaces them.
_SECRET_VALUES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), MASK),  # Hugging Face user access token
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), MASK),  # AWS access key id
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), MASK),  # OpenAI-style API key
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"), MASK),  # GitHub token
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1>{MASK}"),
    (re.compile(r"(://[^/\s:@]+:)[^/\s@]+(@)"), rf"\g<1>{MASK}\g<2>"),  # user:password@ in a URL
    # Signed or keyed query strings: keep the parameter's name so the URL still says what was there.
    (re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey|key|secret|password|sig|signature"
                r"|x-amz-signature|x-amz-security-token)=)[^&\s\"']+"), rf"\g<1>{MASK}"),
]


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every occurrence of each given secret replaced by ***. Empty or very short values
    (under MIN_SECRET_LENGTH characters) are ignored."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_secret_values(text: str) -> str:
    """`text` with secret-looking values (tokens, keys, URL passwords, signed query strings) masked."""
    for pattern, replacement in _SECRET_VALUES:
        text = pattern.sub(replacement, text)
    return text


def is_secret_key(key: str) -> bool:
    """Whether a config key names a secret: token, secret, password, api key, access key, ..."""
    bare = key.lstrip("-")
    words = [w.lower() for w in re.split(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])", bare) if w]
    if any(word in _SECRET_WORDS for word in words):
        return True
    if words == ["key"]:
        return True
    return any(a in _KEY_QUALIFIERS and b == "key" for a, b in zip(words, words[1:], strict=False))


def sanitize(value: Any, secrets: Iterable[str | None] = ()) -> Any:
    """A copy of any JSON value with secret keys removed and secret values masked, at any depth."""
    known = [s for s in secrets if s]
    if isinstance(value, dict):
        return {k: sanitize(v, known) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, (list, tuple)):
        return [sanitize(v, known) for v in value]
    if isinstance(value, str):
        return mask_secret_values(redact(value, known))
    return value


def sanitize_config(config: dict, secrets: Iterable[str | None] = ()) -> dict:
    """A SimpleTuner config (or any dict) fit to publish: token/secret/key/password-like keys removed, secret
    values masked, and any of the given known secrets redacted wherever they appear."""
    return sanitize(dict(config), secrets)


# Files read as text and cleaned before they leave the machine; anything else (weights, images) goes as is.
TEXT_SUFFIXES = {".json", ".jsonl", ".txt", ".log", ".md", ".yaml", ".yml", ".toml", ".csv", ".cfg", ".ini", ".sh"}


def scrub_file(path: Path, secrets: Iterable[str | None] = ()) -> bytes | None:
    """The bytes to upload instead of a text file that holds a secret; None when the file is fine as it is.

    JSON files lose their secret keys (sanitize); every text file has known secrets and secret-looking values
    masked. Binary files are never read.
    """
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return None
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if data is not None:
            clean = sanitize(data, secrets)
            return None if clean == data else (json.dumps(clean, indent=2) + "\n").encode()
    clean_text = mask_secret_values(redact(text, secrets))
    return None if clean_text == text else clean_text.encode()
