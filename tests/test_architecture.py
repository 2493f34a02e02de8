"""The import directions of docs/architecture.md hold in the code.

The rule lives in one place, the mermaid diagram of docs/architecture.md: an arrow ``A --> B``
lets ``A`` import ``B`` and whatever ``B`` may import; the ``foundation`` subgraph is importable
from everywhere and imports only itself. Every ``import`` statement (module level and inside
functions) and every ``import_module("rs3l_coffea...")`` call of the checked trees is parsed
with ``ast`` and compared with it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE_DOC = REPO_ROOT / "docs" / "architecture.md"
LIBRARY = REPO_ROOT / "rs3l_coffea"
# Directory names that only resolve from a checkout's root: never imported by name.
CHECKOUT_ONLY = ("processors", "tests", "benchmarks", "analysis_examples")


def read_diagram(text: str) -> tuple[dict[str, set[str]], set[str]]:
    """``(arrows, foundation)`` from the mermaid block of the architecture document."""
    block = re.search(r"```mermaid\n(.*?)```", text, re.DOTALL)
    assert block, f"{ARCHITECTURE_DOC} has no mermaid block"
    arrows: dict[str, set[str]] = {}
    foundation: set[str] = set()
    in_foundation = False
    for raw in block.group(1).splitlines():
        line = raw.strip()
        if line.startswith("subgraph foundation"):
            in_foundation = True
        elif line == "end":
            in_foundation = False
        elif "-->" in line:
            source, target = (part.strip().split("[")[0] for part in line.split("-->"))
            arrows.setdefault(source, set()).add(target)
            arrows.setdefault(target, set())
        elif in_foundation and line:
            foundation.add(line)
    return arrows, foundation


ARROWS, FOUNDATION = read_diagram(ARCHITECTURE_DOC.read_text())


def allowed_targets(unit: str) -> set[str]:
    """What ``unit`` may import: the units its arrows reach, plus the foundation."""
    if unit in FOUNDATION:
        return set(FOUNDATION)
    reached, todo = set(), [unit]
    while todo:
        for target in ARROWS.get(todo.pop(), ()):
            if target not in reached:
                reached.add(target)
                todo.append(target)
    return reached | FOUNDATION


def unit_of_file(path: Path) -> str | None:
    """The diagram node a source file belongs to (``None``: the lazy facade ``__init__``)."""
    relative = path.relative_to(REPO_ROOT).parts
    if relative[0] != "rs3l_coffea":
        return relative[0]
    if len(relative) > 2:
        return relative[1]
    name = relative[1].removesuffix(".py")
    return {"__init__": None, "__main__": "cli"}.get(name, name)


def _lazy_facade() -> dict[str, str]:
    import rs3l_coffea

    return {name: module for name, (module, _) in rs3l_coffea._LAZY.items()}


def unit_of_import(module: str, names: tuple[str, ...] = ()) -> list[str]:
    """Diagram nodes an import of ``module`` (``from module import names``) reaches."""
    parts = module.split(".")
    if parts[0] in CHECKOUT_ONLY:
        return [f"top-level {parts[0]}"]
    if parts[0] != "rs3l_coffea":
        return []
    if len(parts) > 1:
        return [{"__main__": "cli"}.get(parts[1], parts[1])]
    # ``from rs3l_coffea import X``: a subpackage, a lazily exposed object, or ``__version__``.
    lazy, units = _lazy_facade(), []
    for name in names:
        if name in lazy:
            units.extend(unit_of_import(lazy[name]))
        elif (LIBRARY / name).is_dir() or (LIBRARY / f"{name}.py").is_file():
            units.extend(unit_of_import(f"rs3l_coffea.{name}"))
    return units


def imports_of(source: str, filename: str) -> Iterator[tuple[int, str, list[str]]]:
    """``(line, imported module, diagram nodes)`` for every import in ``source``."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, unit_of_import(alias.name)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{filename}:{node.lineno}: relative import"
            names = tuple(alias.name for alias in node.names)
            yield node.lineno, node.module or "", unit_of_import(node.module or "", names)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value, unit_of_import(node.args[0].value)


