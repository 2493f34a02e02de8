"""Run an RS3L processor over a fileset with ``coffea.processor.Runner`` (``rs3l process``).

* Filesets are coffea's JSON layout: ``{dataset: [files]}`` or ``{dataset: {"files": [...] or
  {path: tree}, "metadata": {...}}}``.
* Every file is checked on the client first (:func:`check_file`: readable, has the tree, has
  particle candidates). A bad file either stops the run with an :class:`InputFileError` naming
  it, or (``skip_bad_files=True``) is skipped and listed with its reason under ``bad_files``.
* Files are grouped by source (Delphes / PFNano / NanoAOD) because a ``Runner`` has one
  NanoEvents schema; the groups' outputs are accumulated. Only the branches RS3L reads are put
  into the events (:class:`BranchFilter`); a processor needing more should be run with its own
  ``Runner``.
* Executors: ``iterative``, ``futures`` (process pool of ``workers``) and ``dask`` (connects to
  ``scheduler`` if given, else starts ``distributed.LocalCluster(n_workers=workers,
  threads_per_worker=1)`` through :func:`local_cluster`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rs3l_coffea.errors import ConfigError, InputFileError

EXECUTORS = ("iterative", "futures", "dask")


def read_fileset(fileset: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Normalise a fileset (path to JSON or mapping) to ``{dataset: {"files": {path: tree|None},
    "metadata": {...}}}``. Relative file paths in a JSON file are taken relative to it."""
    base: Path | None = None
    if not isinstance(fileset, Mapping):
        path = Path(fileset)
        try:
            fileset = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"fileset {path} is not a readable JSON file: {error}") from error
        base = path.resolve().parent
    if not isinstance(fileset, Mapping) or not fileset:
        raise ConfigError("a fileset is a non-empty mapping {dataset: [files] or {'files': ...}}")
    out: dict[str, dict[str, Any]] = {}
    for dataset, entry in fileset.items():
        metadata: dict[str, Any] = {}
        if isinstance(entry, Mapping):
            if "files" not in entry:
                raise ConfigError(f"dataset {dataset!r} has no 'files' key")
            metadata = dict(entry.get("metadata") or {})
            files = entry["files"]
        else:
            files = entry
        if isinstance(files, str):
            files = [files]
        if isinstance(files, Mapping):
            pairs = list(files.items())
        elif isinstance(files, (list, tuple)):
            pairs = [(f, None) for f in files]
        else:
            raise ConfigError(f"dataset {dataset!r}: files must be a list or {{path: tree}} mapping")
        resolved = {}
        for name, tree in pairs:
            file_path = Path(str(name))
            if base is not None and not file_path.is_absolute() and "://" not in str(name):
                file_path = base / file_path
            resolved[str(file_path)] = tree
        out[str(dataset)] = {"files": resolved, "metadata": metadata}
    return out


def check_file(path: str, tree: str | None = None, source: str = "auto") -> tuple[str, str, int]:
    """``(source, tree, n_entries)`` of a file, or an :class:`InputFileError` naming it.

    Without ``tree``, a requested ``source`` picks its own tree (:func:`rs3l_coffea.io.select_tree`:
    a file holding both a Delphes and an Events tree gives ``pfnano`` the Events tree).
    """
    import uproot

    from rs3l_coffea.io import select_tree, source_from_branches

    if not os.path.isfile(path):
        raise InputFileError(f"input file {path} does not exist")
    if os.path.getsize(path) == 0:
        raise InputFileError(f"input file {path} is empty (0 bytes), not a ROOT file")
    try:
        with uproot.open(path) as handle:
            trees = [k.split(";")[0] for k, c in handle.classnames().items() if c == "TTree"]
            if not trees:
                keys = ", ".join(handle.keys()) or "none"
                raise InputFileError(
                    f"{path} contains no TTree at all (keys: {keys}): not a readable "
                    "Delphes/NanoAOD ROOT file (truncated or corrupt?)"
                )
            if tree is None and source != "auto":
                tree = select_tree(trees, source, str(path))
            if tree is None:
                tree = "Delphes" if "Delphes" in trees else "Events" if "Events" in trees else None
            if tree is None or tree not in trees:
                raise InputFileError(
                    f"{path} has no TTree {tree or 'Delphes/Events'!r} "
                    f"(trees found: {', '.join(trees) or 'none'})"
                )
            ttree = handle[tree]
            # Top-level names are enough to tell the source (and avoid typing every branch).
            branches = {branch.name for branch in ttree.branches}
            n_entries = int(ttree.num_entries)
    except InputFileError:
        raise
    except Exception as error:  # uproot raises many unrelated types on corrupt files
        raise InputFileError(f"cannot read {path} as a ROOT file: {error}") from error
    source = source_from_branches(branches, str(path), tree)
    return source, tree, n_entries


def _schema(source: str) -> Any:
    from coffea.nanoevents import NanoAODSchema, PFNanoAODSchema

    from rs3l_coffea.io.schemas import FlatDelphesSchema

    return {"delphes": FlatDelphesSchema, "pfnano": PFNanoAODSchema, "nanoaod": NanoAODSchema}[source]


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
) -> dict[str, Any]:
    """Run ``processor_instance`` over ``fileset``; returns its accumulator plus ``bad_files``.

    ``executor`` is a name from :data:`EXECUTORS` or a ready coffea executor instance (e.g. a
    ``DaskExecutor`` on your own client). ``bad_files`` lists ``{"dataset", "file", "reason"}``
    for every skipped file (empty unless ``skip_bad_files``).
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
            group = groups.setdefault(source, {})
            spec = group.setdefault(dataset, {"files": {}, "metadata": entry["metadata"]})
            spec["files"][path] = tree_name

    outputs = []
    if groups:
        context = (
            make_executor(executor, workers=workers, scheduler=scheduler, status=status)
            if isinstance(executor, str)
            else contextlib.nullcontext(executor)
        )
        with context as coffea_executor:
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
                        processor_instance=processor_instance,
                        iteritems_options={"filter_name": branches},
                    )
                except Exception as error:
                    if _is_input_error(error):
                        raise InputFileError(str(error)) from error
                    raise
                outputs.append(output)
    result: dict[str, Any] = dict(processor.accumulate(outputs)) if outputs else {}
    result["bad_files"] = bad_files
    return result


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
