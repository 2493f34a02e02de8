"""Re-simulation with Pythia8 + detector + Delphes-layout writer, checked against physics.

References are independent of our code: fastjet anti-kT clustering, the Higgs mass (125 GeV)
and its b b-bar decay, four-momentum conservation, coffea's DelphesSchema, scipy tests.
Samples are small (hundreds of events) and generated once per module.
"""

from __future__ import annotations

import json
import shutil

import awkward as ak
import fastjet
import numpy as np
import pytest
import uproot
from scipy import stats

from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.generation import (
    GenerationConfig,
    generate,
    generate_chunk,
    read_provenance,
    records,
    sidecar_path,
)
from rs3l_coffea.generation.config import PROCESSES, VARIANTS
from rs3l_coffea.generation.pythia import (
    ChargeTable,
    generate_hard_events,
    make_variant_shower,
    shower_settings,
)
from rs3l_coffea.generation.records import ShoweredParticles, showered_records

pytest.importorskip("pythia8mc")

ZH_VARIANTS = ("nominal", "seed", "fsr_up", "fsr_down", "rehadronize")


def read(path, branches=None):
    with uproot.open(path) as handle:
        return handle["Delphes"].arrays(branches, library="ak", how=dict) if branches else (
            handle["Delphes"].arrays(library="ak")
        )


def collection(tree, name):
    """Jagged records of ``<name>/<name>.<field>`` branches (one uproot read)."""
    prefix = f"{name}/{name}."
    fields = {key[len(prefix):]: tree[key] for key in tree.fields if key.startswith(prefix)}
    return ak.zip(fields)


def candidates(tree):
    """EFlow candidates as px, py, pz, E (tracks with their mass, calo deposits massless)."""
    tracks = collection(tree, "EFlowTrack")
    pieces = []
    for pt, eta, phi, mass in (
        (tracks.PT, tracks.Eta, tracks.Phi, tracks.Mass),
        *(
            (c.ET, c.Eta, c.Phi, c.ET * 0)
            for c in (collection(tree, "EFlowPhoton"), collection(tree, "EFlowNeutralHadron"))
        ),
    ):
        pt, eta, phi, mass = (ak.values_astype(x, np.float64) for x in (pt, eta, phi, mass))
        pz = pt * np.sinh(eta)
        pieces.append(
            ak.zip(
                {"px": pt * np.cos(phi), "py": pt * np.sin(phi), "pz": pz,
                 "E": np.sqrt(pt**2 + pz**2 + mass**2)}
            )
        )
    return ak.concatenate(pieces, axis=1)


