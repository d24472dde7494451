"""Text input checks shared by every request, and output that never fails
on text stored before them.

:func:`check_request` runs before every view (registered by
:func:`init_app`): it walks the query string, the form, a JSON body, the
URL's parts and the headers the dashboard reads, and answers 400 when a
value cannot be encoded as UTF-8 (a lone surrogate, which only a JSON
``\\ud800`` escape can produce) or holds control characters where none
belong. The view never runs, so nothing is created and nothing with the
bad text is audited.

Two kinds of field:

* identifiers (:data:`IDENTIFIER_KEYS`: revisions, commands, names...):
  no control, format (Unicode category Cf, e.g. U+202E) or line/paragraph
  separator character at all, not even a tab or a line break;
* everything else (reasons, comments, messages...): tab, CR and LF are
  fine, the other C0 controls and DEL are not.

:func:`printable` replaces lone surrogates so that rows stored by an older
version (JSON text with ``\\ud800`` escapes) still render: it is the Jinja
``finalize`` hook of every template and :class:`SafeResponse` encodes any
other text body with replacement instead of raising.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

from flask import Flask, Response, abort, jsonify, request
from markupsafe import Markup

# fields that name something (never free text): the strict rule applies
IDENTIFIER_KEYS = frozenset({
    "command", "revision", "target", "targets", "name", "tier", "tag", "tags", "kind",
    "head", "branch_label", "from", "to", "plan_hash", "confirmed_hash", "request_id",
    "role", "user", "action", "decision", "offset", "since", "until", "all", "id", "job",
    "batch_size", "concurrency", "stop_on_failure", "paused", "csrf_token",
})
# not checked here: ``next`` is made safe where it is followed (common.safe_next)
# and a password is compared, never stored or shown
UNCHECKED_KEYS = frozenset({"next", "password"})
# headers the dashboard reads (credentials, CSRF, htmx, proxies)
CHECKED_HEADERS = ("Authorization", "X-CSRFToken", "X-CSRF-Token", "HX-Request", "Host",
                   "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto")
MAX_DEPTH = 32  # JSON nesting walked; deeper bodies are refused

_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_FREE_TEXT_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*")
_STRICT_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class BadText(ValueError):
    """A refused input value: ``field`` names it (``JSON field 'reason'``),
    the message says why."""

    def __init__(self, field: str, problem: str) -> None:
        self.field, self.problem = field, problem
        super().__init__(f"{field} {problem}")


def text_problem(value: str, identifier: bool) -> str | None:
    """Why ``value`` is refused, or None when it is fine.

    :param identifier: the strict rule (no control, format or separator
        character at all) instead of the free-text rule (tab, CR, LF allowed).
    """
    if _ASCII_PRINTABLE_RE.fullmatch(value):
        return None  # the usual case, decided without looking at each character
    found = _SURROGATE_RE.search(value)
    if found:
        return (f"holds a lone surrogate ({ascii(found.group())[1:-1]}), which is not "
                "valid Unicode text and cannot be stored")
    if identifier:
        for char in value:
            if unicodedata.category(char) in _STRICT_CATEGORIES:
                return (f"holds the control or format character U+{ord(char):04X}; "
                        "names, revisions and commands take none")
        return None
    found = _FREE_TEXT_CONTROL_RE.search(value)
    if found:
        return (f"holds the control character U+{ord(found.group()):04X}; only tab and "
                "line breaks are allowed in text")
    return None


def _label(kind: str, key: str) -> str:
    return f"{kind} {ascii(key[:60]) if _SURROGATE_RE.search(key) else repr(key[:60])}"


def _json_values(value, key: str, depth: int = 0) -> Iterator[tuple[str, str, bool]]:
    """(field key, text, is an identifier) for every string in a parsed JSON
    value; object keys are identifiers themselves."""
    if depth > MAX_DEPTH:
        raise BadText(_label("JSON field", key), f"is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        yield key, value, key in IDENTIFIER_KEYS
    elif isinstance(value, dict):
        for child_key, child in value.items():
            yield child_key, child_key, True
            yield from _json_values(child, child_key, depth + 1)
    elif isinstance(value, list):
        for child in value:
            yield from _json_values(child, key, depth + 1)


def _multidict_values(values, kind: str) -> Iterator[tuple[str, str, str, bool]]:
    for key, value in values.items(multi=True):
        yield kind, key, key, True
        if key not in UNCHECKED_KEYS:
            yield kind, key, value, key in IDENTIFIER_KEYS


def _request_values() -> Iterator[tuple[str, str, str, bool]]:
    """(where, key, text, is an identifier) for every text input of the request."""
    yield from _multidict_values(request.args, "query parameter")
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        yield from _multidict_values(request.form, "form field")
    for key, value in (request.view_args or {}).items():
        if isinstance(value, str):
            yield "URL part", key, value, True
    for name in CHECKED_HEADERS:
        value = request.headers.get(name)
        if value is not None:
            # header values may fold whitespace: the free-text rule, tab included
            yield "header", name, value, False
    if request.is_json:
        payload = request.get_json(silent=True)  # cached: the view reads the same object
        for key, value, identifier in _json_values(payload, ""):
            if key not in UNCHECKED_KEYS or value == key:
                yield "JSON field", key, value, identifier


def find_bad_text() -> BadText | None:
    """The first refused text input of the current request, or None."""
    try:
        for kind, key, value, identifier in _request_values():
            problem = text_problem(value, identifier)
            if problem is not None:
                return BadText(_label(kind, key), problem)
    except BadText as exc:
        return exc
    return None


def check_request():
    """``before_request``: a 400 (JSON ``{"error": "bad_input", "detail"}``
    under ``/api/``, the error page elsewhere) for the first refused input;
    None lets the view run."""
    if request.endpoint == "static":
        return None
    bad = find_bad_text()
    if bad is None:
        return None
    detail = f"The {bad}. Send text that is valid UTF-8 without control characters."
    if request.path.startswith("/api/"):
        return jsonify(error="bad_input", detail=detail), 400
    abort(400, description=detail)


def printable(value):
    """``value`` with each lone surrogate replaced by U+FFFD (text stored
    before :func:`check_request` existed); anything but text unchanged.
    The Jinja ``finalize`` hook: Markup stays Markup."""
    if isinstance(value, str) and _SURROGATE_RE.search(value):
        cleaned = _SURROGATE_RE.sub("\ufffd", value)
        return Markup(cleaned) if isinstance(value, Markup) else cleaned
    return value


class SafeResponse(Response):
    """Flask's response whose text body is encoded with replacement: a lone
    surrogate that reached a body answers with U+FFFD, never a 500."""

    def set_data(self, value: bytes | str) -> None:
        """Encode ``value`` as UTF-8 (lone surrogates replaced) and set it."""
        if isinstance(value, str):
            value = printable(value).encode()
        super().set_data(value)


def init_app(app: Flask) -> None:
    """Register :func:`check_request` and the output guards on ``app``
    (before any template is loaded: ``finalize`` is compiled into templates)."""
    app.before_request(check_request)
    app.response_class = SafeResponse
    if "jinja_env" in app.__dict__:  # already created: set it on the environment
        app.jinja_env.finalize = printable
    else:
        app.jinja_options = {**app.jinja_options, "finalize": printable}
