"""GPU validation: one prepared script that exercises every CUDA path the README promises.

Usage (see docs/gpu.md for the whole device recipe)::

    python benchmarks/gpu_check.py --prepare scratch/gpu-check      # CPU side: small real ntuple
    python benchmarks/gpu_check.py --data scratch/gpu-check --out gpu_check.md   # on the GPU machine

Prints one markdown table (check, device, result, status) and exits non-zero when any check
FAILs. Without CUDA every CUDA row is reported SKIP and the CPU rows still run as real checks, so
the script runs in the test suite (``tests/test_gpu_check.py``) and cannot rot.

Checks
------
* parity: the default model and (when its checkpoint is in the data folder) the published
  backbone, CUDA float32 vs CPU float32 on real generated jets. Bound: per-jet relative L2
  difference of the embedding below ``1e-4`` for at least 99% of the jets; the rest is allowed
  because the k-th neighbour of a near-tie can flip between devices (measured on CPU vs PyG:
  ~0.2% of jets in float32, see ../shared/NOTES.md), and the score AUC must agree to 1e-3.
  bfloat16 / float16: the AUC of the head score may move by at most ``AUC_BOUND_LOW_PRECISION``
  (0.005, below the statistical uncertainty of an AUC on a few thousand jets, so a smaller change
  cannot matter to any figure we publish) and the Wasserstein-1 distance between the low- and
  full-precision score distributions must stay below ``W1_BOUND_LOW_PRECISION`` (0.01 on scores
  in [0, 1]).
* inference throughput of ``InferenceEngine`` (particle budgets x precisions) and
  ``RS3LTagger`` on awkward jets, with peak GPU memory; the table names the fastest budget.
* training: pretraining and fine-tuning steps per second (AMP on/off) on real jets, one
  exact-resume round trip through ``rs3l train`` (2 epochs at once vs 1 + ``--resume``), and a
  ``torchrun --nproc_per_node=1`` DDP smoke run.
* ``rs3l process`` on the bundled fileset with ``--device cuda`` and with the dask executor on
  one GPU worker: histograms equal to the CPU run within the parity bound.

Timings are medians of a few repeats after a warm-up; on a shared machine say so when quoting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_NAME = "published.pt"
AUC_BOUND_FP32 = 1e-3
AUC_BOUND_LOW_PRECISION = 5e-3
W1_BOUND_LOW_PRECISION = 1e-2
EMBEDDING_RTOL = 1e-4
NEAR_TIE_FRACTION = 0.01
HIST_RTOL = 1e-3  # relative tolerance on histogram bin contents (a score moving across a bin edge)


@dataclass
class Row:
    check: str
    device: str
    result: str
    status: str  # PASS, FAIL or SKIP

    def markdown(self) -> str:
        cells = (self.check, self.device, self.result, self.status)
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


class Checks:
    """Collects rows; a check that raises becomes a FAIL row with the error message."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.rows: list[Row] = []

    def add(self, check: str, device: str, result: str, ok: bool | None) -> None:
        status = "SKIP" if ok is None else ("PASS" if ok else "FAIL")
        self.rows.append(Row(check, device, result, status))
        print(self.rows[-1].markdown(), flush=True)

    def run(self, check: str, device: str, function: Callable[[], tuple[str, bool]]) -> None:
        if device.startswith("cuda") and not self.cuda:
            self.add(check, device, "no CUDA device", None)
            return
        try:
            result, ok = function()
        except Exception as error:  # a broken path is a failed check, reported in the table
            self.add(check, device, f"{type(error).__name__}: {error}"[:300], False)
            return
        self.add(check, device, result, ok)

    @property
    def failed(self) -> bool:
        return any(row.status == "FAIL" for row in self.rows)

    def table(self) -> str:
        lines = ["| check | device | result | status |", "|---|---|---|---|"]
        return "\n".join(lines + [row.markdown() for row in self.rows]) + "\n"


# -- data ------------------------------------------------------------------------------------


