"""Secrets kept out of what the dashboard shows, logs and audits.

:func:`redact_url` hides a URL's password; :func:`scrub_secrets` removes every
secret the dashboard knows (registered once by ``create_app`` with
:func:`register_secrets`, found by :func:`configured_secrets`) from any text,
in every spelling (percent-escaped, case-changed, form-encoded).

Flask-free; it imports nothing of the dashboard (:mod:`webapp.core.targets`
re-exports its names).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Protocol

from sqlalchemy.engine import URL, make_url


class SecretSource(Protocol):
    """What :func:`configured_secrets` reads of a target
    (:class:`webapp.core.targets.Target`)."""

    url_env: str | None
    readonly_url_env: str | None
    rehearsal_url_env: str | None
    env: Mapping[str, str]
    url_defaults: Mapping[str, str]


def redact_url(url: str | URL) -> str:
    """Return ``url`` as text with any password replaced by ``***``.

    Unparseable input is returned as ``"<unparseable URL>"`` rather than
    risking a leak.
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def _encoded_pattern(secret: str) -> str:
    """A regex matching ``secret`` written with any mix of its characters
    as themselves or percent-escaped (``%40``, ``%4a``/``%4A``, UTF-8
    bytes), in upper or lower case (a logger may have changed the case of the
    whole line, escapes included), and spaces as ``+`` (form encoding).
    Compile it with :data:`re.IGNORECASE`."""
    parts = []
    for char in secret:
        options, literals = [], []
        for variant in dict.fromkeys((char, char.lower(), char.upper())):
            # A literal that IGNORECASE already matches would be a second way to
            # match the same text: a failing search then backtracks through
            # 2**letters combinations (11 s for a 90-character escaped password).
            if not any(re.fullmatch(known, variant, re.IGNORECASE) for known in literals):
                literals.append(re.escape(variant))
                options.append(re.escape(variant))
            options.append("".join(f"%{byte:02x}" for byte in variant.encode("utf-8")))
        if char == " ":
            options.append(r"\+")
        parts.append("(?:" + "|".join(dict.fromkeys(options)) + ")")
    return "".join(parts)


# Secrets every scrub removes besides the URL it is given: the dashboard's own
# (session key, first admin's password, database/broker passwords, OIDC client
# secret) and every target's URLs, registered once by create_app
# (:func:`register_secrets`). A set per process: its apps share it.
_KNOWN_SECRETS: set[str] = set()
MIN_SECRET_LENGTH = 6  # shorter registered values would scrub ordinary words
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _url_secrets(value: str) -> set[str]:
    """The password of ``value`` when it is a URL with one: decoded by
    SQLAlchemy and as written between ``user:`` and ``@``; else empty."""
    try:
        password = make_url(value).password
    except Exception:
        password = None
    found = {str(password)} if password else set()
    match = re.match(r"^[^:/]+://[^:@/]*:([^@/]*)@", value)
    if match:
        found.add(match.group(1))
    return found


def _secrets_of(value: str) -> set[str]:
    """What of ``value`` is secret: a URL's password (none for a URL without
    one: the rest of a URL is no secret), or any other value whole."""
    if _URL_RE.match(value):
        return _url_secrets(value)
    return {value}


def register_secrets(values: Iterable[str | None]) -> None:
    """Add ``values`` to the secrets :func:`scrub_secrets` always removes.

    A URL counts by its password; any other value counts whole. Empty values
    and secrets shorter than :data:`MIN_SECRET_LENGTH` are ignored.

    :param values: secrets, URLs or None, e.g. from :func:`configured_secrets`.
    """
    for value in values:
        if value:
            _KNOWN_SECRETS.update(secret for secret in _secrets_of(value)
                                  if len(secret) >= MIN_SECRET_LENGTH)
    _compiled.cache_clear()


