"""Redaction: keep tokens and keys out of everything a job writes, shows or uploads.

`job_secrets` lists the values a job must never show (its Hub token, the endpoint's HF_TOKEN, the bucket and AWS
keys its storage and S3 sources use, credentials in its URLs); `scrub` removes them, and anything that looks like a
secret, from a message or a JSON value. Underneath: `redact` replaces known values, `mask_secret_values` masks
secret-looking ones (tokens, AWS key ids, and every URL's userinfo and query values: presigned URLs carry their
credentials there), and `sanitize_config` also drops secret-named keys from a config before it is published.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr

from core.settings import SECRET_ENV_VARS, URL_ENV_VARS

if TYPE_CHECKING:
    from core.settings import Settings

MASK = "***"
# Values shorter than this are not treated as secrets to redact: masking "a" or "s3" would garble every message,
# and no real token or key is that short.
MIN_SECRET_LENGTH = 6

# Name parts that mark a key as secret. Keys are split into words first, so `tokenizer_max_length` and
# `keep_tokens` stay while `hub_token`, `aws_secret_access_key` and `apiKey` go.
_SECRET_WORDS = {"token", "secret", "password", "passwd", "pwd", "apikey", "credential", "credentials", "auth",
                 "authorization", "bearer", "passphrase", "cookie"}
_KEY_QUALIFIERS = {"api", "access", "private", "secret", "signing", "encryption", "auth", "account", "client"}

# Tokens: secrets whatever key holds them, and what replaces them.
_TOKENS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}"), MASK),  # Hugging Face user access token
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), MASK),  # AWS access key id
    (re.compile(r"\bsk-[A-Za-z0-9_-]{20,}"), MASK),  # OpenAI-style API key
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"), MASK),  # GitHub token
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1>{MASK}"),
]
# Values that are secrets whatever key holds them, and what replaces them.
_SECRET_VALUES: list[tuple[re.Pattern, str]] = [
    *_TOKENS,
    # A secret-named query parameter outside a full URL (an HTTP library's "url: /key?X-Amz-Signature=..."):
    # the name stays so the message still says what was there.
    (re.compile(r"(?i)([?&;](?:[a-z0-9_.-]*(?:token|sig|signature|secret|passw(?:or)?d|key|credential|auth"
                r"|session)[a-z0-9_.-]*|x-amz-[a-z0-9-]+|x-goog-[a-z0-9-]+)=)[^&\s\"'<>#]+"), rf"\g<1>{MASK}"),
]
# A URL with a scheme: its userinfo and every query value are masked (see _mask_url).
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s\"'<>`]+")
_URL_TRAILER = ".,;:!)]}"


def job_secrets(spec: Any, *, env: Mapping[str, str] | None = None, settings: Settings | None = None) -> list[str]:
    """Every value a job must never show: the job's Hub token (and any other secret field of its spec), the
    endpoint's HF_TOKEN (env or settings), the bucket keys its storage uses and the AWS_* keys its S3 sources use,
    and the credentials in its URLs (userinfo, secret query values) and the endpoint's. Longest first.

    `spec` is a JobSpec, or a job's raw JSON not parsed yet (its secret-named keys count), or None. `env` defaults to
    the variables `settings` read (Settings.secret_env)."""
    if env is None:
        env = dict(settings.secret_env) if settings is not None else {}
    values: list[str] = [env.get(name) or "" for name in SECRET_ENV_VARS]
    values += [value for name, value in env.items() if name.startswith("AWS_") and is_secret_key(name)]
    for name in URL_ENV_VARS:
        values += _credentials_in(env.get(name) or "")
    if settings is not None and settings.hf_token:
        values.append(settings.hf_token.get_secret_value())
    if spec is not None:
        values += _spec_secrets(spec)
    return sorted({v for v in values if v and len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def scrub(value: Any, *, secrets: Iterable[str | None] = ()) -> Any:
    """A message (str) or JSON value (dict/list, at any depth) fit to show: the given secrets replaced by ***,
    secret-looking values and URL credentials masked, and secret-named keys dropped."""
    return sanitize(value, secrets)


def scrub_keeping_urls(value: Any, *, secrets: Iterable[str | None] = ()) -> Any:
    """`scrub`, except that URLs stay whole: for what a job sends its own caller, whose presigned output URLs are the
    answer it asked for (as in the API's output). The given secrets are still replaced wherever they appear, tokens
    masked, secret-named keys dropped."""
    known = [s for s in secrets if s]
    if isinstance(value, dict):
        return {k: scrub_keeping_urls(v, secrets=known) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, (list, tuple)):
        return [scrub_keeping_urls(v, secrets=known) for v in value]
    if isinstance(value, str):
        text = redact(value, known)
        for pattern, replacement in _TOKENS:
            text = pattern.sub(replacement, text)
        return text
    return value


def _credentials_in(text: str) -> list[str]:
    """url_credentials of a value that may be a URL; a malformed one (urlsplit refuses it) has none to find."""
    if "://" not in text:
        return []
    try:
        return url_credentials(text)
    except ValueError:
        return []


def _spec_secrets(model: Any) -> list[str]:
    """Secret values anywhere in a job's spec: SecretStr fields, secret-named keys of its dicts (config's
    --hub_token, ...), and the credentials of the URLs it names."""
    if isinstance(model, SecretStr):
        return [model.get_secret_value()]
    if isinstance(model, BaseModel):
        return [s for name in type(model).model_fields for s in _spec_secrets(getattr(model, name))]
    if isinstance(model, Mapping):
        found: list[str] = []
        for key, item in model.items():
            if isinstance(item, str) and is_secret_key(str(key)):
                found.append(item)
            else:
                found += _spec_secrets(item)
        return found
    if isinstance(model, (list, tuple)):
        return [s for item in model for s in _spec_secrets(item)]
    if isinstance(model, str):
        return _credentials_in(model)
    return []


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """`text` with every occurrence of each given secret replaced by ***. Empty or very short values
    (under MIN_SECRET_LENGTH characters) are ignored."""
    # Longest first, so a secret that contains another is masked whole.
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def mask_secret_values(text: str) -> str:
    """`text` with secret-looking values masked: tokens, AWS key ids, and in every URL its userinfo and the
    values of its query (presigned URLs carry their credential and signature there)."""
    if "://" in text:
        text = _URL.sub(_mask_url, text)
    for pattern, replacement in _SECRET_VALUES:
        text = pattern.sub(replacement, text)
    return text


def _mask_url(match: re.Match) -> str:
    url = match.group(0)
    trailer = ""
    while url and url[-1] in _URL_TRAILER:  # the sentence's punctuation, not the URL's
        url, trailer = url[:-1], url[-1] + trailer
    scheme, rest = url.split("://", 1)
    cut = re.search(r"[/?#]", rest)
    authority, tail = (rest[:cut.start()], rest[cut.start():]) if cut else (rest, "")
    if "@" in authority:
        authority = f"{MASK}@{authority.rsplit('@', 1)[1]}"
    tail, hash_sign, fragment = tail.partition("#")
    path, question, query = tail.partition("?")
    if question:
        query = "&".join(_mask_pair(pair, bare=True) for pair in query.split("&"))
    if hash_sign:
        # An OAuth-style fragment (#access_token=...) holds a credential; a plain anchor does not.
        fragment = "&".join(_mask_pair(pair, bare=False) for pair in fragment.split("&"))
    return f"{scheme}://{authority}{path}{question}{query}{hash_sign}{fragment}{trailer}"


def _mask_pair(pair: str, *, bare: bool) -> str:
    name, equals, value = pair.partition("=")
    if equals:
        return f"{name}={MASK}" if value and value != MASK else pair
    return MASK if bare and name and name != MASK else pair


# Query parameters that make a URL a credential: presigned S3/GCS URLs (every X-Amz-*/X-Goog-* part), Azure SAS
# (sig), CloudFront (Signature, Policy, Key-Pair-Id), and the usual token/key parameters.
_URL_SECRET_PREFIXES = ("x-amz-", "x-goog-")
_URL_SECRET_NAMES = {"sig", "signature", "key", "policy", "key-pair-id", "awsaccesskeyid", "googleaccessid"}


def _is_url_secret_param(name: str) -> bool:
    lower = name.lower()
    return lower.startswith(_URL_SECRET_PREFIXES) or lower in _URL_SECRET_NAMES or is_secret_key(name)


def url_credentials(url: str) -> list[str]:
    """The secret parts of `url`: its user info and the values of credential query parameters, each as written
    and percent-decoded (a message may quote either)."""
    parts = urlsplit(url)
    found = [v for v in (parts.username, parts.password) if v]
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if value and _is_url_secret_param(unquote_plus(name)):
            found.append(value)
    return list(dict.fromkeys([*found, *map(unquote_plus, found)]))


def strip_url_credentials(url: str) -> str:
    """`url` without user info and credential query parameters (presigned X-Amz-*/X-Goog-*, token=, sig=, ...),
    fit to record and show. Other parameters and the fragment stay. The full URL is for the download only."""
    if not url_credentials(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True)
             if not _is_url_secret_param(name)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))


def is_secret_key(key: str) -> bool:
    """Whether a config key names a secret: token, secret, password, api key, access key, ..."""
    bare = key.lstrip("-")
    words = [w.lower() for w in re.split(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])", bare) if w]
    if any(word in _SECRET_WORDS for word in words):
        return True
    if words == ["key"]:
        return True
    return any(a in _KEY_QUALIFIERS and b == "key" for a, b in pairwise(words))


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