def prepare(data_dir: Path, events: int, seed: int) -> None:
    """CPU side: generate H->bb and Z+jet events (nominal + seed), build ntuples, copy weights."""
    from rs3l_coffea.generation import GenerationConfig, generate
    from rs3l_coffea.training.build import build_ntuples

    data_dir.mkdir(parents=True, exist_ok=True)
    generated = data_dir / "generated"
    for process in ("zh_bb", "zj"):
        generate(GenerationConfig(process=process, n_events=events, out_dir=generated,
                                  variants=("nominal", "seed"), seed=seed, chunk_size=events))
    build_ntuples(sorted(generated.glob("*.root")), data_dir / "ntuple")
    shutil.rmtree(generated)  # the ntuple is all the device needs (keeps the carried tree small)
    published = REPO.parent / "shared" / "reference" / "rs3l-published" / "mar20_run0.pt"
    if published.is_file():
        shutil.copyfile(published, data_dir / PUBLISHED_NAME)
    print(f"prepared {data_dir} ({sum(f.stat().st_size for f in data_dir.rglob('*') if f.is_file()) / 1e6:.1f} MB)")


def load_jets(data_dir: Path, limit: int) -> dict[str, np.ndarray]:
    """Nominal jets of the prepared ntuple: features, mask, label (1 = H->bb)."""
    import uproot

    shards = sorted((data_dir / "ntuple").glob("shard_*.root"))
    if not shards:
        raise FileNotFoundError(f"no ntuple shards in {data_dir / 'ntuple'}: run --prepare first")
    rows = uproot.concatenate([f"{s}:rs3l" for s in shards], ["features", "mask", "label", "variant"], library="np")
    keep = np.flatnonzero((rows["label"] >= 0) & (rows["variant"] >= 0))[:limit]  # labelled, paired jets
    return {key: np.ascontiguousarray(rows[key][keep]) for key in ("features", "mask", "label")}


# -- helpers ---------------------------------------------------------------------------------


def _median_time(function: Callable[[], Any], repeats: int, synchronize: bool) -> float:
    import torch

    function()  # warm-up (CUDA context, kernels, allocator)
    times = []
    for _ in range(repeats):
        if synchronize:
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if synchronize:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(label == 1, score))


def _relative_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norm = np.maximum(np.linalg.norm(b, axis=1), np.finfo(np.float32).tiny)
    return np.linalg.norm(a.astype(np.float64) - b, axis=1) / norm


def _models(data_dir: Path) -> dict[str, Any]:
    from rs3l_coffea.inference.tagger import default_model_candidates
    from rs3l_coffea.nn import load_model

    model_path = next(p for p in default_model_candidates() if p.with_suffix(".safetensors").is_file())
    models: dict[str, Any] = {"default model": load_model(model_path)[0]}
    published = data_dir / PUBLISHED_NAME
    if published.is_file():
        from rs3l_coffea.nn.published import load_published_rs3l

        models["published backbone"] = load_published_rs3l(published)
    return models


def _engine(model: Any, device: str, **kwargs: Any) -> Any:
    from rs3l_coffea.inference.engine import InferenceEngine

    return InferenceEngine(model, device=device, **kwargs)


# -- checks ----------------------------------------------------------------------------------


