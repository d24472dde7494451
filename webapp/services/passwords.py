"""Password policy: length, and no common or trivially weak passwords.

The list of common passwords is bundled (``common_passwords.txt``, lower
case); variants of a listed word (any case, leetspeak, digits or symbols
around it), passwords made of one repeated character or a keyboard/number
run, and passwords containing the username are refused too.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

MIN_LENGTH = 8
MAX_LENGTH = 1024
_LIST = Path(__file__).with_name("common_passwords.txt")
_LEET = str.maketrans("013457@$!", "oieastasi")
_RUNS = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "qwertyuiop", "asdfghjkl", "zxcvbnm")


@cache
def common_passwords() -> frozenset[str]:
    """The bundled list, lower case (read once)."""
    lines = _LIST.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _is_run(text: str) -> bool:
    """True for one repeated character or a slice of a keyboard/number run
    (forwards or backwards), e.g. ``aaaaaaaaaa``, ``1234567890``."""
    if len(set(text)) <= 2:
        return True
    return any(text in run * 3 or text in run[::-1] * 3 for run in _RUNS)


def password_problem(password: str, username: str | None = None) -> str | None:
    """Why ``password`` is refused, or None when it is acceptable.

    :param password: the candidate, as typed.
    :param username: the account's name; a password containing it is refused.
    :return: one sentence for the person choosing it (never the password).
    """
    if len(password) < MIN_LENGTH:
        return f"password must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password must have at most {MAX_LENGTH} characters"
    lowered = password.lower()
    core = re.sub(r"^[\W\d_]+|[\W\d_]+$", "", lowered)  # "Password123!" -> "password"
    words = common_passwords()
    if {lowered, core, lowered.translate(_LEET), core.translate(_LEET)} & words or \
            re.sub(r"[\W\d_]+$", "", lowered.translate(_LEET)) in words:
        return "password is too common: choose one that is not on lists of leaked passwords"
    if _is_run(lowered) or (core and _is_run(core) and len(core) >= 4):
        return "password is too simple: no repeated characters or keyboard runs"
    if username and len(username) >= 3 and username.lower() in lowered:
        return "password must not contain the username"
    return None
