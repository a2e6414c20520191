"""The package's layers: imports go one way, lowest first, with no cycles; the public namespace
is small and every name in it is documented."""

import ast
import inspect
from pathlib import Path

import bayesshape as bs

ROOT = Path(bs.__file__).resolve().parent

# lowest first; a module may import from its own layer and from any layer below it
LAYERS = [
    ("_atomic", "_checks", "_gaussian", "_geometry", "_version"),
    ("prior", "datasets"),
    ("projection",),
    ("obs", "simulate"),
    ("posterior",),
    ("inference",),
    ("io",),
    ("registration",),
    ("export",),
    ("report",),
    ("cli",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, mod: str | None = None) -> set[str]:
    """Every ``bayesshape.*`` module the file imports (at any depth, lazy imports included)."""
    mod = mod or _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
            out.update(n for n in names if n.startswith("bayesshape"))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("bayesshape"))
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in ROOT.rglob("*.py")}


def test_every_module_belongs_to_a_layer():
    unknown = {_layer(m) for m in _graph() if _layer(m) is not None} - set(RANK)
    assert not unknown, f"modules outside every layer: {sorted(unknown)}; add them to LAYERS"


def test_imports_go_one_way():
    """No module imports from a layer above its own (the top-level package, which re-exports the
    public names, is exempt)."""
    bad = []
    for mod, targets in _graph().items():
        src = _layer(mod)
        if src is None:
            continue
        for t in targets:
            dst = _layer(t)
            if dst is not None and RANK[dst] > RANK[src]:
                bad.append(f"{mod} -> {t}")
            if dst is None and t == "bayesshape":
                bad.append(f"{mod} -> bayesshape (the top-level package)")
    # the command line calls the public API as a user does
    bad = [b for b in bad if not b.startswith("bayesshape.cli.")]
    assert not bad, "imports from a higher layer:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    modules = set(graph)

    def resolve(t):  # "bayesshape.obs.Contour" (a name) -> its module
        while t and t not in modules:
            t = t.rpartition(".")[0]
        return t

    edges = {m: {resolve(t) for t in ts} - {m, "bayesshape", ""} for m, ts in graph.items()}
    # a package's __init__ importing its own submodules is not a cycle of concern; drop package -> child
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in edges.get(m, ()):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t) :] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state and m != "bayesshape":
            visit(m)


def test_the_walk_sees_lazy_relative_imports(tmp_path):
    """The walk is not vacuous: a lazy relative import from a higher layer is resolved to it."""
    f = tmp_path / "build.py"
    f.write_text("def f():\n    from ..inference.infer import infer\n    from .model import ShapeModel\n")
    found = _imports(f, "bayesshape.prior.build")
    assert found == {"bayesshape.inference.infer", "bayesshape.prior.model"}
    assert RANK[_layer("bayesshape.inference.infer")] > RANK[_layer("bayesshape.prior.build")]


def test_public_namespace_is_small_and_documented():
    names = [n for n in bs.__all__ if n != "__version__"]
    callables = [n for n in names if not inspect.ismodule(getattr(bs, n))]
    # two entry points per capability at most; settings classes of the less common ones stay in their subpackage
    assert len(callables) <= 28, callables
    for n in names:
        obj = getattr(bs, n)
        assert inspect.getdoc(obj), f"bayesshape.{n} has no docstring"
    for sub in (bs.prior, bs.projection, bs.obs, bs.posterior, bs.inference, bs.io, bs.export, bs.report):
        for n in sub.__all__:
            obj = getattr(sub, n)
            if callable(obj) or inspect.isclass(obj):
                assert inspect.getdoc(obj), f"{sub.__name__}.{n} has no docstring"


def test_infer_has_at_most_eight_parameters():
    assert len(inspect.signature(bs.infer).parameters) <= 8