def check_parity(checks: Checks, jets: dict[str, np.ndarray], data_dir: Path) -> None:
    import torch
    from scipy.stats import wasserstein_distance

    x, mask, label = jets["features"], jets["mask"], jets["label"]
    for name, model in _models(data_dir).items():
        reference = _engine(model, "cpu").run(x, mask)

        def direct(model: Any = model, reference: Any = reference) -> tuple[str, bool]:
            # The engine (sorted, trimmed batches) against one plain forward pass per jet.
            picks = np.linspace(0, len(x) - 1, num=min(len(x), 64), dtype=int)
            with torch.no_grad():
                plain = np.concatenate([
                    model.eval()(torch.from_numpy(x[i : i + 1]), torch.from_numpy(mask[i : i + 1]))[0].numpy()
                    for i in picks
                ])
            difference = _relative_l2(reference[0][picks], plain)
            far = float((difference > EMBEDDING_RTOL).mean())
            return f"{len(picks)} jets: engine vs plain forward, max rel. L2 {difference.max():.1e}", far <= NEAR_TIE_FRACTION

        checks.run(f"engine vs plain forward: {name}", "cpu", direct)
        has_score = reference[1].shape[1] > 0
        reference_auc = _auc(reference[1][:, 0], label) if has_score else float("nan")

        def fp32(model: Any = model, reference: Any = reference, has_score: bool = has_score,
                 reference_auc: float = reference_auc) -> tuple[str, bool]:
            embedding, scores = _engine(model, "cuda").run(x, mask)
            difference = _relative_l2(embedding, reference[0])
            far = float((difference > EMBEDDING_RTOL).mean())
            ok = far <= NEAR_TIE_FRACTION
            text = (f"{len(x)} jets: embedding rel. L2 median {np.median(difference):.1e}, "
                    f"max {difference.max():.1e}, {100 * far:.2f}% above {EMBEDDING_RTOL:g}")
            if has_score:
                delta = abs(_auc(scores[:, 0], label) - reference_auc)
                ok = ok and delta <= AUC_BOUND_FP32
                text += f"; AUC {reference_auc:.4f}, abs dAUC {delta:.1e}"
            return text, ok

        checks.run(f"parity float32 CUDA vs CPU: {name}", "cuda", fp32)
        if not has_score:
            continue
        for precision in ("bfloat16", "float16"):
            def low(model: Any = model, reference: Any = reference, precision: str = precision,
                    reference_auc: float = reference_auc) -> tuple[str, bool]:
                _, scores = _engine(model, "cuda", precision=precision).run(x, mask)
                delta = abs(_auc(scores[:, 0], label) - reference_auc)
                w1 = wasserstein_distance(scores[:, 0], reference[1][:, 0])
                ok = bool(np.isfinite(scores).all()) and delta <= AUC_BOUND_LOW_PRECISION and w1 <= W1_BOUND_LOW_PRECISION
                return f"abs dAUC {delta:.1e} (bound {AUC_BOUND_LOW_PRECISION:g}), W1 to float32 {w1:.1e} (bound {W1_BOUND_LOW_PRECISION:g})", ok

            checks.run(f"parity {precision} CUDA vs CPU float32: {name}", "cuda", low)


def check_engine_throughput(checks: Checks, jets: dict[str, np.ndarray], data_dir: Path, repeats: int) -> None:
    import torch

    model = _models(data_dir)["default model"]
    x, mask = jets["features"], jets["mask"]

    def cpu() -> tuple[str, bool]:
        engine = _engine(model, "cpu", threads=1)
        seconds = _median_time(lambda: engine.run(x, mask), repeats, synchronize=False)
        return f"{len(x) / seconds:,.0f} jets/s (1 thread, budget {engine.particle_budget})", seconds > 0

    checks.run("InferenceEngine throughput", "cpu", cpu)
    best: dict[str, tuple[float, int]] = {}
    for precision in ("float32", "bfloat16", "float16"):
        for budget in (1024, 4096, 16384, 65536):
            def cuda(precision: str = precision, budget: int = budget) -> tuple[str, bool]:
                torch.cuda.reset_peak_memory_stats()
                engine = _engine(model, "cuda", precision=precision, particle_budget=budget)
                seconds = _median_time(lambda: engine.run(x, mask), repeats, synchronize=True)
                rate = len(x) / seconds
                if rate > best.get(precision, (0.0, 0))[0]:
                    best[precision] = (rate, budget)
                peak = torch.cuda.max_memory_allocated() / 2**20
                return f"{rate:,.0f} jets/s, peak GPU memory {peak:,.0f} MiB", rate > 0

            checks.run(f"InferenceEngine {precision}, budget {budget}", "cuda", cuda)
    for precision, (rate, budget) in best.items():
        checks.add(f"fastest budget, {precision}", "cuda", f"{budget} ({rate:,.0f} jets/s)", True)


