"""Run an RS3L processor over a fileset with ``coffea.processor.Runner`` (``rs3l process``).

* Filesets are coffea's JSON layout: ``{dataset: [files]}`` or ``{dataset: {"files": [...] or
  {path: tree}, "metadata": {...}}}``.
* Every file is checked on the client first (:func:`check_file`: readable, has the tree, has
  particle candidates). A bad file either stops the run with an :class:`InputFileError` naming
  it, or (``skip_bad_files=True``) is skipped and listed with its reason under ``bad_files``.
* Before the run, the processor is applied in this process to the first
  :data:`PREFLIGHT_ENTRIES` entries of the first file of each source (:func:`preflight`): a
  wrong source, jet collection, model or processor prerequisite (e.g. ``VariantProcessor`` on
  files without variants) fails at once with one line, instead of in every worker.
* Chunks run under :class:`ChunkGuard`. Errors that will always recur (our
  :class:`~rs3l_coffea.errors.RS3LError` types: bad values, missing branches) are never retried
  by coffea; with ``skip_bad_files=True`` *any* failing chunk (a corrupt basket, a NaN jet) is
  recorded under ``bad_chunks`` (dataset, file, entry range, reason) and the run goes on, so the
  good chunks are written. Without it, the run fails naming the first failed chunk (once
  the other chunks have run: coffea offers no clean way to stop its executors early).
* Files are grouped by source (Delphes / PFNano / NanoAOD) because a ``Runner`` has one
  NanoEvents schema; the groups' outputs are accumulated. Only the branches RS3L reads are put
  into the events (:class:`BranchFilter`); a processor needing more should be run with its own
  ``Runner``.
* Filesets are validated by :class:`DatasetSpec` (pydantic; errors are :class:`ConfigError`
  naming dataset, key and value); a directory among the files means its ``.root`` files.
* A processor with a ``skim_dir`` writes into a fresh folder beside it, which replaces the
  folder when the run succeeds: the folder holds exactly this run's skims.
* Histogram categories come back in a fixed order (datasets by name, variants in generator
  code order; :func:`~rs3l_coffea.coffea_processing.analysis.sorted_categories`), whatever the
  executor.
* Executors: ``iterative``, ``futures`` (process pool of ``workers``) and ``dask`` (connects to
  ``scheduler`` if given, else starts ``distributed.LocalCluster(n_workers=workers,
  threads_per_worker=1)`` through :func:`local_cluster`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rs3l_coffea.errors import ConfigError, InputFileError, RS3LError

EXECUTORS = ("iterative", "futures", "dask")
# Entries of the first file per source on which the processor is tried before the run.
PREFLIGHT_ENTRIES = 20


class DatasetSpec(BaseModel):
    """One dataset of a coffea fileset (the JSON layout coffea's ``processor.Runner`` and
    ``dataset_tools`` read): ``files`` as a list of paths, or ``{path: tree}`` where the tree
    is a name, ``null`` (found by us) or coffea's ``{"object_path": tree, ...}`` from
    ``preprocess``; optional ``metadata`` (a mapping; passed to the processor). Other keys
    written by coffea's ``preprocess`` (``form``, ``steps``, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    files: list[str] | dict[str, str | dict[str, Any] | None]
    metadata: dict[str, Any] | None = None

    @field_validator("files", mode="before")
    @classmethod
    def _one_path(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, (list, tuple, dict)):
            raise ValueError("must be a list of paths or a {path: tree} mapping")
        return value

    def trees(self) -> dict[str, str | None]:
        """``{path: tree or None}``; :class:`ConfigError` for a non-string ``object_path``."""
        if isinstance(self.files, list):
            return dict.fromkeys(self.files)
        out: dict[str, str | None] = {}
        for path, tree in self.files.items():
            if isinstance(tree, dict):
                tree = tree.get("object_path", tree.get("treename"))
                if tree is not None and not isinstance(tree, str):
                    raise ConfigError(f"files.{path}: object_path must be a tree name, got {tree!r}")
            out[path] = tree
        return out


def files_in_directory(
    directory: str | os.PathLike[str], suffixes: tuple[str, ...] = (".root",)
) -> list[str]:
    """The files of ``directory`` (not recursive) ending in one of ``suffixes``, sorted by name;
    :class:`InputFileError` when there are none (a directory given as an input means its files)."""
    folder = Path(directory)
    found = sorted(str(p) for p in folder.iterdir() if p.suffix in suffixes and p.is_file())
    if not found:
        raise InputFileError(
            f"input {folder} is a directory without {' or '.join(suffixes)} files"
        )
    return found


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(step) for step in item["loc"]) or "entry"
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message} (got {item.get('input')!r})")
    return "; ".join(parts)


