"""Where every stage of a study keeps its outputs, and the typed keys that name trained models.

Every on-disk location of the study is computed here and nowhere else: a trained classifier is
found from its :class:`RunKey`, never from a display title or a path assembled elsewhere.

``<out>/`` layout::

    stages/<stage>.json             completion markers (see rs3l_coffea.study.stages)
    gen/<process>/                  generated ROOT chunks (deleted once ntupled unless keep_root)
    ntuple/<process>/chunk_<i>/     paired ntuple shards of each generated chunk
    data/pretrain, data/<task>-<size>, data/test-<task>   the split ntuples
    train/pretrain-<kind>/          pretrainings; train/<task>/<model>-<size>-s<seed>/ classifiers
    eval/                           scores, embeddings and N2 of the test jets (.npz)
    plots/, report.md, results.json
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from rs3l_coffea.study.config import MODEL_TITLES, PRETRAIN_KINDS, TASK_TITLES


class RunKey(NamedTuple):
    """One trained classifier: task, model kind, labelled-set size and training seed."""

    task: str
    model: str
    labelled_size: int
    seed: int

    @property
    def stage(self) -> str:
        return f"train:{self.task}:{self.model}:{self.labelled_size}:s{self.seed}"

    @property
    def row(self) -> RowKey:
        return RowKey(self.task, self.model, self.labelled_size)


class RowKey(NamedTuple):
    """One line of a rejection table: the runs of every seed of one (task, model, size)."""

    task: str
    model: str
    labelled_size: int

    @property
    def title(self) -> str:
        return f"{TASK_TITLES[self.task]}: {MODEL_TITLES[self.model]}"


def slug(name: str) -> str:
    """A file- and stage-name-safe version of a display name."""
    return re.sub(r"[^a-z0-9+]+", "-", name.lower()).strip("-")


@dataclass(frozen=True)
class EmbeddingSource:
    """A network whose embeddings of the test jets the report compares.

    ``run`` is set for trained classifiers, ``pretrain`` for pretrained backbones; neither for
    the randomly initialised baseline (``path`` None).
    """

    name: str
    path: str | None
    run: RunKey | None = None
    pretrain: str | None = None

    @property
    def slug(self) -> str:
        return slug(self.name)


def classifier_title(key: RunKey) -> str:
    """The display name of a classifier's embedding (``RS3L fixed (N=500, seed 0)``)."""
    return f"{MODEL_TITLES[key.model]} (N={key.labelled_size}, seed {key.seed})"


def pretrain_title(kind: str) -> str:
    return f"RS3L ({PRETRAIN_KINDS[kind]})"


@dataclass(frozen=True)
class StudyLayout:
    """Paths of one study output directory."""

    out: Path

    @property
    def stages(self) -> Path:
        return self.out / "stages"

    @property
    def gen(self) -> Path:
        return self.out / "gen"

    @property
    def ntuple(self) -> Path:
        return self.out / "ntuple"

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def train(self) -> Path:
        return self.out / "train"

    @property
    def eval(self) -> Path:
        return self.out / "eval"

    @property
    def plots(self) -> Path:
        return self.out / "plots"

    @property
    def report(self) -> Path:
        return self.out / "report.md"

    @property
    def results(self) -> Path:
        return self.out / "results.json"

    def chunk_ntuple(self, process: str, chunk: int) -> Path:
        return self.ntuple / process / f"chunk_{chunk:05d}"

    def pretrain_data(self) -> Path:
        return self.data / "pretrain"

    def labelled_data(self, task: str, size: int) -> Path:
        return self.data / f"{task}-{size}"

    def test_data(self, task: str) -> Path:
        return self.data / f"test-{task}"

    def pretrain_dir(self, kind: str) -> Path:
        return self.train / f"pretrain-{kind.replace('+', '_')}"

    def model_dir(self, key: RunKey) -> Path:
        return self.train / key.task / f"{key.model}-{key.labelled_size}-s{key.seed}"

    def model_file(self, key: RunKey) -> Path:
        """The trained weights of ``key`` (the trainer writes ``<out_dir>/model.safetensors``)."""
        return self.model_dir(key) / "model.safetensors"

    def score_file(self, key: RunKey) -> Path:
        return self.eval / f"score-{key.task}-{key.model}-{key.labelled_size}-s{key.seed}.npz"

    def n2_file(self, task: str, labelled: bool = False) -> Path:
        return self.eval / (f"n2-{task}-labelled.npz" if labelled else f"n2-{task}.npz")

    def embed_file(self, source: EmbeddingSource) -> Path:
        return self.eval / f"embed-{source.slug}.npz"
