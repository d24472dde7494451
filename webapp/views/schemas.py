"""Input schemas: one pydantic model per request body, shared by the HTML
forms and the JSON API.

A form post is first turned into the API's keys (``Body.from_form``), then
both go through the same :meth:`Body.load`, so a field has one type and one
length limit wherever it comes from. A body that does not fit is refused
with :class:`~webapp.services.refusals.Refused` (:attr:`Reason.BAD_INPUT`,
a 400) carrying the message the dashboard has always given for it.

Rules that need the database or a target (is this a revision, may this
user...) and limits shared with code outside the web layer (a request's
reason, an approval's comment, a revision message) stay in the services;
these models check shape, types and the size of identifiers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from ..core.rollouts import Selection
from ..core.targets import Target
from ..services.jobs import JobRequest
from ..services.refusals import Reason, Refused
from ..services.rollouts import RolloutSpec
from ..settings_schema import email_address

COMMAND_MAX = 32     # characters of a command (upgrade, downgrade, stamp)
REVISION_MAX = 200   # characters of a revision, a target name, a tier or a tag
NAMES_MAX = 1000     # entries in a list of tiers, tags or target names

# a command / revision as sent: surrounding blanks dropped before the length is checked
Command = Annotated[str, StringConstraints(strip_whitespace=True, max_length=COMMAND_MAX)]
Revision = Annotated[str, StringConstraints(strip_whitespace=True, max_length=REVISION_MAX)]


def _names(value: Any) -> Any:
    """A string or a list of strings → tuple without blanks and duplicates
    (order kept); anything else is left for the type check to refuse."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and len(value) <= NAMES_MAX \
            and all(isinstance(v, str) for v in value):
        return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))
    return value


def _whole_number(value: Any) -> Any:
    """``""`` / None → None (the default applies), a string of digits → int;
    anything else is left for the (strict) type check."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value) < 10:
        return int(value)
    return value


Names = Annotated[tuple[Annotated[str, StringConstraints(max_length=REVISION_MAX)], ...],
                  BeforeValidator(_names)]
WholeNumber = Annotated[int | None, BeforeValidator(_whole_number)]


class Body(BaseModel):
    """A request body: strict types (a JSON number is no string, ``true`` no
    number), unknown keys ignored, immutable once loaded.

    Subclasses set :attr:`SHAPE` (the message for a body that is not an
    object) and :attr:`MESSAGES`: for a field, or ``"field:too_long"``, the
    message of a refusal on it; the first failing field (in the order the
    fields are declared) decides the message, :attr:`SHAPE` when none is set.
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    SHAPE: ClassVar[str] = "send a JSON object"
    MESSAGES: ClassVar[dict[str, str]] = {}

    @classmethod
    def load(cls, data: Any) -> Self:
        """The body ``data`` (a parsed JSON value, or a form's fields as
        :meth:`from_form` gives them) as this model.

        :raises Refused: :attr:`Reason.BAD_INPUT` when ``data`` is not a
            mapping or a field does not fit.
        """
        if not isinstance(data, Mapping):
            raise Refused(Reason.BAD_INPUT, cls.SHAPE)
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise Refused(Reason.BAD_INPUT, cls._message(exc.errors()[0])) from None

    @classmethod
    def _message(cls, error: Mapping[str, Any]) -> str:
        field = str(error["loc"][0]) if error["loc"] else ""
        if error["type"] == "string_too_long":
            found = cls.MESSAGES.get(f"{field}:too_long")
            if found:
                return found
        message = cls.MESSAGES.get(field)
        return message.format(field=field) if message else cls.SHAPE

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> dict[str, Any]:
        """A form's (or query string's) fields in the API's keys; a field
        left out is an empty string, as a browser sends an empty input."""
        return {name: form.get(name) or "" for name in cls.model_fields}


def _text_or_empty(value: Any) -> Any:
    return value if isinstance(value, str) else ""


_TICKED = ("on", "1", "true", "yes")


