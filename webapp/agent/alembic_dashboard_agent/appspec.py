"""``flask_app`` values: ``module:name`` or ``module:factory(literal args)``.

Flask's own rule (``flask --app``, ``flask.cli.find_app_by_string``): the part
after ``:`` is one expression, a name or a call of a simple name whose
positional and keyword arguments are literals (:func:`ast.literal_eval`), so
nothing runs while it is read. Standard library only: the dashboard checks a
targets file with it and the agent (in the target's Python) creates the app.
"""

from __future__ import annotations

import ast


class AppSpecError(ValueError):
    """The ``flask_app`` value is not ``module:name`` or ``module:name(literals)``."""


def parse_app_spec(spec: str) -> tuple[str, str, list, dict]:
    """Split a ``flask_app`` value without running anything.

    :return: ``(module, name, args, kwargs)``; ``name`` is ``"app"`` when the
        part after ``:`` is absent (Flask's default name), args/kwargs empty
        unless it is a call.
    :raises AppSpecError: no module, unparsable expression, a dotted or
        computed function, arguments that are not literals, ``*args``/``**kw``.
    """
    module, _, expression = spec.strip().partition(":")
    module = module.strip()
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise AppSpecError(f"{spec!r}: expected a module name before ':' "
                           "(module:app or module:create_app(...))")
    expression = expression.strip() or "app"
    try:
        node = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise AppSpecError(f"{spec!r}: {expression!r} cannot be parsed as an attribute "
                           "name or a function call") from None
    if isinstance(node, ast.Name):
        return module, node.id, [], {}
    if not isinstance(node, ast.Call):
        raise AppSpecError(f"{spec!r}: {expression!r} must be an attribute name or a call")
    if not isinstance(node.func, ast.Name):
        raise AppSpecError(f"{spec!r}: the function must be a simple name (like "
                           "create_app), not an expression")
    if any(isinstance(a, ast.Starred) for a in node.args) or any(
            k.arg is None for k in node.keywords):
        raise AppSpecError(f"{spec!r}: arguments must be literal values (no *args or **kwargs)")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:  # literal_eval's own message does not say which part
        raise AppSpecError(f"{spec!r}: arguments must be literal values (strings, numbers, "
                           "True/False/None, tuples, lists, dicts)") from None
    return module, node.func.id, args, kwargs
