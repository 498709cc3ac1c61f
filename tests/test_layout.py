"""The package's layering, read from its imports (every import, those inside functions too):
no circle; no module above the registry knows which backends exist; the C backend runs without
Numba; machine facts are read in one place.  The README's "Layout" section draws the picture."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fastconv"
BACKEND_PACKAGES = ("fastconv.c", "fastconv.numba")
# the registry lists the backends' records and kernels; nothing else above them may
KNOWS_BACKENDS = ("fastconv.registry",)


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _is_package(name: str) -> bool:
    return MODULES.get(name, pathlib.Path()).name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The module a `from X import ...` names, X made absolute."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str) -> set:
    """Every module `module` imports, fastconv's resolved to files (a name imported from a package
    that is one of its modules counts as that module) and others by their top-level name."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name if a.name.startswith("fastconv") else a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if not target.startswith("fastconv"):
                out.add(target.split(".")[0])
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)  # else a name defined in target
    return out


def _in(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


GRAPH = {m: {t for t in imports(m) if t in MODULES} for m in MODULES}


def test_the_import_graph_has_no_circle():
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == "open":
                pytest.fail("import circle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = "done"

    for m in sorted(MODULES):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_backend_packages_and_the_registry_name_a_backend(module):
    if _in(module, BACKEND_PACKAGES) or module in KNOWS_BACKENDS:
        return
    named = {t for t in imports(module) if t in ("numba", "fastconv._cconv") or _in(t, BACKEND_PACKAGES)}
    assert not named, f"{module} imports {sorted(named)}: ask the registry's backend records instead"


def test_the_c_backend_runs_without_numba():
    """Everything the C backend's modules import, transitively, inside fastconv (the package's own
    __init__ aside, which loads every backend) never imports Numba."""
    seen, todo = set(), [m for m in MODULES if _in(m, ["fastconv.c"])]
    while todo:
        m = todo.pop()
        if m in seen or m == "fastconv":
            continue
        seen.add(m)
        assert "numba" not in imports(m) and not any(_in(t, ["fastconv.numba"]) for t in imports(m)), \
            f"{m}, imported by the C backend, imports Numba"
        todo += GRAPH[m]
    assert "fastconv.threads" in seen and "fastconv.common.openblas" in seen  # the walk went where it should


def test_machine_facts_are_read_in_one_module():
    readers = sorted(m for m, p in MODULES.items() if "/proc/cpuinfo" in p.read_text() and m != "fastconv.machine")
    assert not readers, f"{readers} read /proc/cpuinfo: use fastconv.machine"
