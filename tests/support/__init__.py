"""Test helpers as a package (``from support.envtools import make_env``), so no
test imports ``conftest``."""
