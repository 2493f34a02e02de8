"""The ``generate:<process>`` stages: generated chunks turned into paired ntuples as they appear.

Each chunk of hard events is showered in every variant (``rs3l_coffea.generation.generate_chunk``),
turned into ntuple shards under ``ntuple/<process>/chunk_<i>/`` at once, and its ROOT files
(~9 KB per event and variant) are deleted unless ``generation.keep_root`` is set. Peak disk use is
then the ntuples plus the ROOT files of the chunks in flight (at most ``workers + 1``), not the whole
sample. A chunk whose ntuple directory is complete is skipped, so a killed stage resumes at the
first unfinished chunk; a chunk is reproduced exactly from (configuration, chunk index).

Rows are the same as one ``build_ntuples`` over every file: the builder works chunk by chunk in
(process, chunk) order, which is the order the split stage reads the chunk directories in.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rs3l_coffea.atomic import atomic_open
from rs3l_coffea.errors import InputFileError
from rs3l_coffea.study.layout import StudyLayout

#: Written in a chunk directory whose jets all failed the selection (a short tail chunk).
EMPTY_MARKER = "empty.json"


def _chunk_done(directory: Path) -> bool:
    return (directory / "ntuple.json").is_file() or (directory / EMPTY_MARKER).is_file()


def ntuple_chunk(paths: list[Path], directory: Path, selection: str, shard_size: int, keep_root: bool) -> int:
    """Ntuple the ROOT files of one chunk into ``directory``; drop them unless ``keep_root``."""
    from rs3l_coffea.generation.run import sidecar_path
    from rs3l_coffea.training.build import build_ntuples

    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)  # a killed earlier attempt
    shutil.rmtree(directory, ignore_errors=True)
    try:
        shards = build_ntuples(paths, staging, selection=selection, shard_size=shard_size)
    except InputFileError as error:
        if "no jet passed the selection" not in str(error):
            raise
        shards = []
        staging.mkdir(parents=True, exist_ok=True)
        with atomic_open(staging / EMPTY_MARKER, "w") as handle:
            handle.write('{"jets": 0}\n')
    staging.rename(directory)  # the chunk is complete only once its directory has its final name
    if not keep_root:
        for path in paths:
            path.unlink(missing_ok=True)
            sidecar_path(path).unlink(missing_ok=True)
    return len(shards)


def generate_to_ntuples(
    gen_config: Any,
    layout: StudyLayout,
    *,
    selection: str,
    shard_size: int,
    workers: int,
    keep_root: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Generate every chunk of ``gen_config`` and ntuple each as soon as it exists (see module)."""
    from rs3l_coffea.generation import generate_chunk
    from rs3l_coffea.generation.run import exit_with_parent

    gen_config.validate()
    gen_config.check_output_dir()
    todo = [i for i in range(gen_config.n_chunks) if not _chunk_done(layout.chunk_ntuple(gen_config.process, i))]
    if len(todo) < gen_config.n_chunks:
        log(f"       {gen_config.process}: {gen_config.n_chunks - len(todo)} of {gen_config.n_chunks} chunks done before")

    def finish(index: int, paths: list[Path]) -> None:
        n = ntuple_chunk(paths, layout.chunk_ntuple(gen_config.process, index), selection, shard_size, keep_root)
        log(f"       {gen_config.process} chunk {index + 1}/{gen_config.n_chunks}: {n} shard(s)")

    if workers <= 1 or len(todo) <= 1:
        for index in todo:
            finish(index, generate_chunk(gen_config, index))
    else:
        context = multiprocessing.get_context("spawn")
        # A killed `rs3l report` must not leave its workers generating on (and writing the files
        # the resumed run writes): they exit with this process (see exit_with_parent).
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            pending = list(todo)
            running: dict[concurrent.futures.Future, int] = {}
            while pending or running:
                while pending and len(running) < workers + 1:  # bounded: few chunks of ROOT on disk
                    index = pending.pop(0)
                    running[pool.submit(generate_chunk, gen_config, index)] = index
                done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    finish(running.pop(future), future.result())
    return {"chunks": gen_config.n_chunks, "events": gen_config.n_events, "variants": list(gen_config.variants)}
