"""Opening ROOT files: one :func:`open_tree`, tree selection, source detection, NanoEvents.

Every place that opens a ROOT file (the readers, the runner's up-front file check, the ntuple
builder and the training shards) goes through :func:`open_tree`, so a missing, empty,
unreadable or tree-less file gives the same :class:`InputFileError` naming the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from rs3l_coffea.errors import ConfigError, InputFileError, MissingConstituentsError
from rs3l_coffea.io.sources import DEFAULT_NANO_JETS, FORMATS, SOURCES


@dataclasses.dataclass
class OpenTree:
    """An open ROOT file and one of its TTrees; a context manager closing the file."""

    handle: Any
    """The ``uproot.ReadOnlyDirectory`` of the file."""
    name: str
    """The TTree's name."""
    tree: Any
    """The ``uproot.TTree``."""
    origin: str
    """The path, as given (for messages)."""
    trees: list[str]
    """Every TTree name in the file."""

    def __enter__(self) -> OpenTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def open_tree(
    path: str | os.PathLike[str],
    tree: str | None = None,
    *,
    source: str | None = None,
    what: str = "input file",
) -> OpenTree:
    """Open ``path`` and its TTree ``tree`` (or, with ``source``, the tree of that source:
    :func:`select_tree`; ``source="auto"`` takes ``Delphes`` if present, else ``Events``).

    The file stays open (virtual NanoEvents read from it lazily); use the result as a context
    manager to close it. ``what`` names the file in messages (``"ntuple shard"``, ...).

    Raises :class:`InputFileError` naming the file when it is a directory, missing, empty,
    not a ROOT file, holds no TTree or not the wanted one, or its TTree metadata is unreadable.
    """
    import uproot

    origin = str(path)
    if os.path.isdir(origin):
        raise InputFileError(f"{what} {origin} is a directory, not a ROOT file")
    if not os.path.isfile(origin):
        raise InputFileError(f"{what} {origin} does not exist")
    if os.path.getsize(origin) == 0:
        raise InputFileError(f"{what} {origin} is empty (0 bytes), not a ROOT file")
    try:
        handle = uproot.open(origin)
    except Exception as error:  # uproot raises several unrelated types on corrupt files
        raise InputFileError(f"cannot open {what} {origin} as a ROOT file: {error}") from error
    try:
        trees = [k.split(";")[0] for k, c in handle.classnames().items() if c == "TTree"]
        if not trees:
            raise InputFileError(
                f"{what} {origin} contains no TTree at all (keys: {', '.join(handle.keys()) or 'none'}): "
                "not a readable ROOT file of the expected kind (truncated or corrupt?)"
            )
        if tree is None:
            tree = select_tree(trees, source or "auto", origin)
        if tree not in trees:
            raise InputFileError(
                f"{what} {origin} has no TTree {tree!r} (trees found: {', '.join(trees) or 'none'})"
            )
        try:  # the TTree metadata can sit past the end of a truncated file
            ttree = handle[tree]
        except Exception as error:
            raise InputFileError(f"cannot read TTree {tree!r} of {origin}: {error}") from error
    except BaseException:
        handle.close()
        raise
    return OpenTree(handle=handle, name=tree, tree=ttree, origin=origin, trees=trees)