class JobBody(Body):
    """Plan, run, rehearse or request ``command`` to ``revision`` on a target:
    ``{"command", "revision", "reason", "plan_hash", "drop_invalid_indexes",
    "resume_of", "compensate_of"}`` (the API sends no plan hash; a form sends
    the one of the plan it showed). ``resume_of`` (optional) is the id of a
    failed job on the target whose half-applied revision the job resumes from
    its statement journal (its command and revision are that job's);
    ``compensate_of`` one whose statements that took effect the job undoes
    (command ``compensate``, revision the half-applied one). See
    :mod:`webapp.services.recovery`.

    ``reason`` is optional and anything but text counts as none (the API
    has always taken it so); its length is the approval service's rule.
    ``drop_invalid_indexes`` (default false): the plan first drops the
    target's INVALID indexes (:mod:`webapp.core.invalid_indexes`); a form or
    query string ticks it with ``on`` / ``1`` / ``true``.
    """

    SHAPE: ClassVar[str] = ('send JSON {"command": "upgrade" | "downgrade" | "stamp", '
                            '"revision": "<rev>"}')
    MESSAGES: ClassVar[dict[str, str]] = {
        "command:too_long": "command or revision is too long",
        "revision:too_long": "command or revision is too long",
        "plan_hash:too_long": "plan_hash is too long",
        "resume_of": "resume_of must be a job id (a whole number)",
        "compensate_of": "compensate_of must be a job id (a whole number)",
        "drop_invalid_indexes": "drop_invalid_indexes must be true or false",
    }

    command: Command
    revision: Revision
    reason: Annotated[str, BeforeValidator(_text_or_empty)] = ""
    plan_hash: Annotated[str, StringConstraints(max_length=REVISION_MAX)] = ""
    resume_of: WholeNumber = None
    compensate_of: WholeNumber = None
    drop_invalid_indexes: bool = False

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> dict[str, Any]:
        """The form's (or query string's) fields; ``drop_invalid_indexes`` a
        checkbox or flag (:data:`_TICKED` values are true)."""
        fields = {name: form.get(name) or "" for name in cls.model_fields
                  if name != "drop_invalid_indexes"}  # a subclass's fields too (rows)
        ticked = str(form.get("drop_invalid_indexes") or "").strip().lower() in _TICKED
        return {**fields, "drop_invalid_indexes": ticked}

    def job_request(self, target: Target) -> JobRequest:
        """The :class:`~webapp.services.jobs.JobRequest` this body asks for on ``target``."""
        return JobRequest(target, self.command, self.revision,
                          drop_invalid_indexes=self.drop_invalid_indexes,
                          resume_of=self.resume_of, compensate_of=self.compensate_of)


class StairwayBody(JobBody):
    """A stairway test: :class:`JobBody`'s fields and ``rows``, the row
    sample per table (a whole number; None: the target's
    ``[targets.<name>.stairway] rows``; its range is the rehearsal
    service's rule)."""

    MESSAGES: ClassVar[dict[str, str]] = {
        **JobBody.MESSAGES, "rows": "rows must be a whole number from 0 to 10000"}

    rows: WholeNumber = None


