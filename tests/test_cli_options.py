"""The ``rs3l`` commands read as one tool (issue 19 items 4 and 10): one option name per concept
across all commands, option names that spell their Python parameter, and help text free of
raw placeholders."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, ClassVar

import pytest
import typer
from typer.testing import CliRunner

from rs3l_coffea.cli import app

# Python parameter names that mean the same thing: every command must spell them alike.
SYNONYMS = {
    "recluster_radius": {"recluster", "radius", "recluster_radius"},
    "chunk_size": {"chunksize", "chunk_size"},
    "max_chunks": {"maxchunks", "max_chunks"},
    "out": {"out", "output", "out_dir"},
    "quiet": {"quiet", "silent"},
    "threads": {"threads", "num_threads", "n_threads"},
    "workers": {"workers", "n_workers", "num_workers"},
}
# Options whose flag is deliberately not the parameter name (short, conventional words).
FLAG_EXCEPTIONS = {
    ("ntuple", "inputs"): "--in",
    ("process", "processor_name"): "--processor",
    ("train finetune", "overrides"): "--set",
    ("train pretrain", "overrides"): "--set",
    ("train supervised", "overrides"): "--set",
}


def all_commands() -> dict[str, Any]:
    root = typer.main.get_command(app)
    found: dict[str, Any] = {}

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "list_commands"):
            context = typer.Context(command)
            for name in command.list_commands(context):
                walk(command.get_command(context, name), [*path, name])
        else:
            found[" ".join(path)] = command

    walk(root, [])
    return found


def long_flag(parameter: Any) -> str:
    return next(opt for opt in parameter.opts if opt.startswith("--"))


def test_walk_finds_every_command():
    assert {"process", "features", "export", "ntuple", "generate", "report", "evaluate",
            "train pretrain", "train finetune", "train supervised", "demo"} <= set(all_commands())


def test_one_name_per_option_across_commands():
    flags_by_concept: dict[str, set[str]] = defaultdict(set)
    where: dict[str, list[str]] = defaultdict(list)
    checked: list[str] = []
    for name, command in all_commands().items():
        for parameter in command.params:
            if parameter.param_type_name != "option":
                continue
            concept = next((c for c, names in SYNONYMS.items() if parameter.name in names), parameter.name)
            flag = long_flag(parameter)
            checked.append(flag)
            flags_by_concept[concept].add(flag)
            where[concept].append(f"{name}: {flag}")
            expected = FLAG_EXCEPTIONS.get((name, parameter.name), "--" + concept.replace("_", "-"))
            assert flag == expected, f"rs3l {name}: option for {parameter.name!r} is {flag}, expected {expected}"
    assert len(checked) > 60 and "--recluster-radius" in checked  # the walk saw the options
    mixed = {c: where[c] for c, flags in flags_by_concept.items() if len(flags) > 1}
    assert not mixed, f"one concept, several option names: {mixed}"


def test_reader_hint_names_the_command_line_option(coffea_sample):
    from rs3l_coffea.errors import MissingConstituentsError
    from rs3l_coffea.io import jets_from_events, open_events

    events, _, _ = open_events(coffea_sample("pfnano.root"))

    class WithoutAssociation:  # the FatJet collection without its FatJetPFCands table
        fields: ClassVar[list[str]] = [f for f in events.fields if f != "FatJetPFCands"]

        def __getitem__(self, name):
            return events[name]

    with pytest.raises(MissingConstituentsError, match=r"FatJetPFCands.*--recluster-radius R on the command line"):
        jets_from_events(WithoutAssociation(), source="pfnano", jets="FatJet", origin="x.root")


@pytest.mark.parametrize("name", sorted(all_commands()))
def test_help_has_no_raw_placeholders(name):
    result = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = result.output
    assert not re.search(r"<\w[\w\[\] |]*>", text), text  # typer's "<bool>", "<list[Path]>"
    assert not re.search(r"\{\w+\}", text), text  # e.g. "{files}..." instead of "FILES..."
    assert "Usage:" in text
