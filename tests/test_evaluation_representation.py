"""Linear/kNN probes and autoencoder anomaly detection on constructed embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rs3l_coffea.evaluation import (
    EvaluationInputError,
    anomaly_detection,
    knn_probe,
    linear_probe,
)

DIMS = 8


def _blobs(separation: float, n_per_class: int = 300, n_classes: int = 2, seed: int = 1):
    """Gaussian classes in 8-d whose means sit ``separation`` apart along distinct axes."""
    rng = np.random.default_rng(seed)
    x, y = [], []
    for c in range(n_classes):
        mean = np.zeros(DIMS)
        mean[c % DIMS] = separation
        x.append(rng.normal(mean, 1.0, size=(n_per_class, DIMS)))
        y.append(np.full(n_per_class, c))
    return np.concatenate(x), np.concatenate(y)


def test_linear_probe_separable_vs_inseparable() -> None:
    separable = linear_probe(*_blobs(separation=12.0))
    for name in ("logistic", "lda"):
        assert separable[name].auc > 0.999
        assert separable[name].accuracy > 0.99
        assert separable[name].n_test == 180 and separable[name].n_train == 420
    inseparable = linear_probe(*_blobs(separation=0.0))
    for name in ("logistic", "lda"):
        assert abs(inseparable[name].auc - 0.5) < 0.1
        assert abs(inseparable[name].accuracy - 0.5) < 0.1


def test_linear_probe_multiclass_and_direction_only() -> None:
    x, y = _blobs(separation=12.0, n_per_class=120, n_classes=3)
    result = linear_probe(x * 1e6, y, l2_normalize=True)  # only the direction is used
    assert result["logistic"].auc > 0.99 and result["lda"].accuracy > 0.95


def test_knn_probe_separable_vs_inseparable() -> None:
    assert knn_probe(*_blobs(separation=12.0), k=15).accuracy > 0.99
    assert abs(knn_probe(*_blobs(separation=0.0), k=15).accuracy - 0.5) < 0.1


def test_anomaly_autoencoder_flags_off_manifold_jets() -> None:
    # Standard-Model embeddings live near a 2-d plane of the 8-d space; the anomaly does not.
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    basis = np.linalg.qr(rng.normal(size=(DIMS, 2)))[0].T  # 2 orthonormal directions
    sm = rng.normal(size=(800, 2)) @ basis * 3.0 + rng.normal(scale=0.05, size=(800, DIMS))
    anomaly = rng.normal(scale=1.5, size=(200, DIMS))
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    result = anomaly_detection(sm, anomaly, bottleneck=2, epochs=40, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    assert anomaly_detection(sm, anomaly, bottleneck=2, epochs=40, seed=0) == result  # seeded
    assert result.auc > 0.9
    assert result.n_train == 560 and result.n_test_background == 240
    assert result.n_test_anomaly == 200 and np.isfinite(result.final_train_loss)
    # Control: an "anomaly" drawn like the SM jets is not separable by reconstruction error.
    sm_like = rng.normal(size=(200, 2)) @ basis * 3.0 + rng.normal(scale=0.05, size=(200, DIMS))
    assert anomaly_detection(sm, sm_like, bottleneck=2, epochs=40, seed=0).auc < 0.7


def test_probe_bad_inputs() -> None:
    x, y = _blobs(separation=1.0, n_per_class=10)
    with pytest.raises(EvaluationInputError, match="at least two classes"):
        linear_probe(x, np.zeros(len(x), dtype=int))
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(EvaluationInputError, match="first in row 3"):
        knn_probe(bad, y)
    with pytest.raises(EvaluationInputError, match="one per sample"):
        linear_probe(x, y[:-1])
    with pytest.raises(EvaluationInputError, match="dims"):
        anomaly_detection(x, x[:, :4])
