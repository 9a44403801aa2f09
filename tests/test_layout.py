"""The house's shape: imports point one way, the library never imports the experiments."""

import ast
import re
from pathlib import Path

import bpexp

PKG = Path(bpexp.__file__).resolve().parent


def bpexp_imports(path: Path) -> set[str]:
    """Names of the bpexp modules (first component below bpexp) that ``path`` imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "bpexp":
                out |= {a.name for a in node.names}
            elif node.module.startswith("bpexp."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("bpexp.")}
    return out


def graph() -> dict[str, set[str]]:
    return {p.stem: bpexp_imports(p) - {p.stem} for p in PKG.glob("*.py")}


def test_no_import_cycle():
    g = graph()
    state = {}

    def visit(n, path):
        state[n] = "open"
        for d in g.get(n, ()):
            assert state.get(d) != "open", f"import cycle: {' -> '.join(path + [d])}"
            if d not in state:
                visit(d, path + [d])
        state[n] = "done"

    for n in g:
        if n not in state:
            visit(n, [n])


def test_the_library_finds_experiments_only_through_discovery():
    """A library module may import ``bpexp.experiments`` (the discovery: names, get) but never
    one experiment's module."""
    for path in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = ([node.module] if isinstance(node, ast.ImportFrom) and node.module else
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for mod in mods:
                assert not mod.startswith("bpexp.experiments."), f"{path.name} imports {mod}"
            if isinstance(node, ast.ImportFrom) and node.module == "bpexp.experiments":
                assert {a.name for a in node.names} <= {"names", "get"}, path.name


def test_models_and_grads_share_primitives_and_the_one_network_only():
    g = graph()
    assert g["stacked"] <= {"primitives", "errors"}, g["stacked"]
    assert g["grads"] <= {"primitives", "stacked", "errors"}, g["grads"]
    assert g["models"] <= {"primitives", "stacked", "grads", "errors"}, g["models"]
    assert g["primitives"] <= {"errors"}


def test_experiments_never_import_the_entry_point():
    import bpexp.experiments

    paths = list(Path(bpexp.experiments.__file__).parent.rglob("*.py"))
    assert len(paths) >= 10
    for path in paths:
        assert "__main__" not in bpexp_imports(path), path


def test_every_experiment_keeps_the_contract():
    """Each discovered experiment exports the contract of bpexp/experiments/__init__.py."""
    from bpexp import experiments

    for name in experiments.names():
        mod = experiments.get(name)
        for attr in ("Params", "USES", "validate", "compute", "save", "present"):
            assert callable(getattr(mod, attr, None)) or attr == "USES", (name, attr)
        assert mod.Params().name == name, name
        assert mod.__doc__ and "Question:" in mod.__doc__, name


def test_no_package_shadows_a_library_module_it_imports():
    """``from bpexp import theory`` in a package's __init__ that also has a theory.py is a trap:
    importing the submodule rebinds the name ``theory`` in the package to the submodule."""
    import bpexp.experiments

    for init in Path(bpexp.experiments.__file__).parent.glob("*/__init__.py"):
        subs = {p.stem for p in init.parent.glob("*.py")} - {"__init__"}
        top = {a.name for node in ast.walk(ast.parse(init.read_text()))
               if isinstance(node, ast.ImportFrom) and node.module == "bpexp"
               for a in node.names}
        assert not (top & subs), f"{init.parent.name}: from bpexp import {top & subs}"


MAX_MODULE, MAX_FUNCTION = 400, 60
LONG_REASON = "Long because"   # a longer function states why in its docstring


def _modules():
    import bpexp.experiments

    return sorted(PKG.glob("*.py")) + sorted(Path(bpexp.experiments.__file__).parent.rglob(
        "*.py"))


def _code_lines(fn) -> int:
    """Lines of a function without its docstring."""
    doc = 0
    if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant):
        doc = fn.body[0].end_lineno - fn.body[0].lineno + 1
    return fn.end_lineno - fn.lineno + 1 - doc


def test_rooms_are_small():
    """No module over 400 lines; no function over 60 (without its docstring) unless the
    docstring says why ("Long because ...")."""
    big = [f"{p.name}: {n}" for p in _modules()
           if (n := len(p.read_text().splitlines())) > MAX_MODULE]
    assert not big, big
    long = []
    for p in _modules():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _code_lines(node) > MAX_FUNCTION and LONG_REASON not in (
                        ast.get_docstring(node) or ""):
                    long.append(f"{p.relative_to(p.parents[1])}:{node.name} "
                                f"({_code_lines(node)} lines)")
    assert not long, long


def test_every_experiment_package_ships_in_the_wheel():
    import tomllib

    import bpexp.experiments

    listed = set(tomllib.loads((PKG.parent / "pyproject.toml").read_text())["tool"][
        "setuptools"]["packages"])
    here = {f"bpexp.experiments.{p.parent.name}"
            for p in Path(bpexp.experiments.__file__).parent.glob("*/__init__.py")}
    assert here <= listed, here - listed


def _docstring_ids(tree) -> set:
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(
                    getattr(n.body[0], "value", None), ast.Constant):
                out.add(id(n.body[0].value))
    return out


# library words that are also experiment names: the quantity, not the experiment
CONCEPTS = {"sharpness": "the Hessian's top eigenvalue (Cohen et al. 2021), a measurement",
            "catapult": "a regime of GD (Lewkowycz et al. 2020), a label of bpexp.regimes"}


def test_the_library_names_no_experiment():
    """No string in the library's code (docstrings aside) is an experiment's name or selects
    one (``+experiment=NAME``, ``experiment NAME``); experiments are found by discovery."""
    from bpexp import experiments

    names = set(experiments.names()) - set(CONCEPTS)
    select = re.compile(r"experiment[= ]+(%s)\b" % "|".join(map(re.escape, sorted(names))))
    found = []
    for path in PKG.glob("*.py"):
        tree = ast.parse(path.read_text())
        docs = _docstring_ids(tree)
        for n in ast.walk(tree):
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
                if n.value in names or select.search(n.value):
                    found.append(f"{path.name}:{n.lineno} {n.value[:60]!r}")
    assert not found, found