def violations(unit: str, source: str, filename: str) -> list[str]:
    allowed = allowed_targets(unit) | {unit}
    return [
        f"{filename}:{line}: {unit} imports {module} ({target}), which docs/architecture.md "
        "does not allow"
        for line, module, targets in imports_of(source, filename)
        for target in targets
        if target not in allowed
    ]


def checked_files() -> list[Path]:
    """Source files of the checked trees, less the facade (``rs3l_coffea/__init__.py``)."""
    trees = ("rs3l_coffea", "processors", "benchmarks", "analysis_examples")
    paths = (path for tree in trees for path in (REPO_ROOT / tree).rglob("*.py"))
    return sorted(path for path in paths if unit_of_file(path) is not None)


def library_units() -> set[str]:
    """Every package and top-level module of ``rs3l_coffea/`` that the diagram must name."""
    units = {unit_of_file(path) for path in LIBRARY.rglob("*.py")}
    return {unit for unit in units if unit is not None} | {"processors"}


def test_the_diagram_is_a_complete_acyclic_map() -> None:
    nodes = set(ARROWS) | FOUNDATION
    assert not set(ARROWS) & FOUNDATION, "foundation modules have no arrows of their own"
    try:
        tuple(TopologicalSorter(ARROWS).static_order())
    except CycleError as error:
        pytest.fail(f"the import directions in {ARCHITECTURE_DOC} form a cycle: {error.args[1]}")
    missing = library_units() - nodes
    assert not missing, f"{sorted(missing)} not in the diagram of {ARCHITECTURE_DOC}: add them"
    stale = nodes - library_units() - {"benchmarks", "analysis_examples"}
    assert not stale, f"the diagram of {ARCHITECTURE_DOC} names {sorted(stale)}, which do not exist"
    table = ARCHITECTURE_DOC.read_text().split("## Import directions")[0]
    unlisted = [node for node in sorted(nodes) if f"`{node}" not in table and f"{node}/" not in table]
    assert not unlisted, f"{unlisted} are in the diagram but not in the package map table"


@pytest.mark.parametrize(
    "path", checked_files(), ids=lambda path: str(path.relative_to(REPO_ROOT))
)
def test_imports_follow_the_documented_directions(path: Path) -> None:
    unit = unit_of_file(path)
    assert unit is not None
    found = violations(unit, path.read_text(), str(path.relative_to(REPO_ROOT)))
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "unit,source,forbidden",
    [
        # evaluation works on arrays and histograms: not the study, training or generation
        ("evaluation", "from rs3l_coffea.study import run_study", "study"),
        ("evaluation", "def f():\n    import rs3l_coffea.training.trainer", "training"),
        ("evaluation", "from rs3l_coffea.generation.config import VARIANTS", "generation"),
        # the model side never reaches back into the coffea plumbing or the processors
        ("inference", "from rs3l_coffea.coffea_processing import analysis", "coffea_processing"),
        ("inference", "from rs3l_coffea.processors import TaggingProcessor", "processors"),
        ("features", "from rs3l_coffea import RS3LTagger", "inference"),
        ("io", "from importlib import import_module\nimport_module('rs3l_coffea.nn')", "nn"),
        ("errors", "from rs3l_coffea.io import load_jets", "io"),
        ("demo", "import processors", "top-level processors"),
    ],
)
def test_a_forbidden_import_is_reported(unit: str, source: str, forbidden: str) -> None:
    (message,) = violations(unit, source, "example.py")
    assert f"({forbidden})" in message


def test_allowed_imports_pass() -> None:
    # Reached through arrows (study -> training -> nn), the foundation, the facade's version.
    source = (
        "import rs3l_coffea\nfrom rs3l_coffea.nn import build_model\n"
        "from rs3l_coffea.errors import ConfigError\nimport numpy"
    )
    assert violations("study", source, "example.py") == []
    assert allowed_targets("processors") >= {"coffea_processing", "inference", "nn", "io"}
