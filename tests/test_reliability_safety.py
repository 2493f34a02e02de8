"""Safe loading, enforced on the source tree: no code path may unpickle untrusted data.

An AST scan of every Python file we ship or run (``rs3l_coffea/``, ``processors/``,
``benchmarks/``, ``analysis_examples/``) looks for calls that deserialise with pickle or run
code: ``pickle``/``cloudpickle``/``dill``/``joblib``/``marshal``/``shelve`` loads,
``pandas.read_pickle``, ``coffea.util.load`` (cloudpickle), ``torch.load`` without a literal
``weights_only=True``, ``numpy.load`` with ``allow_pickle=True``, ``yaml.load`` /
``yaml.unsafe_load`` / ``yaml.full_load``, ``torch.jit.load`` and the ``eval``/``exec``
builtins. Import aliases (``from pickle import loads as l``) are resolved. A finding fails
the test unless it is in :data:`ALLOWED` with a reason. The scanner itself is tested on
snippets, so a broken scanner cannot pass silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("rs3l_coffea", "processors", "benchmarks", "analysis_examples")

# Deserialisers that execute code from the data (pickle family) or are code execution.
FORBIDDEN = {
    "pickle.load", "pickle.loads", "pickle.Unpickler",
    "_pickle.load", "_pickle.loads",
    "cloudpickle.load", "cloudpickle.loads",
    "dill.load", "dill.loads",
    "joblib.load",
    "marshal.load", "marshal.loads",
    "shelve.open",
    "pandas.read_pickle",
    "coffea.util.load",
    "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
    "torch.jit.load",
    "eval", "exec",
}
# Loaders that are safe only with a keyword set to a literal value.
CONDITIONAL = {
    "torch.load": ("weights_only", True),
    "numpy.load": ("allow_pickle", False),
}
CONDITIONAL_DEFAULT_SAFE = {"numpy.load"}  # numpy's default allow_pickle is False

# (path relative to the repository, qualified call) -> why it is acceptable
ALLOWED: dict[tuple[str, str], str] = {}


def _qualified(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, with the leading name resolved through imports."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _aliases(tree: ast.AST) -> dict[str, str]:
    aliases = {"np": "numpy", "pd": "pandas"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def unsafe_calls(source: str, filename: str = "<snippet>") -> list[tuple[int, str]]:
    """``[(line, qualified call)]`` of every unsafe deserialisation/exec call in ``source``."""
    tree = ast.parse(source, filename=filename)
    aliases = _aliases(tree)
    findings = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, aliases)
        if name is None:
            continue
        if name in FORBIDDEN:
            findings.append((node.lineno, name))
        elif name in CONDITIONAL:
            keyword, safe_value = CONDITIONAL[name]
            given = {k.arg: k.value for k in node.keywords}
            value = given.get(keyword)
            if value is None:
                if name not in CONDITIONAL_DEFAULT_SAFE or None in given:  # **kwargs could set it
                    findings.append((node.lineno, f"{name} without {keyword}={safe_value}"))
            elif not (isinstance(value, ast.Constant) and value.value is safe_value):
                findings.append((node.lineno, f"{name} with {keyword}={ast.unparse(value)}"))
    return findings


def scanned_files() -> list[Path]:
    return sorted(
        path for top in SCANNED if (REPO / top).is_dir() for path in (REPO / top).rglob("*.py")
    )


def test_no_unsafe_deserialisation_in_the_source_tree():
    files = scanned_files()
    assert len(files) > 50  # the package really was found
    offending = []
    for path in files:
        relative = str(path.relative_to(REPO))
        for line, call in unsafe_calls(path.read_text(encoding="utf-8"), relative):
            if (relative, call.split(" ")[0]) not in ALLOWED:
                offending.append(f"{relative}:{line}: {call}")
    assert not offending, "unsafe loading (use safetensors / weights_only=True):\n" + "\n".join(offending)


def test_every_torch_load_in_the_package_is_weights_only():
    """The positive side: the two torch.load calls that exist are found and are weights-only."""
    seen = []
    for path in scanned_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _aliases(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _qualified(node.func, aliases) == "torch.load":
                weights_only = {k.arg: k.value for k in node.keywords}.get("weights_only")
                assert isinstance(weights_only, ast.Constant) and weights_only.value is True
                seen.append(path.name)
    assert {"published.py", "checkpoint.py"} <= set(seen)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("import pickle\npickle.loads(b'')", "pickle.loads"),
        ("from pickle import loads as l\nl(b'')", "pickle.loads"),
        ("import cloudpickle as cp\ncp.load(f)", "cloudpickle.load"),
        ("from coffea.util import load\nload('x.coffea')", "coffea.util.load"),
        ("from coffea import util\nutil.load('x.coffea')", "coffea.util.load"),
        ("import joblib\njoblib.load('m.pkl')", "joblib.load"),
        ("import torch\ntorch.load('m.pt')", "torch.load without weights_only=True"),
        ("import torch\ntorch.load('m.pt', weights_only=False)", "torch.load with weights_only=False"),
        ("import torch\ntorch.load('m.pt', **options)", "torch.load without weights_only=True"),
        ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "numpy.load with allow_pickle=True"),
        ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "yaml.load"),
        ("import pandas as pd\npd.read_pickle('t.pkl')", "pandas.read_pickle"),
        ("eval('1 + 1')", "eval"),
    ],
)
def test_scanner_finds_unsafe_calls(snippet, expected):
    assert [call for _, call in unsafe_calls(snippet)] == [expected]


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load('m.pt', map_location='cpu', weights_only=True)",
        "import numpy as np\nnp.load('a.npz')",
        "import numpy as np\nnp.load('a.npz', allow_pickle=False)",
        "import yaml\nyaml.safe_load(text)",
        "import pickle\nerror = pickle.UnpicklingError",
        "from safetensors.torch import load_file\nload_file('m.safetensors')",
        "import ast\nast.literal_eval('[1, 2]')",
        "model.eval()",
    ],
)
def test_scanner_accepts_safe_calls(snippet):
    assert unsafe_calls(snippet) == []
