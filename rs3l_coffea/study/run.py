"""The study driver: run (or resume) every stage into an output directory, then the report.

Modelled on coffea's ``dataset_tools`` (preprocess, then apply): each stage below is a function of
the configuration and the layout, cached by :class:`~rs3l_coffea.study.stages.Stages`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.study.config import PathLike, StudyConfig, load_study_config
from rs3l_coffea.study.layout import (
    EmbeddingSource,
    RunKey,
    StudyLayout,
    classifier_title,
    pretrain_title,
)
from rs3l_coffea.study.samples import generate_to_ntuples
from rs3l_coffea.study.scoring import N2_DEFINITION, compute_n2, embed_test_set, score_test_set
from rs3l_coffea.study.splits import ntuple_shards, read_ntuple, split_ntuples
from rs3l_coffea.study.stages import Log, Stages, file_digest, fingerprint
from rs3l_coffea.study.trainings import (
    classifier_config,
    extra_pair_paths,
    pretrain_config,
    pretrain_kinds,
    pretrain_settings,
    train_model,
)


@dataclass
class StudyResult:
    report: Path
    results: Path
    stages_run: list[str]
    stages_skipped: list[str]


@dataclass
class StudyState:
    """What the stages produced so far (their cached results), handed on to the report."""

    config: StudyConfig
    layout: StudyLayout
    stages: Stages
    log: Log
    gen_summary: dict[str, Any] = field(default_factory=dict)
    split_depends: dict[str, Any] = field(default_factory=dict)
    split_summary: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, dict[str, Any]] = field(default_factory=dict)
    pretrain_settings: dict[str, Any] = field(default_factory=dict)
    trained: dict[RunKey, str] = field(default_factory=dict)
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    embeddings: list[EmbeddingSource] = field(default_factory=list)
    embed_task: str = "hbb"


def _generation_depends(config: StudyConfig) -> dict[str, Any]:
    # keep_root decides only whether ROOT files stay on disk; the ntuples are the same.
    return config.generation.model_dump(exclude={"keep_root"})


def generate_stage(state: StudyState) -> None:
    """Generate every process chunk by chunk, each chunk ntupled at once (``study.samples``)."""
    from rs3l_coffea.generation import GenerationConfig

    config, layout = state.config, state.layout
    gen = config.generation
    if _reuse_former_layout(state):
        return
    for process, n_events in gen.events.items():
        variants = tuple(gen.variants if process in ("zh_bb", "zj") else gen.ood_variants)
        gen_config = GenerationConfig(
            process=process, n_events=n_events, out_dir=layout.gen / process, variants=variants,
            seed=gen.seed, chunk_size=gen.chunk_size, eta_max=gen.eta_max,
        )

        def _generate(gen_config: GenerationConfig = gen_config) -> dict[str, Any]:
            return generate_to_ntuples(gen_config, layout, selection=config.split.selection,
                                       shard_size=config.split.shard_size, workers=gen.workers,
                                       keep_root=gen.keep_root, log=state.log)

        # The stage writes ntuple/<process>/chunk_<i>/ (layout "chunk-ntuples"); an output
        # directory of the former layout (all ROOT first, one ntuple stage) is refused by name.
        depends = {"gen": _generation_depends(config), "p": process, "layout": "chunk-ntuples",
                   "sel": config.split.selection, "shard_size": config.split.shard_size}
        state.gen_summary[process] = state.stages.run(f"generate:{process}", depends, _generate)

    def _ntuple() -> dict[str, Any]:
        return {"shards": len(ntuple_shards(layout.ntuple))}

    state.stages.run("ntuple", {"gen": _generation_depends(config), "sel": config.split.selection,
                                "layout": "chunk-ntuples"}, _ntuple)


def _reuse_former_layout(state: StudyState) -> bool:
    """Take the generation of an output directory of the former layout as it is.

    Before chunk-wise ntupling, ``generate:<process>`` wrote every ROOT file and one ``ntuple``
    stage built ``ntuple/shard_*.root`` from them; those ntuples are the same rows, so a finished
    directory of that layout (e.g. the committed report's) keeps every later stage.
    """
    config = state.config
    legacy = {"gen": _generation_depends(config), "sel": config.split.selection}
    marker = state.stages.marker("ntuple")
    if not marker.is_file() or json.loads(marker.read_text())["fingerprint"] != fingerprint(legacy):
        return False

    def missing(name: str) -> Callable[[], Any]:
        def refuse() -> Any:
            raise ConfigError(f"{state.layout.out} has the former ntuple layout but no finished stage {name!r}; "
                              "use a fresh --out directory")
        return refuse

    for process in config.generation.events:
        name = f"generate:{process}"
        state.gen_summary[process] = state.stages.run(name, {"gen": legacy["gen"], "p": process}, missing(name))
    state.stages.run("ntuple", legacy, missing("ntuple"))
    return True


def split_depends(config: StudyConfig) -> dict[str, Any]:
    """What the split depends on: the fingerprint behind every later stage of the study."""
    return {"gen": _generation_depends(config), "split": config.split.model_dump(), "tasks": config.classifier.tasks}


def split_stage(state: StudyState) -> None:
    config = state.config
    state.split_depends = split_depends(config)
    state.split_summary = state.stages.run("split", state.split_depends, lambda: split_ntuples(config, state.layout))


def pretrain_stage(state: StudyState) -> None:
    config = state.config
    # Depends on the study settings only (not on the trainer's derived dict, whose defaults
    # may grow with new code): a new trainer option must not invalidate finished stages.
    state.pretrain_settings = pretrain_settings(config)
    for kind in pretrain_kinds(config):
        tc = pretrain_config(config, kind, state.layout)
        depends = {"split": state.split_depends, "model": config.model, "pretrain": state.pretrain_settings,
                   "kind": kind}
        state.pretrained[kind] = state.stages.run(f"pretrain:{kind}", depends,
                                                  functools.partial(train_model, tc, state.log))


def run_keys(config: StudyConfig) -> list[RunKey]:
    """Every classifier training of the study, in the order they run."""
    cls = config.classifier
    return [RunKey(task, model, size, seed)
            for task in cls.tasks for size in config.split.labelled_sizes
            for seed in cls.seeds for model in cls.models]


def classifier_stage(state: StudyState) -> None:
    config = state.config
    cls = config.classifier
    backbone = Path(state.pretrained["resim"]["model"])
    settings = cls.model_dump(exclude={"seeds", "tasks", "models", "fixed_lr"})
    for key in run_keys(config):
        tc = classifier_config(config, key, state.layout, backbone if key.model != "supervised" else None)
        run: list[Any] = [key.task, key.model, key.labelled_size, key.seed]
        if key.model == "fixed" and cls.fixed_lr is not None:
            run.append({"fixed_lr": cls.fixed_lr})
        depends = {"split": state.split_depends, "model": config.model, "classifier": settings, "run": run,
                   "backbone": state.pretrain_settings if key.model != "supervised" else None}
        record = state.stages.run(key.stage, depends, functools.partial(train_model, tc, state.log))
        state.trained[key] = record["model"]


def embedding_sources(state: StudyState) -> list[EmbeddingSource]:
    """Pretrained backbones, the classifiers at the largest size and first seed, a random init."""
    config = state.config
    largest, seed0 = max(config.split.labelled_sizes), config.classifier.seeds[0]
    sources = [EmbeddingSource(pretrain_title(kind), state.pretrained[kind]["model"], pretrain=kind)
               for kind in pretrain_kinds(config)]
    for model in config.classifier.models:
        key = RunKey(state.embed_task, model, largest, seed0)
        if key in state.trained:
            sources.append(EmbeddingSource(classifier_title(key), state.trained[key], run=key))
    sources.append(EmbeddingSource("random init", None))
    return sources


def evaluation_stage(state: StudyState) -> None:
    """N2, classifier scores and embeddings of the test sets."""
    config, layout, stages = state.config, state.layout, state.stages
    layout.eval.mkdir(parents=True, exist_ok=True)
    state.tests = {task: read_ntuple(layout.test_data(task)) for task in config.classifier.tasks}
    # derived: a directory made with another N2 definition recomputes this stage, nothing else
    stages.run("n2", {**state.split_depends, "n2_definition": N2_DEFINITION},
               lambda: compute_n2(config, layout, state.tests), derived=True)
    for key, path in state.trained.items():
        stage = f"score:{key.task}:{key.model}:{key.labelled_size}:s{key.seed}"
        stages.run(stage, {"model": path, "weights": file_digest(path), "split": state.split_depends},
                   functools.partial(score_test_set, config, layout, state.tests, key, path), derived=True)
    # Embeddings of the backbones (nominal + partner jets of the in-domain test set, W jets).
    state.embed_task = "hbb" if "hbb" in state.tests else config.classifier.tasks[0]
    state.embeddings = embedding_sources(state)
    for source in state.embeddings:
        depends = {"name": source.name, "model": source.path, "split": state.split_depends,
                   "weights": None if source.path is None else file_digest(source.path), "model_cfg": config.model}
        stages.run(f"embed:{source.slug}", depends,
                   functools.partial(embed_test_set, config, layout, state.tests, state.embed_task, source),
                   derived=True)


def _code_digest() -> str:
    """One digest of the study package's code: the report is redone when any of it changes."""
    import hashlib

    digest = hashlib.sha256()
    for module in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(file_digest(module).encode())
    return digest.hexdigest()


def run_study(
    config: StudyConfig | PathLike,
    out_dir: PathLike,
    *,
    log: Log | None = None,
    command: str | None = None,
    threads: int | None = None,
) -> StudyResult:
    """Run (or resume) the whole study into ``out_dir`` and write ``out_dir/report.md``.

    ``threads`` overrides the configuration's torch threads; it is part of no stage's fingerprint,
    so a study resumed with another thread count keeps its finished stages."""
    from rs3l_coffea.study.report import build_report

    config_path = None
    if not isinstance(config, StudyConfig):
        config_path = Path(config)
        config = load_study_config(config_path)
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        config = config.model_copy(update={"threads": threads})
    log = log or (lambda message: print(message, flush=True))
    layout = StudyLayout(Path(out_dir))
    try:
        layout.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputFileError(f"cannot create the study output directory {layout.out}: {error}") from error
    import torch

    torch.set_num_threads(config.threads)
    extra_pair_paths(config)  # before hours of generation, not at the pretraining stage
    state = StudyState(config, layout, Stages(layout.stages, log), log)
    for stage in (generate_stage, split_stage, pretrain_stage, classifier_stage, evaluation_stage):
        stage(state)
    # Redone whenever any stage ran or changed, or the study code changed; else kept as it is.
    report_depends = {
        "stages": {name: state.stages.fingerprint_of(name) for name in state.stages.wall},
        "outputs": [file_digest(p) for p in sorted(layout.eval.glob("*.npz"))],
        "code": _code_digest(),
        "command": command,
    }
    command = command or _default_command(config_path, layout.out)

    def _report() -> dict[str, str]:
        report, results = build_report(state, config_path=config_path, command=command)
        return {"report": str(report), "results": str(results)}

    paths = state.stages.run("report", report_depends, _report, derived=True)
    return StudyResult(report=Path(paths["report"]), results=Path(paths["results"]),
                       stages_run=state.stages.ran, stages_skipped=state.stages.skipped)


def _default_command(config_path: Path | None, out: Path) -> str:
    if config_path is None:
        return f"run_study(<StudyConfig>, {str(out)!r})"
    return f"rs3l report --config {config_path} --out {out}"