class RolloutBody(Body):
    """Start a rollout: ``{"command", "revision", "tier" | "tag" | "targets"
    (a string or a list of strings), "batch_size", "concurrency",
    "stop_on_failure", "reason", "paused"}``. The ranges of the numbers and
    of ``reason`` are the rollout service's rules."""

    SHAPE: ClassVar[str] = ('send JSON {"command", "revision", "tier" | "tag" | '
                            '"targets", "batch_size", "concurrency"}')
    MESSAGES: ClassVar[dict[str, str]] = {
        "command": "command and revision must be strings, as for a job",
        "revision": "command and revision must be strings, as for a job",
        **dict.fromkeys(("reason", "stop_on_failure", "paused"),
                        "reason must be a string; stop_on_failure and paused true or false"),
        **dict.fromkeys(("tier", "tag", "targets"), "{field} must be a string or a list of "
                                                    "strings"),
        **dict.fromkeys(("batch_size", "concurrency"), "{field} must be a whole number"),
    }

    command: Command
    revision: Revision
    reason: str = ""
    stop_on_failure: bool = True
    paused: bool = False
    tier: Names = ()
    tag: Names = ()
    targets: Names = ()
    batch_size: WholeNumber = None
    concurrency: WholeNumber = None

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> dict[str, Any]:
        """The start form's fields in the API's keys: tiers and targets are
        checkboxes, tags one text field (comma or space separated), the
        flags checkboxes ("on")."""
        return {"command": form.get("command", ""), "revision": form.get("revision", ""),
                "tier": form.getlist("tier"), "targets": form.getlist("targets"),
                "tag": form.get("tag", "").replace(",", " ").split(),
                "batch_size": form.get("batch_size", ""),
                "concurrency": form.get("concurrency", ""), "reason": form.get("reason", ""),
                "stop_on_failure": form.get("stop_on_failure") == "on",
                "paused": form.get("paused") == "on"}

    def to_spec(self) -> RolloutSpec:
        """The :class:`~webapp.services.rollouts.RolloutSpec` this body asks
        for (concurrency 1 when not given)."""
        return RolloutSpec(command=self.command, revision=self.revision,
                           selection=Selection(tiers=self.tier, tags=self.tag,
                                               names=self.targets),
                           batch_size=self.batch_size,
                           concurrency=1 if self.concurrency is None else self.concurrency,
                           reason=self.reason, stop_on_failure=self.stop_on_failure,
                           paused=self.paused)


# a decision as the URL names it (pages and API) → as the approval service stores it
DECISION_OF_URL = {"approve": "approve", "reject": "reject", "request-changes": "changes"}


class DecisionBody(Body):
    """Approve, request changes or reject a request: ``{"comment",
    "without_viewing"}``. ``comment`` is optional here (rejecting and
    requesting changes need one, and its length is the approval service's
    rule); no body at all is no comment. ``without_viewing``: approve
    although not every revision was ticked as viewed; the form sends its
    checkbox (false when unticked), the API may leave it out (None: an API
    approval, which cannot tick views, counts as approved without viewing).
    """

    SHAPE: ClassVar[str] = 'send JSON {"comment": "...", "without_viewing": true | false}'
    MESSAGES: ClassVar[dict[str, str]] = {
        "comment": "comment must be a string",
        "without_viewing": "without_viewing must be true or false",
    }

    comment: str = ""
    without_viewing: bool | None = None

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> dict[str, Any]:
        """The decision form's fields: the comment, and the "approve without
        viewing" checkbox ("on" when ticked)."""
        return {"comment": form.get("comment") or "",
                "without_viewing": form.get("without_viewing") == "on"}


class CommentBody(Body):
    """A comment in a request's thread, or the requester's note with a new
    plan: ``{"comment"}`` (its length is the review service's rule; a thread
    comment must not be empty)."""

    SHAPE: ClassVar[str] = 'send JSON {"comment": "..."}'
    MESSAGES: ClassVar[dict[str, str]] = {"comment": "comment must be a string"}

    comment: str = ""


class ViewedBody(Body):
    """Tick or untick one revision of a request as viewed: ``{"revision",
    "viewed"}`` (the form sends ``viewed`` as "1" or "0")."""

    SHAPE: ClassVar[str] = 'send JSON {"revision": "<rev>", "viewed": true | false}'
    MESSAGES: ClassVar[dict[str, str]] = {
        "revision": "revision must be a revision id (text)",
        "viewed": "viewed must be true or false",
    }

    revision: Revision
    viewed: bool = True

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> dict[str, Any]:
        """The tick form's fields: ``revision`` and ``viewed`` ("0" unticks)."""
        return {"revision": form.get("revision") or "", "viewed": form.get("viewed") != "0"}


class RevisionBody(Body):
    """Write a revision: ``{"kind": "autogenerate" | "empty" | "merge",
    "message", "branch_label", "head"}``; what each may hold is the authoring
    service's rule."""

    SHAPE: ClassVar[str] = "send kind, message, branch_label and head as text"

    kind: str = ""
    message: str = ""
    branch_label: str = ""
    head: str = ""