def select_tree(trees: Sequence[str], source: str, origin: str) -> str:
    """The TTree to read for ``source`` among a file's ``trees``.

    ``delphes`` -> ``Delphes``; ``pfnano`` / ``nanoaod`` -> ``Events`` (so a file holding both a
    Delphes and an Events tree gives each source its own tree); ``auto`` -> ``Delphes`` if
    present, else ``Events``. Raises :class:`InputFileError` naming ``origin`` and the trees found
    when the wanted tree is absent.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    if source == "auto":
        wanted = tuple(dict.fromkeys(fmt.tree for fmt in FORMATS.values()))
    else:
        wanted = (FORMATS[source].tree,)
    for name in wanted:
        if name in trees:
            return name
    raise InputFileError(
        f"{origin} has no {' or '.join(repr(w) for w in wanted)} TTree "
        f"(trees found: {', '.join(trees) or 'none'}) for source {source!r}; pass tree=..."
    )


def source_from_branches(branches: Iterable[str], origin: str, tree: str) -> str:
    """The source (``delphes``, ``pfnano`` or ``nanoaod``) from a TTree's top-level branch names.

    Raises :class:`MissingConstituentsError` naming ``origin`` when there are no candidates.
    """
    names = set(branches)
    for fmt in FORMATS.values():
        by_prefix = any(name.startswith(fmt.branch_prefixes) for name in names)
        if by_prefix or any(branch in names for branch in fmt.branches):
            return fmt.name
    raise MissingConstituentsError(
        f"{origin}: tree {tree!r} has no particle candidates (EFlowTrack, PFCands or "
        "PFCand branches): RS3L needs jet constituents (PFNano or Delphes files), "
        "so this file cannot be used"
    )


def detect_source(events: Any, origin: str | None = None) -> str:
    """Guess the source (``delphes``, ``pfnano`` or ``nanoaod``) from the NanoEvents fields.

    Raises :class:`MissingConstituentsError` when the events have jets but no candidates.
    """
    fields = set(events.fields)
    for fmt in FORMATS.values():
        # The collections that identify the format: Delphes' track/photon flows, NanoAOD's PF table.
        identifying = fmt.branch_prefixes or fmt.candidate_collections
        if any(name in fields for name in identifying):
            return fmt.name
    where = f" in {origin}" if origin else ""
    raise MissingConstituentsError(
        f"no particle candidates{where} (looked for EFlowTrack/EFlowPhoton, PFCands, PFCand): "
        "RS3L needs jet constituents, so files without PF candidates (plain NanoAOD) cannot be used"
    )


def schema_class(source: str) -> Any:
    """The coffea NanoEvents schema class reading ``source`` files."""
    import coffea.nanoevents

    from rs3l_coffea.io.schemas import FlatDelphesSchema

    name = FORMATS[source].schema
    return FlatDelphesSchema if name == "FlatDelphesSchema" else getattr(coffea.nanoevents, name)


def open_events(
    path: str | os.PathLike[str],
    *,
    source: str = "auto",
    entry_start: int | None = None,
    entry_stop: int | None = None,
    tree: str | None = None,
    mode: str = "virtual",
    jets: str | None = None,
    all_branches: bool = False,
) -> tuple[Any, str, str]:
    """Open ``path`` as NanoEvents with the schema for its source.

    Unless ``all_branches``, only the branches RS3L needs are put into the event form
    (candidates, their jet associations, ``FatJet``/``Jet`` or the stored jet collection
    ``jets``, generator particles, event ids): Delphes files have hundreds of branches and
    building the form for all of them dominates the time on small files.

    Returns ``(events, source, origin)``. Raises :class:`InputFileError` naming the file when it
    is missing, empty, unreadable or lacks the tree, :class:`MissingConstituentsError` when
    the tree has no candidates.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    if mode not in ("virtual", "eager"):
        raise ConfigError(f"mode must be 'virtual' or 'eager' for load_jets, got {mode!r}")
    # The handle stays open: virtual NanoEvents read from it lazily (and the TTree metadata,
    # slow to parse for Delphes' ~1800 branches, is parsed once and cached by uproot).
    opened = open_tree(path, tree, source=source)
    origin, tree, trees = opened.origin, opened.name, opened.trees
    try:
        branches = set(opened.tree.keys())
        n_entries = opened.tree.num_entries
    except Exception as error:
        raise InputFileError(f"cannot read TTree {tree!r} of {origin}: {error}") from error
    found = source_from_branches(branches, origin, tree)
    if source == "auto":
        source = found
    elif found != source:
        raise InputFileError(
            f"{origin}: tree {tree!r} holds {found} candidates, not {source} ones "
            f"(trees found: {', '.join(trees)}); pass source={found!r} or the right tree=..."
        )
    if jets is not None:
        _check_stored_jets(branches, source, jets, origin, tree)

    schema = schema_class(source)
    if n_entries == 0:
        entry_start, entry_stop = None, None
    options = {} if all_branches else {"filter_name": needed_branches(source, jets)}
    from coffea.nanoevents import NanoEventsFactory

    try:
        with warnings.catch_warnings():
            if not all_branches:
                # We read only the branches RS3L needs on purpose, so coffea's notes about
                # cross-references into collections we did not read are expected noise.
                warnings.filterwarnings(
                    "ignore", message="Missing cross-reference", category=RuntimeWarning
                )
            events = NanoEventsFactory.from_root(
                opened.handle,
                treepath=tree,
                schemaclass=schema,
                mode=mode,
                entry_start=entry_start,
                entry_stop=entry_stop,
                iteritems_options=options,
            ).events()
    except Exception as error:
        raise InputFileError(
            f"cannot read tree {tree!r} of {origin} with {schema.__name__}: {error}"
        ) from error
    return events, source, origin


