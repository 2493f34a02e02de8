"""The study's generation stage: each chunk ntupled as soon as it exists, ROOT files dropped unless
kept, resumable chunk by chunk, and the same rows as one ntuple build over every file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pythia8mc")


def test_chunks_are_ntupled_at_once_resumable_and_equal_to_one_build(tmp_path: Path) -> None:
    from rs3l_coffea.generation import GenerationConfig
    from rs3l_coffea.study.layout import StudyLayout
    from rs3l_coffea.study.samples import generate_to_ntuples
    from rs3l_coffea.study.splits import read_ntuple
    from rs3l_coffea.training.build import build_ntuples

    layout = StudyLayout(tmp_path / "study")
    config = GenerationConfig(process="zh_bb", n_events=45, out_dir=layout.gen / "zh_bb",
                              variants=("nominal", "fsr_up"), seed=5, chunk_size=15, eta_max=1.5)
    messages: list[str] = []
    options = {"selection": "generated", "shard_size": 7, "workers": 1, "log": messages.append}
    summary = generate_to_ntuples(config, layout, keep_root=True, **options)
    assert summary == {"chunks": 3, "events": 45, "variants": ["nominal", "fsr_up"]}
    roots = sorted((layout.gen / "zh_bb").glob("*.root"))
    assert len(roots) == 6  # kept on request: 3 chunks x 2 variants
    chunked = read_ntuple(layout.ntuple)
    whole = read_ntuple(Path(build_ntuples(roots, tmp_path / "whole", shard_size=1000)[0]).parent)
    assert set(chunked) == set(whole)
    for branch in whole:
        np.testing.assert_array_equal(chunked[branch], whole[branch], err_msg=branch)

    # A lost chunk is redone alone; with keep_root off its ROOT files go, the others' stay.
    lost = layout.chunk_ntuple("zh_bb", 1)
    shutil.rmtree(lost)
    messages.clear()
    generate_to_ntuples(config, layout, keep_root=False, **options)
    assert messages[0].endswith("2 of 3 chunks done before")
    assert len(messages) == 2 and "chunk 2/3" in messages[1]
    assert sorted(p.name for p in (layout.gen / "zh_bb").glob("*.root")) == [
        p.name for p in roots if "_00001" not in p.name]
    again = read_ntuple(layout.ntuple)
    for branch in whole:
        np.testing.assert_array_equal(again[branch], whole[branch], err_msg=branch)


def test_ntuple_shards_skip_chunks_still_being_written(tmp_path: Path) -> None:
    from rs3l_coffea.errors import InputFileError
    from rs3l_coffea.study.splits import ntuple_shards

    for rel in ("zj/chunk_00001/shard_00000.root", "zj/chunk_00002.partial/shard_00000.root",
                "wz_qq/chunk_00000/shard_00001.root", "wz_qq/chunk_00000/shard_00000.root"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    assert [p.relative_to(tmp_path).as_posix() for p in ntuple_shards(tmp_path)] == [
        "wz_qq/chunk_00000/shard_00000.root", "wz_qq/chunk_00000/shard_00001.root", "zj/chunk_00001/shard_00000.root"]
    with pytest.raises(InputFileError, match="no ntuple shards in"):
        ntuple_shards(tmp_path / "zj" / "chunk_00002.partial" / "nothing")


def test_an_output_directory_of_the_former_layout_keeps_its_generation(tmp_path: Path) -> None:
    from rs3l_coffea.errors import ConfigError
    from rs3l_coffea.study import load_study_config
    from rs3l_coffea.study.layout import StudyLayout
    from rs3l_coffea.study.run import StudyState, _generation_depends, generate_stage
    from rs3l_coffea.study.stages import Stages

    config = load_study_config(Path(__file__).resolve().parents[1] / "studies" / "tiny.yaml")
    layout = StudyLayout(tmp_path)
    former = Stages(layout.stages, lambda _m: None)
    summaries = {p: {"files": 1, "events": n, "variants": ["nominal"]} for p, n in config.generation.events.items()}
    for process, summary in summaries.items():
        former.run(f"generate:{process}", {"gen": _generation_depends(config), "p": process}, lambda s=summary: s)
    former.run("ntuple", {"gen": _generation_depends(config), "sel": config.split.selection}, lambda: {"shards": 1})
    state = StudyState(config, layout, Stages(layout.stages, lambda _m: None), lambda _m: None)
    generate_stage(state)  # would run Pythia if it did not recognise the finished former layout
    assert state.gen_summary == summaries and not state.stages.ran
    assert set(state.stages.skipped) == {f"generate:{p}" for p in summaries} | {"ntuple"}
    # The former layout without one of its generation stages cannot be completed in place.
    former.marker("generate:zj").unlink()
    with pytest.raises(ConfigError, match="former ntuple layout but no finished stage 'generate:zj'"):
        generate_stage(StudyState(config, layout, Stages(layout.stages, lambda _m: None), lambda _m: None))