def _session_id(value: Any) -> Any:
    """A form's digits → int (a JSON number stays as it is, anything else is refused)."""
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 12:
        return int(value)
    return value


class CancelBlockerBody(Body):
    """Cancel the query of a session that blocks a running job: ``{"pid": n}``
    (the PostgreSQL backend pid or MySQL/MariaDB connection id the job's
    blocked-by pane shows)."""

    SHAPE: ClassVar[str] = 'send JSON {"pid": <session id>}'
    MESSAGES: ClassVar[dict[str, str]] = {"pid": "pid must be the number of a blocking session"}

    pid: Annotated[int, BeforeValidator(_session_id), Field(gt=0, lt=2**31)]


EMAIL_MAX = 254  # characters of an email address (RFC 5321's path limit)
EMAIL_MESSAGE = "email must be an email address such as lead@example.com (or empty for none)"


def _email(value: Any) -> Any:
    """``""`` / None → None (no address); a string → the normalised address
    (``email-validator``, syntax only), a ValueError when it is none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and len(value) <= EMAIL_MAX:
        return email_address(value.strip())
    return value


Email = Annotated[Annotated[str, StringConstraints(max_length=EMAIL_MAX)] | None,
                  BeforeValidator(_email)]


class AccountBody(Body):
    """Create an account: ``{"username", "role", "kind": "person" |
    "service", "email"}``. A person is invited (a link to choose a
    password), a service account gets API tokens only; ``email`` (optional)
    is where notification mails go. What a username and a role may be is
    the accounts service's rule."""

    SHAPE: ClassVar[str] = ('send {"username", "role", "kind": "person" | "service", '
                            '"email"} as text')
    MESSAGES: ClassVar[dict[str, str]] = {
        "username:too_long": "username: 1-64 letters, digits or . _ @ -",
        "role:too_long": "not a role",
        "kind": 'kind must be "person" or "service"',
        "email": EMAIL_MESSAGE,
    }

    username: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)]
    role: Annotated[str, StringConstraints(strip_whitespace=True, max_length=16)]
    kind: Literal["person", "service"] = "person"
    email: Email = None

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> dict[str, Any]:
        """The form's fields; a kind left out is a person."""
        return {"username": form.get("username", ""), "role": form.get("role", ""),
                "kind": form.get("kind") or "person", "email": form.get("email", "")}


class EmailBody(Body):
    """Set a user's notification address: ``{"email"}`` (empty: none)."""

    SHAPE: ClassVar[str] = 'send {"email"}'
    MESSAGES: ClassVar[dict[str, str]] = {"email": EMAIL_MESSAGE}

    email: Email = None


def _ceiling(value: Any) -> Any:
    """``""`` / ``"none"`` / None → None (no ceiling); anything else as sent."""
    return None if value in (None, "", "none") else value


class TokenBody(Body):
    """Create an API token: ``{"name", "expires_days", "role_ceiling"}``
    (days a whole number, default the service's; ceiling a role or none).
    Their ranges are the accounts service's rules."""

    SHAPE: ClassVar[str] = 'send {"name", "expires_days", "role_ceiling"}'
    MESSAGES: ClassVar[dict[str, str]] = {
        "name": "token name must have 1-100 characters",
        "expires_days": "expires_days must be a whole number of days",
        "role_ceiling": "role ceiling must be a role (or none)",
    }

    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)]
    expires_days: WholeNumber = None
    role_ceiling: Annotated[Annotated[str, StringConstraints(max_length=16)] | None,
                            BeforeValidator(_ceiling)] = None


class PasswordBody(Body):
    """Choose a password through a password link: ``{"password",
    "confirm"}`` (the same twice; the policy is the accounts service's)."""

    SHAPE: ClassVar[str] = 'send {"password", "confirm"}'
    MESSAGES: ClassVar[dict[str, str]] = {
        "password:too_long": "the password is too long",
        "confirm:too_long": "the password is too long",
    }

    password: Annotated[str, StringConstraints(max_length=1024)]
    confirm: Annotated[str, StringConstraints(max_length=1024)]