def read_fileset(fileset: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Normalise a fileset (path to JSON or mapping) to ``{dataset: {"files": {path: tree|None},
    "metadata": {...}}}``. Relative file paths in a JSON file are taken relative to it.

    Each dataset is validated by :class:`DatasetSpec` (``{dataset: [files]}`` or
    ``{dataset: {"files": ..., "metadata": {...}}}``); a bad entry raises :class:`ConfigError`
    naming the fileset, the dataset, the key and the value.
    """
    base: Path | None = None
    where = "fileset"
    if not isinstance(fileset, Mapping):
        path = Path(fileset)
        where = f"fileset {path}"
        try:
            fileset = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except IsADirectoryError as error:
            raise ConfigError(f"fileset {path} is a directory, not a JSON file") from error
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"fileset {path} is not a readable JSON file: {error}") from error
        base = path.resolve().parent
    if not isinstance(fileset, Mapping) or not fileset:
        raise ConfigError(
            f"{where}: a fileset is a non-empty mapping {{dataset: [files] or {{'files': ...}}}}"
        )
    out: dict[str, dict[str, Any]] = {}
    for dataset, entry in fileset.items():
        if not isinstance(entry, Mapping):
            if not isinstance(entry, (str, list, tuple)):
                raise ConfigError(
                    f"{where}: dataset {dataset!r}: files must be a list or {{path: tree}} "
                    f"mapping, got {entry!r}"
                )
            entry = {"files": list(entry) if isinstance(entry, tuple) else entry}
        try:
            spec = DatasetSpec.model_validate(entry)
            trees = spec.trees()
        except ValidationError as error:
            raise ConfigError(f"{where}: dataset {dataset!r}: {_validation_message(error)}") from error
        except ConfigError as error:
            raise ConfigError(f"{where}: dataset {dataset!r}: {error}") from error
        resolved: dict[str, str | None] = {}
        for name, tree in trees.items():
            file_path = Path(str(name))
            if base is not None and not file_path.is_absolute() and "://" not in str(name):
                file_path = base / file_path
            if "://" not in str(name) and file_path.is_dir():  # a folder: its ROOT files
                resolved.update(dict.fromkeys(files_in_directory(file_path), tree))
            else:
                resolved[str(file_path)] = tree
        out[str(dataset)] = {"files": resolved, "metadata": dict(spec.metadata or {})}
    return out


def check_file(path: str, tree: str | None = None, source: str = "auto") -> tuple[str, str, int]:
    """``(source, tree, n_entries)`` of a file, or an :class:`InputFileError` naming it.

    Without ``tree``, a requested ``source`` picks its own tree (:func:`rs3l_coffea.io.select_tree`:
    a file holding both a Delphes and an Events tree gives ``pfnano`` the Events tree).
    """
    from rs3l_coffea.io import open_tree, source_from_branches

    with open_tree(path, tree, source=source) as opened:
        try:
            # Top-level names are enough to tell the source (and avoid typing every branch).
            branches = {branch.name for branch in opened.tree.branches}
            n_entries = int(opened.tree.num_entries)
        except Exception as error:  # uproot raises many unrelated types on corrupt files
            raise InputFileError(f"cannot read {path} as a ROOT file: {error}") from error
    tree = opened.name
    source = source_from_branches(branches, str(path), tree)
    return source, tree, n_entries


def _schema(source: str) -> Any:
    from rs3l_coffea.io.files import schema_class

    return schema_class(source)


class BranchFilter:
    """Picklable ``filter_name`` for ``Runner``: only the branches RS3L reads
    (:func:`rs3l_coffea.io.needed_branches`). Building the NanoEvents form of the hundreds of
    unused Delphes/PFNano branches otherwise dominates the time per chunk."""

    def __init__(self, source: str, jets: str | None = None) -> None:
        self.source, self.jets = source, jets
        self._predicate: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "jets": self.jets, "_predicate": None}

    def __call__(self, name: str) -> bool:
        if self._predicate is None:
            from rs3l_coffea.io import needed_branches

            self._predicate = needed_branches(self.source, self.jets)
        return bool(self._predicate(name))


def local_cluster(n_workers: int = 2, threads_per_worker: int = 1, **kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` of worker *processes* suited to RS3L inference.

    dask's nanny exports ``MALLOC_TRIM_THRESHOLD_=65536`` to its workers by default. Setting
    any glibc trim threshold switches off glibc's dynamic mmap threshold, so every large
    temporary tensor is then mmap'ed and page-faulted afresh: measured here, the DGCNN ran
    3-4x slower in such a worker than in a plain process. We leave the variable unset.
    """
    import dask
    from distributed import LocalCluster

    kwargs.setdefault("dashboard_address", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(
            n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True, **kwargs
        )


@contextlib.contextmanager
def make_executor(
    executor: str, *, workers: int = 2, scheduler: str | None = None, status: bool = False
) -> Iterator[Any]:
    """The coffea executor for a name; owns (and closes) a LocalCluster it starts."""
    from coffea import processor

    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} is not one of {list(EXECUTORS)}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if scheduler is not None and executor != "dask":
        raise ConfigError("--scheduler needs --executor dask")
    if executor == "iterative":
        yield processor.IterativeExecutor(status=status)
    elif executor == "futures":
        yield processor.FuturesExecutor(workers=workers, status=status)
    else:
        from distributed import Client

        with contextlib.ExitStack() as stack:
            if scheduler is None:
                cluster = stack.enter_context(local_cluster(workers))
                client = stack.enter_context(Client(cluster))
            else:
                client = stack.enter_context(Client(scheduler))
            yield processor.DaskExecutor(client=client, status=status)


def preflight(
    processor_instance: Any,
    path: str,
    tree: str,
    source: str,
    *,
    dataset: str,
    metadata: Mapping[str, Any] | None = None,
    entries: int = PREFLIGHT_ENTRIES,
) -> None:
    """Apply ``processor_instance`` to the first ``entries`` entries of one file, here and now.

    This proves, before any worker starts, that the processor's options (source, jet
    collection, model, variant labels) fit the data. Skims are not written (a processor's
    ``skim_dir`` is switched off on a shallow copy). Our errors pass through unchanged (they
    already name the file and value); any other exception is wrapped in a one-line
    :class:`ConfigError` naming the processor and the file.
    """
    from coffea.nanoevents import NanoEventsFactory

    from rs3l_coffea.io import open_tree

    probe = copy.copy(processor_instance)
    if getattr(probe, "skim_dir", None) is not None:
        probe.skim_dir = None
    with open_tree(path, tree) as opened:
        handle = opened.handle
        stop = min(int(opened.tree.num_entries), entries)
        if stop == 0:
            return
        info = {"dataset": dataset, "filename": path, "treename": tree,
                "entrystart": 0, "entrystop": stop, **dict(metadata or {})}
        with warnings.catch_warnings():
            # coffea's schema notes on collections we never read (PFNano files lack some
            # cross-references); they would bury the one line this check exists to print.
            warnings.filterwarnings("ignore", "Missing cross-reference", RuntimeWarning)
            try:
                events = NanoEventsFactory.from_root(
                    file=handle, treepath=tree, schemaclass=_schema(source), metadata=info,
                    mode="virtual", entry_stop=stop,
                    iteritems_options={"filter_name": BranchFilter(source, getattr(processor_instance, "jets", None))},
                ).events()
            except Exception as error:
                raise InputFileError(
                    f"cannot read {path} as {source} events (tree {tree!r}): {type(error).__name__}: {error}"
                ) from error
            try:
                probe.process(events)
            except RS3LError:
                raise
            except Exception as error:
                raise ConfigError(
                    f"{type(processor_instance).__name__} fails on the first {stop} entries of {path} "
                    f"(tried before the run): {type(error).__name__}: {error}"
                ) from error


class ChunkGuard:
    """A coffea processor around another one that turns chunk failures into records.

    ``process`` returns the wrapped processor's output, or, when it raises, ``{"bad_chunks":
    [{dataset, file, entrystart, entrystop, reason}]}``: for our own error types always
    (they are deterministic, so coffea's retries would only repeat them), for any exception
    when ``skip_bad_chunks``. Other exceptions propagate (coffea retries them: they may be
    transient, e.g. a network read). The wrapped processor must return a mapping.
    """

    def __init__(self, processor_instance: Any, *, skip_bad_chunks: bool) -> None:
        self.processor_instance = processor_instance
        self.skip_bad_chunks = skip_bad_chunks

    def process(self, events: Any) -> Any:
        try:
            return self.processor_instance.process(events)
        except Exception as error:
            if not (self.skip_bad_chunks or isinstance(error, RS3LError)):
                raise
            metadata = dict(getattr(events, "metadata", {}) or {})
            return {"bad_chunks": [{
                "dataset": str(metadata.get("dataset", "")),
                "file": str(metadata.get("filename", "")),
                "entrystart": int(metadata.get("entrystart", 0)),
                "entrystop": int(metadata.get("entrystop", 0)),
                "reason": f"{type(error).__name__}: {error}",
            }]}

    # coffea's Runner takes a ProcessorABC or a one-argument callable (with an optional
    # ``postprocess``); a callable keeps coffea out of this module's import.
    __call__ = process

    def postprocess(self, accumulator: Any) -> Any:
        bad = accumulator.pop("bad_chunks", None) if isinstance(accumulator, dict) else None
        post = getattr(self.processor_instance, "postprocess", None)
        result = post(accumulator) if callable(post) else None
        result = accumulator if result is None else result
        if bad is not None:
            result["bad_chunks"] = bad
        return result


@contextlib.contextmanager
def coffea_progress(status: bool) -> Iterator[None]:
    """coffea's progress bars on standard error when ``status``, nowhere otherwise.

    coffea draws its bars on ``coffea.util.coffea_console`` (standard output), and its
    iterative executor shows them even with ``status=False`` (the flag reaches the bar as an
    unused task field). Progress is not a result: keep standard output for results.
    """
    from coffea.util import coffea_console

    saved = coffea_console.quiet, coffea_console._file  # _file: None means "sys.stdout"
    coffea_console.quiet = not status
    coffea_console.file = sys.stderr
    try:
        yield
    finally:
        coffea_console.quiet, coffea_console._file = saved


def run_fileset(
    fileset: str | os.PathLike[str] | Mapping[str, Any],
    processor_instance: Any,
    *,
    executor: Any = "iterative",
    workers: int = 2,
    scheduler: str | None = None,
    chunksize: int = 100_000,
    maxchunks: int | None = None,
    skip_bad_files: bool = False,
    status: bool = False,
    preflight_entries: int = PREFLIGHT_ENTRIES,
) -> dict[str, Any]:
    """Run ``processor_instance`` over ``fileset``; returns its accumulator plus ``bad_files``.

    ``executor`` is a name from :data:`EXECUTORS` or a ready coffea executor instance (e.g. a
    ``DaskExecutor`` on your own client). ``bad_files`` lists ``{"dataset", "file", "reason"}``
    for every skipped file and ``bad_chunks`` ``{"dataset", "file", "entrystart", "entrystop",
    "reason"}`` for every chunk that failed during processing (both empty unless
    ``skip_bad_files``; without it the first failure raises). ``preflight_entries=0`` skips
    :func:`preflight`.
    """
    from coffea import processor

    if chunksize < 1:
        raise ConfigError(f"chunksize must be >= 1, got {chunksize}")
    datasets = read_fileset(fileset)
    groups: dict[str, dict[str, Any]] = {}
    bad_files: list[dict[str, str]] = []
    for dataset, entry in datasets.items():
        for path, tree in entry["files"].items():
            try:
                source, tree_name, _ = check_file(
                    path, tree, source=getattr(processor_instance, "source", None) or "auto"
                )
            except InputFileError as error:
                if not skip_bad_files:
                    raise
                bad_files.append({"dataset": dataset, "file": path, "reason": str(error)})
                continue
            if source not in groups and preflight_entries > 0:
                try:
                    preflight(
                        processor_instance, path, tree_name, source, dataset=dataset,
                        metadata=entry["metadata"], entries=preflight_entries,
                    )
                except InputFileError as error:  # about this file; other files may be fine
                    if not skip_bad_files:
                        raise
                    bad_files.append({"dataset": dataset, "file": path, "reason": str(error)})
                    continue
            group = groups.setdefault(source, {})
            spec = group.setdefault(dataset, {"files": {}, "metadata": entry["metadata"]})
            spec["files"][path] = tree_name

    outputs = []
    skim_dir = getattr(processor_instance, "skim_dir", None)
    skim_target = None if skim_dir is None else Path(skim_dir)
    staging: Path | None = None
    if skim_target is not None and groups:
        staging = _skim_staging(skim_target)
        processor_instance = copy.copy(processor_instance)  # the caller's object keeps its folder
        processor_instance.skim_dir = str(staging)
    guarded = ChunkGuard(processor_instance, skip_bad_chunks=skip_bad_files)
    try:
        outputs = _run_groups(
            groups, guarded, processor_instance, executor=executor, workers=workers,
            scheduler=scheduler, status=status, chunksize=chunksize, maxchunks=maxchunks,
        )
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    result: dict[str, Any] = dict(processor.accumulate(outputs)) if outputs else {}
    bad_chunks = sorted(
        result.pop("bad_chunks", []), key=lambda c: (c["dataset"], c["file"], c["entrystart"])
    )
    if bad_chunks and not skip_bad_files:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        first = bad_chunks[0]
        raise InputFileError(
            f"{first['file']} (dataset {first['dataset']!r}, entries {first['entrystart']}-"
            f"{first['entrystop']}): {first['reason']}"
            + (f" ({len(bad_chunks) - 1} more failed chunk(s))" if len(bad_chunks) > 1 else "")
        )
    if isinstance(result.get("hists"), Mapping):  # fixed category order whatever the executor
        from rs3l_coffea.coffea_processing.analysis import sorted_categories

        result["hists"] = {
            name: sorted_categories(h) if hasattr(h, "axes") else h
            for name, h in result["hists"].items()
        }
    if staging is not None and skim_target is not None:
        _publish_skims(staging, skim_target)
        result["skims"] = sorted(
            str(skim_target / Path(path).relative_to(staging)) for path in result.get("skims", [])
        )
    result["bad_files"] = bad_files
    result["bad_chunks"] = bad_chunks
    return result


SKIM_MARKER = ".rs3l-skims"


def _skim_staging(target: Path) -> Path:
    """A fresh folder beside ``target`` for this run's skims (same file system: the final
    rename is atomic). Refuses a ``target`` that holds files we did not write."""
    import tempfile

    if target.is_dir() and any(target.iterdir()) and not (target / SKIM_MARKER).is_file():
        raise ConfigError(
            f"skim folder {target} already holds files not written by rs3l process "
            f"(no {SKIM_MARKER} marker); it is replaced by every run, so give a new or empty folder"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    mask = os.umask(0)
    os.umask(mask)
    staging.chmod(0o777 & ~mask)  # mkdtemp makes 0700; colleagues must read skims
    (staging / SKIM_MARKER).write_text("written by rs3l process; replaced as a whole by each run\n")
    return staging


def _publish_skims(staging: Path, target: Path) -> None:
    """Put ``staging`` in ``target``'s place: the old folder is renamed away, the new one
    renamed in, then the old one removed. Readers see the old or the new set, never a mix
    (a crash between the two renames leaves the old set in ``.<name>.old-*`` beside it)."""
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{staging.name.rsplit('-', 1)[-1]}")
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _run_groups(
    groups: dict[str, dict[str, Any]],
    guarded: ChunkGuard,
    processor_instance: Any,
    *,
    executor: Any,
    workers: int,
    scheduler: str | None,
    status: bool,
    chunksize: int,
    maxchunks: int | None,
) -> list[Any]:
    """One coffea ``Runner`` per source group, all on one executor."""
    from coffea import processor

    outputs: list[Any] = []
    if groups:
        context = (
            make_executor(executor, workers=workers, scheduler=scheduler, status=status)
            if isinstance(executor, str)
            else contextlib.nullcontext(executor)
        )
        with context as coffea_executor, coffea_progress(status):
            for source, group_fileset in sorted(groups.items()):
                runner = processor.Runner(
                    executor=coffea_executor,
                    schema=_schema(source),
                    chunksize=chunksize,
                    maxchunks=maxchunks,
                )
                # Runner insists on a metadata dict per dataset only when non-empty.
                cleaned = {
                    name: {k: v for k, v in spec.items() if k != "metadata" or v}
                    for name, spec in group_fileset.items()
                }
                branches = BranchFilter(source, getattr(processor_instance, "jets", None))
                try:
                    output = runner(
                        cleaned,
                        processor_instance=guarded,
                        iteritems_options={"filter_name": branches},
                    )
                except Exception as error:
                    if _is_input_error(error):
                        raise InputFileError(str(error)) from error
                    raise
                outputs.append(output)
    return outputs


def _is_input_error(error: BaseException) -> bool:
    """Whether coffea's ``Failed processing file: ...`` wrapper hides one of our input errors.

    Iterative runs chain the original exception; across processes (futures, dask) only the
    wrapper's text, which holds the original's repr, survives.
    """
    if isinstance(error.__cause__, InputFileError):
        return True
    text = str(error)
    return text.startswith("Failed processing file") and any(
        f"{name}(" in text for name in ("InputFileError", "MissingConstituentsError")
    )


def save_output(output: Any, path: str | os.PathLike[str]) -> Path:
    """``coffea.util.save`` to a temporary file, renamed onto ``path`` (atomic)."""
    from coffea.util import save

    from rs3l_coffea.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        save(output, str(tmp))
    return path