def configured_secrets(settings: Mapping, environ: Mapping[str, str],
                       targets: Iterable[SecretSource]) -> list[str]:
    """Every secret a dashboard configured with ``settings`` knows.

    :param settings: the app's settings (``SECRET_KEY``, ``SQLALCHEMY_DATABASE_URI``,
        ``BROKER_URL``, ``RATELIMIT_STORAGE_URI``, ``OIDC_CLIENT_SECRET``,
        ``SMTP_PASSWORD``).
    :param environ: the process environment (``DASHBOARD_ADMIN_PASSWORD`` and
        the ``DASHBOARD_*`` secrets, the targets' URL variables).
    :param targets: the configured targets: their URLs (``url_env``,
        ``readonly_url_env``, ``rehearsal_url_env``) and the URLs with a
        password in their ``[env]`` tables.
    :return: values for :func:`register_secrets` (may hold None).
    """
    found: list[str | None] = [settings.get(key) for key in (
        "SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "BROKER_URL", "RATELIMIT_STORAGE_URI",
        "OIDC_CLIENT_SECRET", "SMTP_PASSWORD")]
    found += [environ.get(name) for name in (
        "DASHBOARD_SECRET_KEY", "DASHBOARD_ADMIN_PASSWORD", "DASHBOARD_DATABASE_URL",
        "DASHBOARD_BROKER_URL", "DASHBOARD_RATELIMIT_STORAGE_URL",
        "DASHBOARD_OIDC_CLIENT_SECRET", "DASHBOARD_SMTP_PASSWORD")]
    for target in targets:
        for name in (target.url_env, target.readonly_url_env, target.rehearsal_url_env):
            if name:
                found.append(environ.get(name) or target.url_defaults.get(name))
        found += [value for value in target.env.values() if _url_secrets(value)]
    return [value for value in found if isinstance(value, str)]


@functools.lru_cache(maxsize=64)
def _compiled(secrets_: frozenset[str]) -> re.Pattern | None:
    """One pattern for all ``secrets_`` (longest first), or None when empty."""
    usable = sorted((s for s in secrets_ if len(s) >= 3), key=len, reverse=True)
    if not usable:
        return None
    return re.compile("|".join(_encoded_pattern(s) for s in usable), re.IGNORECASE)


def scrub_secrets(text: str, url: str | None,
                  extra_secrets: Iterable[str | None] = ()) -> str:
    """Remove ``url``'s password and every secret the dashboard knows from
    ``text`` (error messages, logs, agent output).

    Removed: the password of ``url``; ``extra_secrets`` (URLs count by their
    password); and the secrets registered with :func:`register_secrets`
    (the dashboard's own, every target's URLs). Every spelling is replaced
    by ``***``: as configured, decoded, percent-escaped in any case or mix
    (``%40``/``%4A``/``%4a``), lower- or upper-cased, as SQLAlchemy renders
    it; ``url`` itself written out becomes its redacted form.

    :param text: any text that may quote a URL, a password or a key.
    :param url: the URL of the operation, or None.
    :param extra_secrets: more secrets for this call only (None/empty ignored).
    :return: text safe to show, log or audit.
    """
    if not text:
        return text
    if url:
        text = text.replace(url, redact_url(url))
    secrets_ = set(_KNOWN_SECRETS)
    if url:
        secrets_ |= _url_secrets(url)
    for value in extra_secrets:
        if value:
            secrets_ |= _secrets_of(value)
    pattern = _compiled(frozenset(secrets_))
    return pattern.sub("***", text) if pattern is not None else text


# a quoted SQL string literal ('' escapes a quote; E'...' and backslashes aside)
_SQL_STRING_RE = re.compile(r"'(?:[^']|'')*'")
MAX_QUERY_LENGTH = 2000  # characters of another session's query kept


def redact_query(query: str | None, url: str | None = None) -> str | None:
    """Another session's SQL as the dashboard may show it: its string
    literals replaced by ``'…'`` (they are the data: e-mail addresses, names,
    tokens), every known secret scrubbed (:func:`scrub_secrets`), cut to
    :data:`MAX_QUERY_LENGTH` characters. Numbers and identifiers are kept,
    so the statement stays recognizable. None stays None."""
    if query is None:
        return None
    text = _SQL_STRING_RE.sub("'…'", query)
    text = scrub_secrets(text, url)
    return text[:MAX_QUERY_LENGTH] + ("…" if len(text) > MAX_QUERY_LENGTH else "")