def check_tagger(checks: Checks, repeats: int) -> None:
    """RS3LTagger on awkward jets of the bundled sample (features built on the CPU each call)."""
    from rs3l_coffea.inference.tagger import RS3LTagger
    from rs3l_coffea.io import load_jets as read_jets
    from rs3l_coffea.samples import bundled_files

    jets, constituents = [], []
    for path in bundled_files().values():
        j, c = read_jets(path, mode="eager")
        jets.append(j)
        constituents.append(c)
    import awkward as ak

    jets_all, constituents_all = ak.concatenate(jets), ak.concatenate(constituents)
    n_jets = int(ak.sum(ak.num(jets_all, axis=1)))
    reference = np.asarray(ak.flatten(RS3LTagger.default(device="cpu")(jets_all, constituents_all).score))

    def run(device: str) -> tuple[str, bool]:
        tagger = RS3LTagger.default(device=device)
        seconds = _median_time(lambda: tagger(jets_all, constituents_all), repeats, synchronize=device == "cuda")
        score = np.asarray(ak.flatten(tagger(jets_all, constituents_all).score))
        agree = bool(np.allclose(score, reference, rtol=0, atol=1e-4))
        return f"{n_jets / seconds:,.0f} jets/s incl. features ({n_jets} jets); scores vs CPU within 1e-4: {agree}", agree

    checks.run("RS3LTagger throughput", "cpu", lambda: run("cpu"))
    checks.run("RS3LTagger throughput", "cuda", lambda: run("cuda"))


def _batch(jets: dict[str, np.ndarray], size: int, offset: int) -> dict[str, Any]:
    import torch

    pick = (np.arange(size) + offset) % len(jets["label"])
    partner = (pick + 1) % len(jets["label"])  # a stand-in partner: the timing needs shapes, not physics
    return {
        "x": torch.from_numpy(jets["features"][pick]),
        "mask": torch.from_numpy(jets["mask"][pick]),
        "x_partner": torch.from_numpy(jets["features"][partner]),
        "mask_partner": torch.from_numpy(jets["mask"][partner]),
        "label": torch.from_numpy(jets["label"][pick].astype(np.int64)),
    }


def check_training_steps(checks: Checks, jets: dict[str, np.ndarray], steps: int) -> None:
    import torch

    from rs3l_coffea.nn import build_model
    from rs3l_coffea.training.config import load_config
    from rs3l_coffea.training.partners import resim_partner
    from rs3l_coffea.training.trainer import TrainingView, classification_loss, contrastive_loss

    config = load_config(None, ["loss.temperature=0.1"])

    def run(device_name: str, task: str, amp: bool) -> tuple[str, bool]:
        device = torch.device(device_name)
        torch.manual_seed(0)
        heads = [{"name": "score"}] if task == "finetune" else []
        model = build_model({"heads": heads} if heads else {}).to(device)
        if task == "finetune":  # fixed backbone: only the head trains
            for parameter in model.backbone.parameters():
                parameter.requires_grad_(False)
        view = TrainingView(model)
        parameters = [p for p in view.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=1e-3)
        scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")
        pairs = 100
        batches = [_batch(jets, pairs, i * pairs) for i in range(4)]
        losses: list[float] = []

        def step(i: list[int] = [0]) -> None:  # noqa: B006 - a step counter shared by the closures
            batch = batches[i[0] % len(batches)]
            i[0] += 1
            optimizer.zero_grad(set_to_none=True)
            context = torch.autocast("cuda", dtype=torch.bfloat16) if amp else torch.autocast(device.type, enabled=False)
            with context:
                if task == "pretrain":
                    loss = contrastive_loss(view, batch, resim_partner, torch.Generator(), config, device=device)
                else:
                    loss = classification_loss(view, batch, device)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))

        seconds = _median_time(step, steps, synchronize=device.type == "cuda")
        jets_per_step = 2 * pairs if task == "pretrain" else pairs
        ok = all(np.isfinite(losses))
        return f"{1 / seconds:.2f} steps/s ({jets_per_step / seconds:,.0f} jets/s); losses finite: {ok}", ok

    checks.run("pretrain step (paper-size DGCNN, 100 pairs)", "cpu", lambda: run("cpu", "pretrain", False))
    for amp in (False, True):
        label = "AMP bf16" if amp else "float32"
        checks.run(f"pretrain step, {label}", "cuda", lambda amp=amp: run("cuda", "pretrain", amp))
        checks.run(f"finetune step (fixed), {label}", "cuda", lambda amp=amp: run("cuda", "finetune", amp))


