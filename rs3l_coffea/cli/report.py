"""``rs3l report``: run (or resume) the RS3L comparison study and write its report.

The work is done by :func:`rs3l_coffea.study.run_study`; see ``studies/*.yaml``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from rs3l_coffea.cli._common import check_output_path, user_errors


def report(
    config: Path = typer.Option(..., "--config", "-c", help="Study YAML (e.g. studies/default.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory; completed stages in it are skipped."),
    export_model: Path | None = typer.Option(
        None, "--export-model",
        help="After the study, save one of its fine-tuned models (see --export-kind) with a model card at this stem (e.g. rs3l_coffea/data/models/default, the shipped default model).",
    ),
    export_kind: str = typer.Option(
        "auto", "--export-kind",
        help="Which fine-tuned model --export-model saves: auto (the best one that is as stable across showers as the steadiest, see docs/report/README.md), fixed, floating or supervised.",
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1,
        help="torch CPU threads (default: the study file's). Not part of any stage's fingerprint: a study "
             "resumes with another thread count. Two processes that each use all cores slow each other down.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-stage log lines."),
) -> None:
    """Generate, pretrain, fine-tune, evaluate: the whole RS3L study, cached stage by stage."""
    with user_errors():
        check_output_path(out, option="--out", directory=True)
        if export_model is not None:
            check_output_path(export_model, option="--export-model")
        from rs3l_coffea.study import export_default_model, run_study

        command = "rs3l " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["report"] else None
        result = run_study(config, out, log=(lambda _m: None) if quiet else None, command=command, threads=threads)
        typer.echo(str(result.report))
        if export_model is not None:
            paths = export_default_model(out, export_model, model=export_kind)
            typer.echo(" ".join(str(p) for p in paths))


def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="Model stem or .safetensors file."),
    test: Path = typer.Option(..., "--test", "-t", help="Test ntuple directory (a study's data/test-TASK)."),
    threads: int | None = typer.Option(None, "--threads", help="torch CPU threads."),
) -> None:
    """Re-score a classifier on a study's held-out test ntuple: AUC and 1/ε_B at ε_S 0.3/0.5/0.7 (JSON)."""
    import json

    with user_errors():
        from rs3l_coffea.study import evaluate_model

        typer.echo(json.dumps(evaluate_model(model, test, threads=threads), indent=1))


def diagnose(
    config: Path = typer.Option(..., "--config", "-c", help="Diagnosis YAML (e.g. studies/at_scale_diagnosis.yaml)."),
    study: Path = typer.Option(..., "--study", "-s", help="A study output directory that has finished its evaluation stage."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory; finished variants in it are skipped."),
    only: str | None = typer.Option(None, "--only", help="Comma-separated variant names to run (default: all)."),
    threads: int | None = typer.Option(
        None, "--threads", min=1,
        help="torch CPU threads (default: the diagnosis file's, else the study's). Two processes that each use "
             "every core slow each other down far more than they share: use 1 beside another run.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-stage log lines."),
) -> None:
    """Re-pretrain with one knob changed per variant, on a finished study's data; compare rejection and stability."""
    with user_errors():
        check_output_path(out, option="--out", directory=True)
        from rs3l_coffea.study.diagnosis import run_diagnosis

        names = None if only is None else [n.strip() for n in only.split(",") if n.strip()]
        report_path = run_diagnosis(config, study, out, log=(lambda _m: None) if quiet else None, only=names,
                                    threads=threads)
        typer.echo(str(report_path))


def register(app: typer.Typer) -> None:
    """Add ``rs3l report``, ``rs3l evaluate`` and ``rs3l diagnose`` to the root CLI."""
    app.command("report")(report)
    app.command("evaluate")(evaluate)
    app.command("diagnose")(diagnose)
