from . import _typecheck  # noqa: F401  (the type checker named in pyproject addopts)