def _rs3l(*args: str, env: dict[str, str] | None = None, module: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rs3l_coffea", *args] if module is None else [sys.executable, "-m", module, *args]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} exited {result.returncode}: {(result.stderr or result.stdout)[-400:]}")
    return result


TINY_MODEL = "model={backbone: {width: 16, k: 8, conv_layers: 1, output_hidden: [16], output_dim: 8}}"


def _train(out: Path, data: Path, device: str, epochs: int, *extra: str, launcher: list[str] | None = None) -> None:
    args = ["train", "pretrain", "--data", str(data / "ntuple"), "--out", str(out), "--epochs", str(epochs),
            "--batch-size", "32", "--seed", "1", "-q", "-s", TINY_MODEL, "-s", f"device={device}",
            "-s", "max_steps_per_epoch=3", *extra]
    if launcher is None:
        _rs3l(*args)
    else:
        _rs3l(*launcher, "-m", "rs3l_coffea", *args, module="torch.distributed.run")


def _weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    files = sorted(out.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no model written in {out}")
    return load_file(str(files[0]))


def check_resume_and_ddp(checks: Checks, data: Path, scratch: Path) -> None:
    def resume(device: str) -> tuple[str, bool]:
        straight, resumed = scratch / f"straight-{device}", scratch / f"resumed-{device}"
        _train(straight, data, device, 2)
        _train(resumed, data, device, 1)
        _train(resumed, data, device, 2, "--resume")
        a, b = _weights(straight), _weights(resumed)
        worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
        # CPU: bit-identical (documented guarantee of the trainer); CUDA: scatter/index_add kernels
        # are not deterministic, so report the largest difference and accept float32 rounding.
        ok = worst == 0.0 if device == "cpu" else worst < 1e-4
        return f"2 epochs vs 1 + resume: max abs dw = {worst:.1e}", ok

    def ddp(device: str) -> tuple[str, bool]:
        out = scratch / f"ddp-{device}"
        _train(out, data, device, 1, launcher=["--standalone", "--nproc_per_node=1"])
        weights = _weights(out)
        ok = all(np.isfinite(v).all() for v in weights.values())
        return f"torchrun --nproc_per_node=1: model written, {len(weights)} finite tensors", ok

    for device in ("cpu", "cuda"):
        checks.run("exact resume round trip (rs3l train)", device, lambda d=device: resume(d))
        checks.run("DDP smoke run (torchrun)", device, lambda d=device: ddp(d))


def _histograms(path: Path) -> dict[str, Any]:
    from coffea.util import load

    output = load(str(path))  # our own file, written a moment ago by this script
    return dict(output["hists"])


def _by_category(histogram: Any) -> dict[tuple[str, ...], np.ndarray]:
    """Bin contents keyed by the labels of the category axes (executors may order them differently)."""
    import itertools

    categorical = [axis for axis in histogram.axes if axis.traits.discrete and not axis.traits.ordered]
    out = {}
    for labels in itertools.product(*[list(axis) for axis in categorical]):
        selection = {axis.name: label for axis, label in zip(categorical, labels, strict=True)}
        out[tuple(str(label) for label in labels)] = np.asarray(histogram[selection].values(flow=True))
    return out


def _compare_histograms(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, int]:
    """Largest relative L1 difference over histograms and categories (missing categories count fully)."""
    worst, compared = 0.0, 0
    for name in set(a) | set(b):
        if name not in a or name not in b:
            return float("inf"), compared
        ca, cb = _by_category(a[name]), _by_category(b[name])
        for key in set(ca) | set(cb):
            va, vb = ca.get(key), cb.get(key)
            if va is None or vb is None:
                return float("inf"), compared
            total = max(float(np.abs(vb).sum()), 1.0)
            worst = max(worst, float(np.abs(va - vb).sum()) / total)
        compared += 1
    return worst, compared


def check_process(checks: Checks, scratch: Path) -> None:
    from rs3l_coffea.samples import bundled_fileset

    fileset = scratch / "fileset.json"
    fileset.write_text(json.dumps(bundled_fileset(variants=("nominal", "fsr_up"))))
    common = ["process", str(fileset), "--chunk-size", "20", "-q"]
    cpu_out = scratch / "process-cpu.coffea"
    try:
        _rs3l(*common, "--executor", "iterative", "--device", "cpu", "--out", str(cpu_out))
    except Exception as error:
        checks.add("rs3l process, CPU reference", "cpu", str(error)[:300], False)
        return
    reference = _histograms(cpu_out)
    checks.add("rs3l process, CPU reference", "cpu", f"{len(reference)} histograms", bool(reference))

    def compare(executor: str, extra: list[str], device: str) -> tuple[str, bool]:
        out = scratch / f"process-{executor}-{device}.coffea"
        _rs3l(*common, "--executor", executor, *extra, "--device", device, "--out", str(out))
        worst, compared = _compare_histograms(_histograms(out), reference)
        return f"{compared} histograms, largest relative L1 difference {worst:.1e} (bound {HIST_RTOL:g})", worst <= HIST_RTOL

    checks.run("rs3l process dask (1 worker) vs iterative", "cpu", lambda: compare("dask", ["--workers", "1"], "cpu"))
    checks.run("rs3l process --device cuda vs CPU", "cuda", lambda: compare("iterative", [], "cuda"))
    checks.run("rs3l process dask, 1 GPU worker vs CPU", "cuda", lambda: compare("dask", ["--workers", "1"], "cuda"))


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path, help="CPU side: write the small real-jet ntuple here and stop.")
    parser.add_argument("--events", type=int, default=3000, help="hard events per process for --prepare.")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--data", type=Path, default=REPO / "scratch" / "gpu-check", help="prepared data folder.")
    parser.add_argument("--jets", type=int, default=4000, help="at most this many jets in the checks.")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per row.")
    parser.add_argument("--quick", action="store_true", help="CPU rows only, small sizes (test suite).")
    parser.add_argument("--out", type=Path, help="also write the table here (markdown).")
    args = parser.parse_args(argv)

    if args.prepare is not None:
        prepare(args.prepare, args.events, args.seed)
        return 0

    import torch

    cuda = torch.cuda.is_available() and not args.quick
    device_name = torch.cuda.get_device_name(0) if cuda else "none"
    print(f"torch {torch.__version__}, CUDA device: {device_name}\n")
    print("| check | device | result | status |\n|---|---|---|---|", flush=True)
    checks = Checks(cuda)
    jets = load_jets(args.data, args.jets)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        check_parity(checks, jets, args.data)
        check_engine_throughput(checks, jets, args.data, args.repeats)
        check_tagger(checks, args.repeats)
        check_training_steps(checks, jets, args.steps)
        check_resume_and_ddp(checks, args.data, scratch)
        check_process(checks, scratch)
    table = checks.table()
    header = f"torch {torch.__version__}; CUDA device: {device_name}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n"
    print("\n" + header + table)
    if args.out is not None:
        from rs3l_coffea.atomic import atomic_open

        with atomic_open(args.out) as handle:
            handle.write(header + table)
    failed = [row.check for row in checks.rows if row.status == "FAIL"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
