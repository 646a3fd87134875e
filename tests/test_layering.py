"""The package's layering, read from its source with `ast`: no import cycles between adadecode modules, imports at
module level except those of optional dependencies, and `import adadecode` / `adadecode --help` without them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "python"
PACKAGE = "adadecode"
EXTENSIONS = {"adadecode._core"}  # compiled: imports nothing from the package

# Third-party modules that a function may import: the optional extras of pyproject.toml (train, convert, bench,
# server, grammar), the anchors that bench compares against, and stdlib modules some platforms lack.
OPTIONAL = {
    "torch",
    "transformers",
    "gguf",
    "matplotlib",
    "fastapi",
    "starlette",
    "pydantic",
    "uvicorn",
    "llguidance",
    "llama_cpp",
    "resource",  # not on Windows
    "readline",  # not on Windows
}
# Core dependencies that cost as much to import as a good part of numpy (tqdm ~40%, jinja2 ~20% of it) and serve one
# purpose (progress bars, chat templates): imported where used, so that startup does not pay for them.
DEFERRED = {"tqdm", "jinja2"}
# Run by bench as scripts in another Python (llama-cpp-python's, transformers'), which reports a missing import as a
# JSON error: every import there may be guarded.
FOREIGN_SCRIPTS = {"adadecode.bench.llamacpp_worker", "adadecode.bench.transformers_worker"}
# What `import adadecode` and `adadecode --help` must not load: the extras, none of which the core needs, and DEFERRED.
NOT_AT_STARTUP = ("torch", "transformers", "gguf", "matplotlib", "fastapi", "starlette", "pydantic", "uvicorn",
                  "llguidance", "tqdm", "jinja2")  # fmt: skip


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    line: int
    targets: tuple[str, ...]  # imported modules: adadecode ones resolved to their names, others as written
    in_function: bool
    type_checking: bool  # under `if TYPE_CHECKING:`


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((SOURCE / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()
KNOWN = set(MODULES) | EXTENSIONS


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> tuple[str, ...]:
    if isinstance(node, ast.Import):
        return tuple(alias.name for alias in node.names)
    if node.level:
        base = module.split(".") if _is_package(module) else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    # `from pkg import name` imports the submodule pkg.name when there is one, else takes a name from pkg.
    return tuple(dict.fromkeys(f"{source}.{a.name}" if f"{source}.{a.name}" in KNOWN else source for a in node.names))


def _walk(module: str, node: ast.AST, in_function: bool, type_checking: bool) -> Iterator[Import]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield Import(module, child.lineno, _targets(module, child), in_function, type_checking)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(module, child, True, type_checking)
        elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from _walk(module, child, in_function, True)
        else:
            yield from _walk(module, child, in_function, type_checking)


def _imports() -> Iterator[Import]:
    for module, path in MODULES.items():
        yield from _walk(module, ast.parse(path.read_text(encoding="utf-8"), str(path)), False, False)


IMPORTS = list(_imports())


def _internal(target: str, importer: str) -> set[str]:
    """The adadecode modules that `importer` depends on by importing `target`: the target itself, and the packages
    above it that importing it runs first, except `importer`'s own packages (those have run already)."""
    if target.split(".")[0] != PACKAGE:
        return set()
    parts = target.split(".")
    above = {".".join(parts[:i]) for i in range(1, len(parts))}
    own = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 1)}
    return (({target} | (above - own)) & KNOWN) - {importer}


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in KNOWN}
    for imp in IMPORTS:  # every import counts: module level, in functions, for type checking
        for target in imp.targets:
            graph[imp.module] |= _internal(target, imp.module)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:  # walk inside the component from its first module back to it
        members, start = set(component), sorted(component)[0]
        path, seen = [start], {start}
        while True:
            nxt = sorted(graph[path[-1]] & members)
            back = [w for w in nxt if w == start]
            if back or not nxt:
                cycles.append(path + [start])
                break
            step = next((w for w in nxt if w not in seen), nxt[0])
            if step in seen:
                cycles.append(path[path.index(step) :] + [step])
                break
            path.append(step)
            seen.add(step)
    return cycles


def test_the_graph_sees_the_package() -> None:
    # The checks below pass vacuously if the walk finds nothing; these edges exist by design.
    graph = _graph()
    assert {"adadecode.model", "adadecode.api", "adadecode.cli", "adadecode.cli_common"} <= set(graph)
    assert "adadecode._core" in graph["adadecode.model"]
    assert {"adadecode.cli_common", "adadecode.chat_cli", "adadecode.server"} <= graph["adadecode.cli"]
    assert "adadecode.bench.command" in graph["adadecode.cli"] and "adadecode.bench" in graph["adadecode.cli"]


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(map(tuple, _cycles(graph))) == [("a", "b", "c", "a"), ("e", "e")]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles between adadecode modules: " + "; ".join(" -> ".join(c) for c in cycles)


def _needs_optional() -> set[str]:
    """adadecode modules whose import needs an optional dependency (directly or through another module)."""
    graph: dict[str, set[str]] = {m: set() for m in KNOWN}
    heavy: set[str] = set()
    for imp in IMPORTS:
        if imp.in_function or imp.type_checking:
            continue
        for target in imp.targets:
            graph[imp.module] |= _internal(target, imp.module)
            if target.split(".")[0] in OPTIONAL:
                heavy.add(imp.module)
    changed = True
    while changed:
        grown = heavy | {m for m, deps in graph.items() if deps & heavy}
        changed, heavy = grown != heavy, grown
    return heavy


def test_function_level_imports_are_of_optional_dependencies() -> None:
    heavy = _needs_optional()
    assert "adadecode.head_math" in heavy  # it imports torch
    allowed = OPTIONAL | DEFERRED | heavy
    bad = [
        f"{imp.module}:{imp.line} imports {target}"
        for imp in IMPORTS
        if imp.in_function and imp.module not in FOREIGN_SCRIPTS
        for target in imp.targets
        if target.split(".")[0] not in allowed and target not in allowed
    ]
    assert not bad, "move these imports to module level (or name an optional dependency in OPTIONAL): " + ", ".join(bad)


def test_core_dependencies_are_not_optional() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((SOURCE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {dep.split(">")[0].split("=")[0].split("<")[0].strip().replace("-", "_") for dep in project["dependencies"]}
    assert "numpy" in core
    assert not core & OPTIONAL, f"core dependencies listed as optional: {sorted(core & OPTIONAL)}"
    extras = {
        dep.split(">")[0].split("=")[0].strip().replace("-", "_")
        for name, deps in project["optional-dependencies"].items()
        if name != "test"
        for dep in deps
    }
    assert extras <= OPTIONAL, f"extras that OPTIONAL does not list: {sorted(extras - OPTIONAL)}"


_PROBE = """
import json, sys
{code}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _loaded_after(code: str, names: tuple[str, ...] = NOT_AT_STARTUP) -> list[str]:
    probe = _PROBE.format(code=code, heavy=names)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_adadecode_loads_no_optional_dependency() -> None:
    assert _loaded_after("import adadecode") == []


def test_cli_help_loads_no_optional_dependency() -> None:
    # Building the parser imports every subcommand module; `--help` exits after printing, hence the try.
    code = (
        "from adadecode.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "for cmd in ('run', 'chat', 'serve', 'convert', 'bench', 'train-heads', 'eval-heads'):\n"
        "    try:\n        main([cmd, '--help'])\n    except SystemExit:\n        pass\n"
    )
    assert _loaded_after(code) == []
    assert _loaded_after("import decimal", ("decimal", "torch")) == ["decimal"]  # the probe sees what is loaded