def leading_jets(tree, radius=0.8):
    """Leading anti-kT jet of each event (fastjet) with its constituent count; pT > 200 GeV."""
    cands = candidates(tree)
    sequence = fastjet.ClusterSequence(cands, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jets = sequence.inclusive_jets(min_pt=200.0)
    constituents = sequence.constituents(min_pt=200.0)
    pt = np.hypot(jets.px, jets.py)
    order = ak.argsort(pt, ascending=False)
    jets, constituents = jets[order], constituents[order]
    has_jet = ak.num(jets) > 0
    lead = ak.firsts(jets)
    mass = np.sqrt(np.maximum(lead.E**2 - lead.px**2 - lead.py**2 - lead.pz**2, 0))
    lead_pt = np.hypot(lead.px, lead.py)
    eta = np.arcsinh(lead.pz / lead_pt)
    phi = np.arctan2(lead.py, lead.px)
    n_const = ak.num(ak.firsts(constituents, axis=1), axis=1)
    return {
        "has_jet": ak.to_numpy(has_jet),
        "mass": ak.to_numpy(ak.fill_none(mass, np.nan)),
        "eta": ak.to_numpy(ak.fill_none(eta, np.nan)),
        "phi": ak.to_numpy(ak.fill_none(phi, np.nan)),
        "pt": ak.to_numpy(ak.fill_none(lead_pt, np.nan)),
        "n_constituents": ak.to_numpy(ak.fill_none(n_const, 0)),
    }


def delta_r(eta1, phi1, eta2, phi2):
    dphi = (phi1 - phi2 + np.pi) % (2 * np.pi) - np.pi
    return np.hypot(eta1 - eta2, dphi)


@pytest.fixture(scope="module")
def zh_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("zh")
    config = GenerationConfig(
        process="zh_bb", n_events=300, out_dir=out, variants=ZH_VARIANTS, seed=11, chunk_size=150
    )
    paths = generate(config)
    return config, paths


@pytest.fixture(scope="module")
def zj_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("zj")
    config = GenerationConfig(
        process="zj", n_events=1000, out_dir=out, variants=("nominal", "fsr_up", "fsr_down"),
        seed=5, chunk_size=1000,
    )
    generate(config)
    return config


# ---------------------------------------------------------------- configuration errors


def test_bad_configuration_is_rejected_before_generation(tmp_path):
    with pytest.raises(ConfigError, match=r"'qcd'.*zh_bb, zj, wz_qq, wj_qq"):
        GenerationConfig(process="qcd", n_events=10, out_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"'herwig'.*nominal, seed, fsr_up"):
        GenerationConfig(process="zj", n_events=10, out_dir=tmp_path, variants=("herwig",))
    for n in (0, -5):
        with pytest.raises(ConfigError, match="n_events"):
            GenerationConfig(process="zj", n_events=n, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="rehadronize"):
        GenerationConfig(process="zj", n_events=1, out_dir=tmp_path, variants=("rehadronize",))
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    config = GenerationConfig(process="zj", n_events=10, out_dir=blocker / "out")
    with pytest.raises(InputFileError, match="a_file"):
        generate(config)
    assert blocker.read_text() == "not a directory"


def test_cli_reports_bad_values_cleanly(tmp_path):
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["generate", "--process", "ttbar", "--events", "5", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "ttbar" in result.output and "zh_bb" in result.output
    result = runner.invoke(
        app, ["generate", "--process", "zj", "--events", "5", "--variants", "nominal,sherpa",
              "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "sherpa" in result.output
    assert not list(tmp_path.glob("*.root"))


def test_absurd_plans_are_refused_up_front(tmp_path, monkeypatch):
    """Too many chunks (a mistyped --chunk-size) and more output than the disk holds are
    refused before any work, with a one-line error naming the options (was: MemoryError)."""
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app
    from rs3l_coffea.generation import config as config_module

    with pytest.raises(ConfigError, match=r"--chunk-size.*200,000,000 chunk files.*at least 2,000"):
        GenerationConfig(process="zj", n_events=200_000_000, out_dir=tmp_path, chunk_size=1)
    GenerationConfig(process="zj", n_events=200_000_000, out_dir=tmp_path, chunk_size=2_000)  # allowed
    result = CliRunner().invoke(
        app, ["generate", "--process", "zj", "--events", "200000000", "--chunk-size", "1",
              "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2, result.output
    assert "--chunk-size" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()

    free = 10**9
    monkeypatch.setattr(config_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(free, 0, free))
    config = GenerationConfig(process="zj", n_events=200_000_000, out_dir=tmp_path / "big", chunk_size=5000)
    with pytest.raises(ConfigError, match=r"--events.*4 variants.*at least 4,000\.0 GB.*1\.0 GB free"):
        generate(config)
    assert not list((tmp_path / "big").glob("*.root"))
    result = CliRunner().invoke(
        app, ["generate", "--process", "zj", "--events", "200000000", "--out", str(tmp_path / "big")]
    )
    assert result.exit_code == 2 and "GB free" in result.output, result.output


def test_cli_generates_files(tmp_path):
    from typer.testing import CliRunner

    from rs3l_coffea.cli import app

    result = CliRunner().invoke(
        app, ["generate", "--process", "wj_qq", "--events", "6", "--variants", "nominal,seed",
              "--seed", "3", "--chunk-size", "4", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.glob("*.root"))
    assert names == [f"wj_qq_{v}_{c:05d}.root" for v in ("nominal", "seed") for c in (0, 1)]
    sizes = [len(read(tmp_path / n, ["Event/Event.HardEventID"])["Event/Event.HardEventID"]) for n in names]
    assert sizes == [4, 2, 4, 2]


# ---------------------------------------------------------------- sameness, reproducibility


def hard_block(tree):
    particle = collection(tree, "Particle")
    return particle[(particle.Status == 4) | ((particle.Status >= 21) & (particle.Status <= 23))]


def test_hard_process_identical_across_variants_final_states_differ(zh_sample):
    config, _ = zh_sample
    for chunk in range(config.n_chunks):
        trees = {v: read(config.output_path(v, chunk)) for v in config.variants}
        nominal = trees["nominal"]
        ref_hard = ak.to_list(hard_block(nominal))
        ids = ak.to_list(collection(nominal, "Event").HardEventID)
        assert ids == [[i] for i in range(chunk * 150, chunk * 150 + 150)]
        for variant, tree in trees.items():
            event = collection(tree, "Event")
            assert ak.to_list(event.HardEventID) == ids
            assert ak.all(event.Weight == 1.0)
            assert set(ak.flatten(event.VariantCode).tolist()) == {
                {"nominal": -1, "seed": 0, "fsr_up": 1, "fsr_down": 2, "rehadronize": 5}[variant]
            }
            assert ak.to_list(hard_block(tree)) == ref_hard, variant
            if variant != "nominal":
                same = ak.to_numpy(tree["EFlowTrack_size"] == nominal["EFlowTrack_size"])
                assert same.mean() < 0.5, f"{variant} final states look identical to nominal"


def test_rehadronize_keeps_the_nominal_parton_shower(zh_sample):
    config, _ = zh_sample
    sizes = {
        v: ak.to_numpy(ak.flatten(collection(read(config.output_path(v, 0)), "Event").PartonLevelSize))
        for v in ("nominal", "rehadronize", "seed")
    }
    assert np.all(sizes["nominal"] > 0)
    np.testing.assert_array_equal(sizes["rehadronize"], sizes["nominal"])
    assert np.mean(sizes["seed"] == sizes["nominal"]) < 0.2


def test_same_seed_reproduces_files_exactly(zh_sample, tmp_path):
    config, _ = zh_sample
    again = GenerationConfig(**{**config.as_dict(), "out_dir": tmp_path, "detector": config.detector,
                                "variants": ("nominal", "fsr_up", "rehadronize"), "n_events": 150})
    paths = generate_chunk(again, 0)
    for variant, path in zip(again.variants, paths, strict=True):
        original = read(config.output_path(variant, 0))
        redone = read(path)
        assert original.fields == redone.fields
        for field in original.fields:
            assert ak.to_list(original[field]) == ak.to_list(redone[field]), (path.name, field)
    other = GenerationConfig(**{**again.as_dict(), "out_dir": tmp_path / "other",
                                "detector": config.detector, "seed": 12, "variants": ("nominal",)})
    changed = read(generate_chunk(other, 0)[0])
    assert ak.to_list(changed["EFlowTrack_size"]) != ak.to_list(read(paths[0])["EFlowTrack_size"])


def test_resume_skips_complete_chunks(zh_sample):
    config, paths = zh_sample
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    assert generate(config) == paths
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps
    victim = config.output_path("seed", 1)
    sidecar_path(victim).unlink()  # as if the job died before the chunk finished
    generate(config)
    assert sidecar_path(victim).is_file()
    assert all(stamps[p] == p.stat().st_mtime_ns for p in paths if not p.name.endswith("_00001.root"))
    assert not list(config.out_dir.glob(".*tmp*"))  # no temporaries left behind
    # extending the sample only adds chunks; complete ones are kept
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    bigger = GenerationConfig(**{**config.as_dict(), "n_events": 310, "detector": config.detector})
    more = generate(bigger)
    assert more[: len(paths)] == paths and len(more) == 3 * len(config.variants)
    assert {p: p.stat().st_mtime_ns for p in paths} == stamps
    assert len(read(bigger.output_path("nominal", 2))["EFlowTrack_size"]) == 10


def test_provenance_sidecar_and_root_string(zh_sample):
    config, _ = zh_sample
    path = config.output_path("fsr_up", 0)
    stored = read_provenance(path)
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["provenance"] == stored
    assert stored["generator"].startswith("pythia8mc 8.3")
    assert "TimeShower:renormMultFac = 0.5" in stored["shower_settings"]  # more radiation
    assert "ParticleDecays:limitTau0 = on" in stored["shower_settings"]
    assert "HiggsSM:ffbar2HZ = on" in stored["hard_process_settings"]
    assert set(stored["seeds"]) == {"hard", "shower", "detector"}
    assert stored["detector"]["track_eta_max"] == 2.5
    assert sidecar["n_events_written"] == 150
    assert "StringZ:aLund = 0.6" not in stored["shower_settings"]


# ---------------------------------------------------------------- generator-level physics


def test_higgs_decays_to_bb_with_125_gev_mass(zh_sample):
    config, _ = zh_sample
    particle = collection(read(config.output_path("nominal", 0)), "Particle")
    index = ak.local_index(particle.PID)
    higgs = particle[(particle.PID == 25) & (particle.Status == 22)]
    assert ak.all(ak.num(higgs) == 1)
    higgs_index = ak.firsts(index[(particle.PID == 25) & (particle.Status == 22)])
    daughters = particle[(particle.M1 == higgs_index) & (particle.Status == 23)]
    assert ak.all(ak.num(daughters) == 2)
    assert ak.all(ak.sort(daughters.PID, axis=1) == ak.Array([[-5, 5]] * len(daughters)))
    total = {c: ak.to_numpy(ak.sum(ak.values_astype(daughters[c], np.float64), axis=1))
             for c in ("E", "Px", "Py", "Pz")}
    mass = np.sqrt(total["E"] ** 2 - total["Px"] ** 2 - total["Py"] ** 2 - total["Pz"] ** 2)
    np.testing.assert_allclose(mass, 125.0, atol=0.5)  # 4 MeV width; float32 storage
    np.testing.assert_allclose(ak.to_numpy(ak.firsts(higgs.Mass)), 125.0, atol=0.3)


def test_final_state_balances_the_initial_state(zh_sample):
    config, _ = zh_sample
    particle = collection(read(config.output_path("fsr_down", 1)), "Particle")
    final = particle[particle.Status == 1]
    sums = {c: ak.to_numpy(ak.sum(ak.values_astype(final[c], np.float64), axis=1))
            for c in ("Px", "Py", "Pz", "E")}
    # beams: 2 x 6500 GeV head-on; neutrinos are included (generator level, no detector)
    np.testing.assert_allclose(sums["Px"], 0.0, atol=0.02)
    np.testing.assert_allclose(sums["Py"], 0.0, atol=0.02)
    np.testing.assert_allclose(sums["Pz"], 0.0, atol=0.1)
    np.testing.assert_allclose(sums["E"], 13000.0, rtol=1e-5)
    charge = ak.to_numpy(ak.sum(final.Charge, axis=1))
    np.testing.assert_array_equal(charge, 2)  # two protons in
    # neutrinos exist at generator level but never reach the detector collections
    tree = read(config.output_path("fsr_down", 1))
    pids = ak.to_numpy(ak.flatten(collection(tree, "EFlowTrack").PID))
    assert not np.isin(np.abs(pids), [12, 14, 16]).any()
    assert ak.any(np.abs(final.PID) == 12) or ak.any(np.abs(final.PID) == 14)


def test_mother_links_point_to_stored_entries(zh_sample):
    config, _ = zh_sample
    particle = collection(read(config.output_path("seed", 0)), "Particle")
    n = ak.num(particle.PID)
    for link in (particle.M1, particle.M2):
        assert ak.all((link >= -1) & (link < n))
    # a stored entry's mother comes before it
    assert ak.all(particle.M1 < ak.local_index(particle.PID))


# ---------------------------------------------------------------- reconstructed physics


def test_higgs_jet_mass_peaks_near_125_gev(zh_sample):
    config, _ = zh_sample
    masses = []
    for chunk in range(config.n_chunks):
        tree = read(config.output_path("nominal", chunk))
        jets = leading_jets(tree)
        particle = collection(tree, "Particle")
        b = particle[(np.abs(particle.PID) == 5) & (particle.Status == 23)]
        b_eta = ak.to_numpy(b.Eta)
        b_phi = ak.to_numpy(b.Phi)
        inside = np.all(delta_r(b_eta, b_phi, jets["eta"][:, None], jets["phi"][:, None]) < 0.8, axis=1)
        masses.append(jets["mass"][jets["has_jet"] & inside])
    masses = np.concatenate(masses)
    assert masses.size > 100
    assert 110.0 < np.median(masses) < 135.0


def test_fsr_up_jets_have_more_constituents_and_mass_than_fsr_down(zj_sample):
    config = zj_sample
    up = leading_jets(read(config.output_path("fsr_up", 0)))
    down = leading_jets(read(config.output_path("fsr_down", 0)))
    both = up["has_jet"] & down["has_jet"]
    # same hard process event by event: a paired (Wilcoxon signed-rank) test
    for key in ("n_constituents", "mass"):
        result = stats.wilcoxon(up[key][both], down[key][both], alternative="greater")
        assert result.pvalue < 0.01, (key, result)


def test_b_jets_have_wider_track_d0_tail_than_light_jets(zj_sample):
    config = zj_sample
    tree = read(config.output_path("nominal", 0))
    jets = leading_jets(tree)
    particle = collection(tree, "Particle")
    abs_pid = np.abs(particle.PID)
    heavy = ((abs_pid // 100) % 10 >= 4) | ((abs_pid // 1000) % 10 >= 4)
    hadron = (abs_pid > 100) & ((abs_pid // 10) % 10 != 0)
    b_hadron = hadron & (((abs_pid // 100) % 10 == 5) | ((abs_pid // 1000) % 10 == 5))
    jet_eta, jet_phi = jets["eta"][:, None], jets["phi"][:, None]

    def near_jet(eta, phi):
        return ak.to_numpy(ak.any(delta_r(eta, phi, jet_eta, jet_phi) < 0.8, axis=1))

    has_b = near_jet(particle.Eta[b_hadron], particle.Phi[b_hadron]) & jets["has_jet"]
    is_light = ~near_jet(particle.Eta[hadron & heavy], particle.Phi[hadron & heavy]) & jets["has_jet"]
    tracks = collection(tree, "EFlowTrack")
    in_jet = delta_r(tracks.Eta, tracks.Phi, jet_eta, jet_phi) < 0.8
    d0 = np.abs(tracks.D0[in_jet])
    d0_b = ak.to_numpy(ak.flatten(d0[has_b]))
    d0_light = ak.to_numpy(ak.flatten(d0[is_light]))
    assert has_b.sum() >= 10 and is_light.sum() >= 300
    assert stats.mannwhitneyu(d0_b, d0_light, alternative="greater").pvalue < 0.01
    assert np.mean(d0_b > 0.1) > 2 * np.mean(d0_light > 0.1)  # the displaced-track tail


# ---------------------------------------------------------------- readers


def test_coffea_delphes_schema_reads_the_files(zh_sample):
    from coffea.nanoevents import DelphesSchema, NanoEventsFactory

    config, _ = zh_sample
    path = config.output_path("nominal", 0)
    events = NanoEventsFactory.from_root(
        {str(path): "Delphes"}, schemaclass=DelphesSchema, mode="eager"
    ).events()
    raw = read(path)
    assert len(events) == 150
    assert ak.to_list(events.EFlowTrack.pt) == ak.to_list(collection(raw, "EFlowTrack").PT)
    assert ak.to_list(events.EFlowTrack.D0) == ak.to_list(collection(raw, "EFlowTrack").D0)
    assert ak.to_list(events.EFlowNeutralHadron.eta) == ak.to_list(collection(raw, "EFlowNeutralHadron").Eta)
    # DelphesSchema turns the one-entry Event collection into one record per event
    assert ak.to_list(events.Event.HardEventID) == ak.to_list(ak.flatten(collection(raw, "Event").HardEventID))
    assert ak.all(events.Particle.PID[:, 4] == 25)


def test_io_load_jets_reclusters_generated_files(zh_sample):
    from rs3l_coffea.io import load_jets

    config, _ = zh_sample
    path = config.output_path("nominal", 0)
    jets, _constituents = load_jets(path, source="delphes", recluster_radius=0.8)
    ours = leading_jets(read(path))
    assert len(jets) == 150
    lead_pt = ak.to_numpy(ak.fill_none(ak.firsts(jets.pt[ak.argsort(jets.pt, ascending=False)]), np.nan))
    np.testing.assert_allclose(lead_pt[ours["has_jet"]], ours["pt"][ours["has_jet"]], rtol=1e-4)


# ---------------------------------------------------------------- other processes, parallel


def test_vincia_variants_and_eta_window(tmp_path):
    config = GenerationConfig(
        process="wz_qq", n_events=30, out_dir=tmp_path, seed=2, eta_max=1.0,
        variants=("nominal", "vincia", "vincia_althad"),
    )
    paths = generate(config)
    for path in paths:
        particle = collection(read(path), "Particle")
        w = particle[(np.abs(particle.PID) == 24) & (particle.Status == 22)]
        assert ak.all(ak.num(w) == 1)
        assert np.all(np.abs(ak.to_numpy(ak.firsts(w.Eta))) < 1.0)
        w_index = ak.firsts(ak.local_index(particle.PID)[(np.abs(particle.PID) == 24) & (particle.Status == 22)])
        quarks = particle[(particle.M1 == w_index) & (particle.Status == 23)]
        assert ak.all(ak.num(quarks) == 2) and ak.all(np.abs(quarks.PID) <= 5)
    blocks = [ak.to_list(hard_block(read(path))) for path in paths]
    assert blocks[0] == blocks[1] == blocks[2]  # Vincia reorders decays; the hard block does not
    settings = {p.name: read_provenance(p)["shower_settings"] for p in paths}
    assert "PartonShowers:model = 2" in settings["wz_qq_vincia_00000.root"]
    assert "StringZ:aLund = 0.6" in settings["wz_qq_vincia_althad_00000.root"]
    assert "PartonShowers:model = 2" not in settings["wz_qq_nominal_00000.root"]


def test_process_pool_and_dask_give_the_serial_files(tmp_path):
    distributed = pytest.importorskip("distributed")
    base = {"process": "zj", "n_events": 16, "variants": ("nominal", "seed"), "seed": 9, "chunk_size": 8}
    serial = generate(GenerationConfig(out_dir=tmp_path / "serial", **base))
    pooled = generate(GenerationConfig(out_dir=tmp_path / "pool", **base), workers=2)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1,
                            dashboard_address=":0") as client:
        dasked = generate(GenerationConfig(out_dir=tmp_path / "dask", **base), client=client)
    for a, b, c in zip(serial, pooled, dasked, strict=True):
        assert a.name == b.name == c.name
        ref = read(a)
        for other in (b, c):
            again = read(other)
            for field in ref.fields:
                assert ak.to_list(ref[field]) == ak.to_list(again[field]), (other, field)
    shutil.rmtree(tmp_path)


def _with_failed_event(batch, failed):
    """A nextBatch(..., "none") batch in which event ``failed`` came back as None."""
    layout = ak.to_layout(batch)
    index = np.arange(len(batch))
    index[failed] = -1
    return ak.Array(ak.contents.IndexedOptionArray(ak.index.Index64(index), layout.content))


def test_failed_event_keeps_its_hard_block_and_has_no_final_state():

    spec = PROCESSES["zh_bb"]
    hard = generate_hard_events(spec.settings, spec.target_ids, 4, seed=5)
    shower = make_variant_shower(hard, shower_settings((), isr=False, mpi=False, seed=9), 6500.0)
    batch, _ = shower.next_batch(4)
    charges = ChargeTable(shower.pythia)
    blocks = records.hard_block(hard, 6500.0, charges)
    full, full_final = showered_records(ShoweredParticles.from_batch(batch), blocks, charges)
    failed = ShoweredParticles.from_batch(_with_failed_event(batch, 1))
    assert failed.valid.tolist() == [True, False, True, True]
    record, final = showered_records(failed, blocks, charges)
    particle, full_particle = record.to_awkward(), full.to_awkward()
    assert ak.to_list(particle[1]) == ak.to_list(blocks.to_awkward()[1])
    assert len(full_particle[1]) > 10 * len(particle[1])
    for k in (0, 2, 3):
        assert ak.to_list(particle[k]) == ak.to_list(full_particle[k])
    assert final.counts[1] == 0 and full_final.counts[1] > 0
    assert final.counts[[0, 2, 3]].tolist() == full_final.counts[[0, 2, 3]].tolist()
    np.testing.assert_array_equal(final.px, full_final.px[np.repeat([True, False, True, True],
                                                                    full_final.counts)])


def test_failed_events_stay_in_place_in_the_files(tmp_path, monkeypatch):
    from rs3l_coffea.generation.pythia import VariantShower

    showered = VariantShower.next_batch

    def second_event_fails(self, n):
        batch, indices = showered(self, n)
        return _with_failed_event(batch, 1), indices

    monkeypatch.setattr(VariantShower, "next_batch", second_event_fails)
    config = GenerationConfig(process="zh_bb", n_events=6, out_dir=tmp_path, variants=("nominal",),
                              seed=3, batch_size=3, isr=False)
    tree = read(generate_chunk(config, 0)[0])
    event = collection(tree, "Event")
    assert ak.flatten(event.HardEventID).tolist() == list(range(6))
    assert ak.flatten(event.Weight).tolist() == [1, 0, 1, 1, 0, 1]
    assert ak.flatten(event.PartonLevelSize).tolist()[1::3] == [-1, -1]
    for branch in ("EFlowTrack_size", "EFlowPhoton_size", "EFlowNeutralHadron_size"):
        assert tree[branch].tolist()[1::3] == [0, 0] and min(tree[branch].tolist()[::3]) > 0
    particle = collection(tree, "Particle")
    assert ak.all(particle[1].Status >= 4) and ak.all(particle[4].Status >= 4)
    assert ak.sum(particle[0].Status == 1) > 20


def test_write_batching_does_not_change_the_file_content(tmp_path, monkeypatch):
    config = dict(process="zj", n_events=12, variants=("nominal",), seed=2, batch_size=4, isr=False)
    (together,) = generate_chunk(GenerationConfig(out_dir=tmp_path / "a", **config), 0)
    monkeypatch.setattr("rs3l_coffea.generation.run.WRITE_EVENTS", 1)
    (separately,) = generate_chunk(GenerationConfig(out_dir=tmp_path / "b", **config), 0)
    with uproot.open(together) as a, uproot.open(separately) as b:
        assert a["Delphes/Particle/Particle.PT"].num_baskets == 1
        assert b["Delphes/Particle/Particle.PT"].num_baskets == 3
    ref, again = read(together), read(separately)
    assert ref.fields == again.fields
    for field in ref.fields:
        assert ak.to_list(ref[field]) == ak.to_list(again[field]), field


def test_allocator_setting_applies_once_per_process_and_can_be_switched_off():
    import os
    import platform
    import subprocess
    import sys

    code = ("from rs3l_coffea.allocator import retain_freed_memory as keep; "
            "print(keep(), keep())")

    def run(**env):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={**os.environ, **env})
        return done.stdout.split()

    glibc = platform.libc_ver()[0] == "glibc"
    assert run(RS3L_MALLOC_TUNING="1") == ([str(glibc)] * 2)
    assert run(RS3L_MALLOC_TUNING="0") == ["False", "False"]


def test_charge_table_agrees_with_pythia_particle_data():
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    table = ChargeTable(pythia)
    # dense (|id| < 2**14) and sparse ids, particles and antiparticles, an unknown id (0 charge)
    ids = np.array([211, -211, 2212, -2212, 22, 11, -11, 13, 5122, -5122, 2112, 100443,
                    -100213, 9010221, 1000022, 30443, 12345678])
    expected = [float(pythia.particleData.charge(int(pid))) for pid in ids]
    assert table(ids).tolist() == expected
    assert table(ids[::-1]).tolist() == expected[::-1]  # cached values, other order


def test_chunk_seeds_are_independent():
    from rs3l_coffea.generation.config import PYTHIA_SEED_MAX, derive_seed

    seeds = {derive_seed(1, chunk, stream) for chunk in range(50) for stream in (1, 100, 101, 300)}
    assert len(seeds) == 200 and all(1 <= s < PYTHIA_SEED_MAX for s in seeds)
    assert derive_seed(1, 0, 1) == derive_seed(1, 0, 1) != derive_seed(2, 0, 1)


def test_rehadronize_reproduces_the_nominal_parton_record_exactly():
    """Compare the partonic part of the event records (hadronization only appends entries)."""

    spec = PROCESSES["zj"]
    hard = generate_hard_events(spec.settings, spec.target_ids, 25, seed=4)
    settings = shower_settings((), isr=True, mpi=False, seed=77)
    nominal = make_variant_shower(hard, settings, 6500.0, record_states=True)
    first, _ = nominal.next_batch(25)
    rehad = make_variant_shower(hard, settings, 6500.0, replay=nominal.hook.recorded,
                                hadronization_seed=78)
    second, _ = rehad.next_batch(25)
    different_hadrons = 0
    for k in range(25):
        size = nominal.hook.parton_level_size[k]
        assert rehad.hook.parton_level_size[k] == size
        a, b = first[k].prt, second[k].prt
        for field in ("id", "mother1", "col", "acol"):
            assert ak.to_list(a[field][:size]) == ak.to_list(b[field][:size])
        assert ak.to_list(a.p.px[:size]) == ak.to_list(b.p.px[:size])
        different_hadrons += ak.to_list(a.id[size:]) != ak.to_list(b.id[size:])
    assert different_hadrons >= 20


def test_parton_level_size_from_the_record_matches_pythia_and_the_hook_changes_nothing():
    """The Event.PartonLevelSize of the files is read off the record (no hook needed)."""

    spec = PROCESSES["zh_bb"]
    hard = generate_hard_events(spec.settings, spec.target_ids, 30, seed=6)
    for variant in ("nominal", "vincia"):
        settings = shower_settings(VARIANTS[variant][1], isr=True, mpi=False, seed=31)
        hooked = make_variant_shower(hard, settings, 6500.0, record_states=True)
        with_hook, _ = hooked.next_batch(30)
        plain = make_variant_shower(hard, settings, 6500.0)
        assert plain.hook is None
        without_hook, _ = plain.next_batch(30)
        sizes = ShoweredParticles.from_batch(without_hook).parton_level_sizes()
        assert sizes.tolist() == [hooked.hook.parton_level_size[k] for k in range(30)], variant
        assert np.all(sizes > 10) and np.all(sizes < ak.to_numpy(ak.num(without_hook.prt)))
        assert ak.to_list(with_hook.prt.p.px) == ak.to_list(without_hook.prt.p.px), variant
