"""Diagnosis runs: what one pretraining or model knob changes, on a finished study's own data.

``rs3l diagnose --config studies/at_scale_diagnosis.yaml --study DIR --out DIR2``. Each variant of
the diagnosis configuration is the study's configuration with a few keys of its ``pretrain``,
``model`` or ``classifier`` sections overridden (temperature, batch size, epochs, which
re-simulated variants are positives, the trainer's loss, model size, ...). A variant pretrains
a new backbone on the study's pretraining pool, fine-tunes the configured heads on one labelled
set per task (one size, one seed; the backbone is shared by the tasks), and is evaluated exactly
as the study's report evaluates: rejection with Clopper-Pearson intervals and the AUC with its
Hanley-McNeil error (:func:`~rs3l_coffea.study.tables.rejection_tables`) for every task, and on
the first task's test set (the study's embedding task) W1 of the score and of the embedding
between nominal and every re-simulated variant with bootstrap uncertainty and statistical floor
(:func:`~rs3l_coffea.study.tables.wasserstein_tables`).

The study's split (``data/``) and N2 (``eval/n2-*.npz``) are linked, never copied or rebuilt;
the study's configuration file must be the one its split was made with (checked against the
split stage's fingerprint). Every variant is a stage directory of its own (``DIR2/<variant>/``)
with the study's stage markers, so a killed diagnosis resumes where it stopped.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rs3l_coffea.atomic import atomic_open
from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.study.config import (
    TASK_TITLES,
    PathLike,
    StudyConfig,
    config_error,
    load_study_config,
    read_yaml,
    study_config_from_dict,
)
from rs3l_coffea.study.layout import EmbeddingSource, RunKey, StudyLayout, classifier_title
from rs3l_coffea.study.stages import Log, Stages, file_digest, fingerprint, load_npz
from rs3l_coffea.typed_config import deep_merge

#: Sections a diagnosis variant may override; everything else (generation, split) is the study's.
OVERRIDABLE = ("pretrain", "model", "classifier")


FineTuning = Literal["fixed", "floating"]
Task = Literal["hbb", "wqq"]


class DiagnosisConfig(BaseModel):
    """``studies/*diagnosis*.yaml``: the study it diagnoses and the variants to run."""

    model_config = ConfigDict(extra="forbid")

    name: str
    #: The study's YAML, relative to the diagnosis file (the one the study directory was made with).
    study_config: Path
    #: Fine-tuning tasks; the first is where embeddings and W1 are measured (as in the study).
    tasks: list[Literal["hbb", "wqq"]] = Field(default_factory=lambda: list[Task](["hbb"]), min_length=1)
    #: Labelled size of the fine-tunings (one of the study's; None: its largest).
    labelled_size: int | None = None
    seed: int = 0
    models: list[FineTuning] = Field(default_factory=lambda: list[FineTuning](["fixed"]))
    threads: int | None = Field(default=None, ge=1)
    variants: dict[str, dict[str, Any]]
    notes: list[str] = Field(default_factory=list)

    @field_validator("tasks")
    @classmethod
    def _check_tasks(cls, tasks: list[Task]) -> list[Task]:
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks {tasks} repeat a task")
        return tasks

    @field_validator("variants")
    @classmethod
    def _check_variants(cls, variants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not variants:
            raise ValueError("at least one variant is needed")
        for name, overrides in variants.items():
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
                raise ValueError(f"variant name {name!r} must be letters, digits, '_', '.', '+' or '-'")
            if not isinstance(overrides, dict):
                raise ValueError(f"variant {name!r} must map sections to overrides, got {overrides!r}")
            unknown = sorted(set(overrides) - set(OVERRIDABLE))
            if unknown:
                raise ValueError(f"variant {name!r} overrides {unknown}: only {list(OVERRIDABLE)} may change "
                                 "(generation and split are the study's)")
        return variants


def load_diagnosis_config(path: PathLike) -> DiagnosisConfig:
    """Read and validate a diagnosis YAML (ConfigError naming the file and key)."""
    path = Path(path)
    raw = read_yaml(path, "diagnosis configuration")
    try:
        config = DiagnosisConfig.model_validate(raw)
    except ValidationError as error:
        raise config_error(error, str(path), "diagnosis config") from None
    if not config.study_config.is_absolute():
        config = config.model_copy(update={"study_config": path.parent / config.study_config})
    return config


def variant_config(study: StudyConfig, diagnosis: DiagnosisConfig, name: str) -> StudyConfig:
    """The study's configuration with the variant's overrides, narrowed to the diagnosis's tasks,
    one labelled size, one seed and its models (no symmetry comparison)."""
    raw = study.to_dict()
    deep_merge(raw, diagnosis.variants[name])
    size = diagnosis.labelled_size or max(study.split.labelled_sizes)
    raw["classifier"].update(tasks=list(diagnosis.tasks), seeds=[diagnosis.seed], models=list(diagnosis.models))
    raw["split"]["labelled_sizes"] = [size]
    raw["pretrain"]["symmetry_comparison"] = False
    if diagnosis.threads is not None:
        raw["threads"] = diagnosis.threads
    return study_config_from_dict(raw, source=f"diagnosis variant {name!r}")


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target`` (absolute); an existing link must already point there."""
    target = target.resolve()
    if link.is_symlink():
        if link.resolve() != target:
            raise ConfigError(f"{link} links to {link.resolve()}, not to {target}: use a fresh --out directory")
        return
    if link.exists():
        raise ConfigError(f"{link} exists and is not a link to {target}: use a fresh --out directory")
    link.symlink_to(target, target_is_directory=target.is_dir())


def _check_study(study: StudyConfig, study_layout: StudyLayout, tasks: list[Task], size: int) -> dict[str, Any]:
    """The study's split stage depends (the fingerprint every pretraining and training uses)."""
    from rs3l_coffea.study.run import split_depends

    marker = Stages(study_layout.stages, lambda _m: None).marker("split")
    if not marker.is_file():
        raise InputFileError(f"study {study_layout.out} has no finished split stage ({marker}): run it first")
    depends = split_depends(study)
    if json.loads(marker.read_text())["fingerprint"] != fingerprint(depends):
        raise ConfigError(f"the study configuration does not match the split of {study_layout.out} "
                          f"(stage marker {marker}): give the YAML that study was run with")
    unknown = [task for task in tasks if task not in study.classifier.tasks]
    if unknown:
        raise ConfigError(f"tasks {unknown} are not among the study's tasks {study.classifier.tasks}")
    if size not in study.split.labelled_sizes:
        raise ConfigError(f"labelled_size {size} is not one of the study's sizes {study.split.labelled_sizes}")
    for task in tasks:
        for path in (study_layout.n2_file(task), study_layout.n2_file(task, labelled=True)):
            if not path.is_file():
                raise InputFileError(f"study {study_layout.out} has no {path.name}: run it through its evaluation stage")
    return depends


def _row_numbers(row: dict[str, Any]) -> dict[str, Any]:
    """AUC with its Hanley-McNeil error and the rejections with their Clopper-Pearson intervals
    of one rejection-table row (``rejection_tables`` record, as in ``results.json``)."""
    return {"auc": row["auc"]["mean"], "auc_uncertainty": row["auc_uncertainty"],
            "rejection": {eff: value["mean"] for eff, value in row["rejection"].items()},
            "rejection_clopper_pearson_68": row["rejection_clopper_pearson_68"]}


def _task_summary(rejection: list[dict[str, Any]], w1: dict[RunKey, dict[str, Any]] | None) -> dict[str, Any]:
    """Per model: AUC, rejection with intervals, test sizes, and (embedding task only) W1."""
    models: dict[str, Any] = {}
    for row in rejection:
        model = row["key"]["model"]
        if model == "n2":
            continue
        models[model] = {
            **_row_numbers(row),
            "background_efficiency": row["background_efficiency"],
            "n_signal": row["n_signal"],
            "n_background": row["n_background"],
        }
        if w1 is not None:
            key = next(k for k in w1 if k.model == model)
            models[model]["w1_relative"] = {variant: {q: table[q].as_dict() for q in ("score", "mean z")}
                                            for variant, table in w1[key].items()}
    return models


def _n2_summary(rejection: list[dict[str, Any]]) -> dict[str, Any]:
    return _row_numbers(next(r for r in rejection if r["key"]["model"] == "n2"))


def run_diagnosis(config_path: PathLike, study_dir: PathLike, out_dir: PathLike, *, log: Log | None = None,
                  only: list[str] | None = None, threads: int | None = None) -> Path:
    """Run (or resume) every variant of a diagnosis; write ``out_dir/diagnosis.{json,md}``.

    ``threads`` overrides the configuration's torch threads (it is not part of any stage's
    fingerprint: a diagnosis resumed with another thread count keeps its finished stages)."""
    import torch

    from rs3l_coffea.study.run import StudyState, classifier_stage, pretrain_stage
    from rs3l_coffea.study.scoring import embed_test_set, score_test_set
    from rs3l_coffea.study.splits import read_ntuple
    from rs3l_coffea.study.tables import rejection_tables, wasserstein_tables
    from rs3l_coffea.study.trainings import extra_pair_paths
    from rs3l_coffea.training.config import VARIANT_NAMES

    log = log or (lambda message: print(message, flush=True))
    diagnosis = load_diagnosis_config(config_path)
    if threads is not None:
        diagnosis = diagnosis.model_copy(update={"threads": threads})
    names = list(diagnosis.variants) if only is None else only
    unknown = sorted(set(names) - set(diagnosis.variants))
    if unknown:
        raise ConfigError(f"--only names unknown variants {unknown}; the diagnosis has {list(diagnosis.variants)}")
    study = load_study_config(diagnosis.study_config)
    study_layout = StudyLayout(Path(study_dir))
    size = diagnosis.labelled_size or max(study.split.labelled_sizes)
    depends = _check_study(study, study_layout, diagnosis.tasks, size)
    configs = {name: variant_config(study, diagnosis, name) for name in names}  # every variant valid up front
    for config in configs.values():
        extra_pair_paths(config)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputFileError(f"cannot create the diagnosis output directory {out}: {error}") from error

    tasks: list[str] = list(diagnosis.tasks)
    embed_task = tasks[0]
    tests = {task: read_ntuple(study_layout.test_data(task)) for task in tasks}
    t = tests[embed_task]
    variant_names = {c: VARIANT_NAMES[c] for c in sorted({int(v) for v in np.unique(t["variant"]) if v >= 0})}
    n2 = load_npz(study_layout.n2_file(embed_task))
    summaries: dict[str, Any] = {}
    n2_rows: dict[str, Any] = {}
    for name, config in configs.items():
        log(f"== diagnosis variant {name}: {json.dumps(diagnosis.variants[name], sort_keys=True)}")
        torch.set_num_threads(config.threads)
        layout = StudyLayout(out / name)
        layout.eval.mkdir(parents=True, exist_ok=True)
        _link(study_layout.data, layout.data)
        for task in tasks:
            for labelled in (False, True):
                _link(study_layout.n2_file(task, labelled), layout.n2_file(task, labelled))
        state = StudyState(config, layout, Stages(layout.stages, log), log)
        state.split_depends = depends
        pretrain_stage(state)
        classifier_stage(state)
        embeds = {}
        for key, path in state.trained.items():
            weights = {"model": path, "weights": file_digest(path), "split": depends}
            state.stages.run(f"score:{key.task}:{key.model}:{key.labelled_size}:s{key.seed}", weights,
                             functools.partial(score_test_set, config, layout, tests, key, path), derived=True)
            if key.task != embed_task:
                continue
            source = EmbeddingSource(classifier_title(key), path, run=key)
            state.stages.run(f"embed:{source.slug}", weights,
                             functools.partial(embed_test_set, config, layout, {embed_task: t}, embed_task, source),
                             derived=True)
            embeds[source] = load_npz(layout.embed_file(source))
        _rows, rejection, _rocs = rejection_tables(config, layout, tests, state.trained)
        _table, _means, w1 = wasserstein_tables(config, t, n2, embeds, variant_names)
        pretrain_record = json.loads(state.stages.marker("pretrain:resim").read_text())
        summaries[name] = {
            "overrides": diagnosis.variants[name],
            "tasks": {task: _task_summary(rejection["rejection"][task], w1 if task == embed_task else None)
                      for task in tasks},
            "pretrain_wall_s": pretrain_record.get("wall_s"),
            "pretrain_steps": pretrain_record.get("result", {}).get("steps"),
        }
        n2_rows = {task: _n2_summary(rejection["rejection"][task]) for task in tasks}
    results = {
        "name": diagnosis.name,
        "study": str(study_layout.out),
        "study_config": str(diagnosis.study_config),
        "tasks": tasks,
        "embedding_task": embed_task,
        "labelled_size": size,
        "seed": diagnosis.seed,
        "n2": n2_rows,
        "study_rows": {task: _study_rows(study_layout, task, size, diagnosis.seed, with_w1=task == embed_task)
                       for task in tasks},
        "variants": summaries,
        "notes": diagnosis.notes,
    }
    with atomic_open(out / "diagnosis.json", "w") as handle:
        json.dump(results, handle, indent=1)
    report = out / "diagnosis.md"
    with atomic_open(report, "w") as handle:
        handle.write(diagnosis_markdown(results))
    log(f"diagnosis: {report}")
    return report


def _study_rows(layout: StudyLayout, task: str, size: int, seed: int, *, with_w1: bool) -> dict[str, Any]:
    """The study's own rows at this size (all seeds) and, for its embedding task (``with_w1``), its
    W1 of the seed's classifiers."""
    if not layout.results.is_file():
        return {}
    results = json.loads(layout.results.read_text())
    rows = {}
    for row in results["rejection"].get(task, []):
        model = row["key"]["model"]
        if row["labelled_size"] != size or model == "n2":
            continue
        title = classifier_title(RunKey(task, model, size, seed))
        w1 = results.get("wasserstein_relative", {}).get(title, {}) if with_w1 else {}
        rows[model] = {**_row_numbers(row),
                       "seeds": len(row["per_seed"]),
                       "n_signal": row["n_signal"], "n_background": row["n_background"],
                       "w1_relative": {v: {q: table[q] for q in ("score", "mean z") if q in table}
                                       for v, table in w1.items()}}
    return rows


def _w1_text(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    return f"{entry['w1']:.3g} ± {entry['uncertainty']:.2g} (floor {entry['floor']:.2g})"


def _rejection_text(rejection: float, interval: list[float]) -> str:
    return f"{rejection:.4g} [{interval[0]:.4g}, {interval[1]:.4g}]"


def _markdown_row(label: str, overrides: str, model: str, m: dict[str, Any], wall: str, with_w1: bool) -> str:
    text = (f"| {label} | {overrides} | {model} | {m['auc']:.4f} ± {m['auc_uncertainty']:.4f} | "
            f"{_rejection_text(m['rejection']['0.5'], m['rejection_clopper_pearson_68']['0.5'])} |")
    if with_w1:
        vincia = m.get("w1_relative", {}).get("vincia", {})
        text += f" {_w1_text(vincia.get('score'))} | {_w1_text(vincia.get('mean z'))} |"
    return text + f" {wall} |"


def diagnosis_markdown(results: dict[str, Any]) -> str:
    """One table per task (a row per variant and model, then the study's own rows and N2); W1
    columns for the embedding task."""
    size = results["labelled_size"]
    lines = [
        f"# Diagnosis: {results['name']}",
        "",
        f"Study `{results['study']}` (configuration `{results['study_config']}`); {size} labelled jets per task, "
        f"seed {results['seed']}. Rejection 1/ε_B at ε_S = 0.5 with its 68 % Clopper-Pearson interval; "
        "AUC ± Hanley-McNeil; W1 relative to the nominal standard deviation, nominal vs vincia, ± bootstrap "
        "(floor: W1 of two samples of one distribution), measured on the embedding task's test set.",
    ]
    for task in results["tasks"]:
        with_w1 = task == results["embedding_task"]
        w1_head = " score W1 (vincia) | embedding W1 (vincia) |" if with_w1 else ""
        lines += ["", f"## {TASK_TITLES[task]}", "",
                  f"| variant | overrides | model | AUC | 1/ε_B at ε_S=0.5 |{w1_head} pretraining wall (s) |",
                  "|---|---|---|---|---|" + ("---|---|" if with_w1 else "") + "---:|"]

        for name, summary in results["variants"].items():
            overrides = (f"`{json.dumps(summary['overrides'], sort_keys=True)}`" if summary["overrides"]
                         else "(study's own settings)")
            wall = summary["pretrain_wall_s"]
            for model, m in summary["tasks"][task].items():
                lines.append(_markdown_row(name, overrides, model, m, "-" if wall is None else f"{wall:.0f}", with_w1))
        for model, m in results["study_rows"][task].items():
            lines.append(_markdown_row(f"study (mean of {m['seeds']} seeds)", "-", model, m, "-", with_w1))
        n2 = results["n2"][task]
        lines.append(f"| N2 baseline | - | n2 | {n2['auc']:.4f} ± {n2['auc_uncertainty']:.4f} | "
                     f"{_rejection_text(n2['rejection']['0.5'], n2['rejection_clopper_pearson_68']['0.5'])} |"
                     + (" - | - |" if with_w1 else "") + " - |")
    if results["notes"]:
        lines += ["", *[f"* {note}" for note in results["notes"]]]
    lines += ["", "All W1 per variant (seed, fsr_up, fsr_down, vincia) and ε_S = 0.3 / 0.7 are in `diagnosis.json`.", ""]
    return "\n".join(lines)