def _check_stored_jets(branches: set[str], source: str, jets: str, origin: str, tree: str) -> None:
    """The stored jet collection ``jets`` and (nanoaod layout) its candidate table exist."""
    fmt = FORMATS[source]
    file_collections = collections_in(branches, source)
    if jets not in file_collections:
        raise InputFileError(
            f"jet collection {jets!r} not found in {origin} (tree {tree!r}); collections in "
            f"the file: {', '.join(sorted(file_collections))}"
        )
    if fmt.layout == "nanoaod" and fmt.association(jets) not in file_collections:
        cand_name = fmt.candidates[0].collection
        tables = sorted(c for c in file_collections if c.endswith(cand_name) and c != cand_name)
        raise MissingConstituentsError(
            f"{fmt.association(jets)!r} not found in {origin}: jets {jets!r} need a "
            f"candidate-index table named <jets>{cand_name} (fields jetIdx and a candidate "
            f"index); such tables in the file: {', '.join(tables) or 'none'}. Pick the jets "
            "of one of them or recluster (--recluster-radius R on the command line, recluster_radius=R in Python)"
        )


def collections_in(branches: set[str], source: str) -> set[str]:
    """Collection names present in a tree, from its branch names."""
    if FORMATS[source].layout == "delphes":
        return {b.split("/")[0].split(".")[0].removesuffix("_size") for b in branches}
    return {b[1:].split("_")[0] for b in branches if b.startswith("n")}


def needed_branches(source: str, jets: str | None = None) -> Callable[[str], bool]:
    """Branch-name predicate keeping only the collections RS3L reads from ``source`` files.

    Pass it to coffea to skip building the form of unused branches, e.g.
    ``NanoEventsFactory.from_root(..., iteritems_options={"filter_name": needed_branches("delphes")})``
    (virtual/eager) or ``uproot_options={"filter_name": ...}`` (``mode="dask"``).
    """
    if source not in FORMATS:
        raise ConfigError(f"needed_branches needs a concrete source, got {source!r}")
    fmt = FORMATS[source]
    wanted = {*fmt.candidate_collections, fmt.gen.collection, *fmt.extra_collections}
    if fmt.layout == "delphes":
        if jets:
            wanted.add(jets)

        def keep_delphes(name: str) -> bool:
            collection = name.split("/")[0].split(".")[0]
            return collection.removesuffix("_size") in wanted

        return keep_delphes

    for jet_name in (*DEFAULT_NANO_JETS, *([jets] if jets else [])):
        wanted |= {jet_name, fmt.association(jet_name)}
    event_ids = fmt.event_id_branches

    def keep_nano(name: str) -> bool:
        collection = name.split("_")[0]
        if name in event_ids or collection in wanted:
            return True
        return collection.startswith("n") and collection[1:] in wanted

    return keep_nano


@contextlib.contextmanager
def read_errors_name_the_file(where: str) -> Iterator[None]:
    """Turn uproot's I/O and decoding errors while reading baskets into an InputFileError.

    Decompressors raise their own types (``zlib.error``, ``lzma.LZMAError``, uproot's
    ``ValueError`` for a bad LZ4 checksum): any exception raised from inside uproot counts.
    """
    import lzma
    import zlib

    from uproot.deserialization import DeserializationError

    try:
        yield
    except InputFileError:
        raise
    except Exception as error:
        reading = isinstance(error, (OSError, DeserializationError, zlib.error, lzma.LZMAError))
        if not (reading or _raised_inside_uproot(error)):
            raise
        raise InputFileError(f"cannot read the events{where} (truncated or corrupt file?): {error}") from error


def _raised_inside_uproot(error: BaseException) -> bool:
    frame = error.__traceback__
    while frame is not None:
        if f"{os.sep}uproot{os.sep}" in frame.tb_frame.f_code.co_filename:
            return True
        frame = frame.tb_next
    return False
