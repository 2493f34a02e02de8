"""Tests of a frozen jet representation, as in the seed papers.

* Linear classifier test (JetCLR): logistic regression and LDA trained on the frozen
  embeddings of a labelled split, scored on a held-out split (AUC and accuracy).
* k-nearest-neighbour classification accuracy (Rieck et al.).
* Anomaly detection (Rieck et al.): a small autoencoder trained only on Standard-Model jets'
  embeddings; its reconstruction error is the anomaly score, evaluated as the AUC between held-out
  Standard-Model jets and an unseen signal.

All splits are stratified and seeded, so a result is reproducible from ``seed``. Features are
standardised with statistics of the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rs3l_coffea.evaluation._validation import EvaluationInputError, finite_2d, matching_labels


class _FittedClassifier(Protocol):
    """What :func:`_evaluate` reads from a fitted scikit-learn classifier or pipeline."""

    classes_: NDArray[Any]

    def predict(self, x: NDArray[np.float64]) -> NDArray[Any]: ...

    def predict_proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]: ...


@dataclass(frozen=True)
class ProbeResult:
    """Held-out performance of a classifier trained on frozen embeddings.

    ``auc`` is the binary ROC AUC, or the macro one-vs-rest AUC for more than two classes.
    """

    auc: float
    accuracy: float
    n_train: int
    n_test: int


@dataclass(frozen=True)
class AnomalyResult:
    """Autoencoder anomaly detection: AUC of reconstruction error, unseen signal vs held-out SM."""

    auc: float
    n_train: int
    n_test_background: int
    n_test_anomaly: int
    final_train_loss: float


def linear_probe(
    embeddings: ArrayLike,
    labels: ArrayLike,
    test_fraction: float = 0.3,
    seed: int = 0,
    l2_normalize: bool = False,
) -> dict[str, ProbeResult]:
    """Linear classifier test: ``{"logistic": ..., "lda": ...}`` on a held-out split.

    ``l2_normalize`` projects embeddings onto the unit sphere first (RS3L's contrastive loss
    only constrains their direction).
    """
    x_train, x_test, y_train, y_test = _split(embeddings, labels, test_fraction, seed, l2_normalize)
    models = {
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "lda": make_pipeline(StandardScaler(), LinearDiscriminantAnalysis()),
    }
    return {
        name: _evaluate(model.fit(x_train, y_train), x_test, y_test, x_train.shape[0])
        for name, model in models.items()
    }


def knn_probe(
    embeddings: ArrayLike,
    labels: ArrayLike,
    k: int = 15,
    test_fraction: float = 0.3,
    seed: int = 0,
    l2_normalize: bool = False,
) -> ProbeResult:
    """k-nearest-neighbour classification (Euclidean, on standardised embeddings)."""
    x_train, x_test, y_train, y_test = _split(embeddings, labels, test_fraction, seed, l2_normalize)
    if k < 1 or k > x_train.shape[0]:
        raise EvaluationInputError(f"k = {k} must be in [1, {x_train.shape[0]}] (training size)")
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k))
    return _evaluate(model.fit(x_train, y_train), x_test, y_test, x_train.shape[0])


def anomaly_detection(
    background_embeddings: ArrayLike,
    anomaly_embeddings: ArrayLike,
    bottleneck: int = 2,
    hidden: int = 16,
    epochs: int = 40,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    test_fraction: float = 0.3,
    seed: int = 0,
) -> AnomalyResult:
    """Train an autoencoder on SM embeddings; AUC of its reconstruction error (anomaly = 1).

    The autoencoder is ``d → hidden → bottleneck → hidden → d`` with ELU activations, trained
    with Adam on the mean squared error of standardised embeddings (CPU, threads as set by the
    caller). The anomaly sample is never seen in training; the background test part is held out.
    """
    import torch  # heavy import kept local: the rest of the evaluation stage needs no torch

    background = finite_2d(background_embeddings, "background_embeddings")
    anomaly = finite_2d(anomaly_embeddings, "anomaly_embeddings")
    if anomaly.shape[1] != background.shape[1]:
        raise EvaluationInputError(
            f"anomaly embeddings have {anomaly.shape[1]} dims, background {background.shape[1]}"
        )
    if not 0.0 < test_fraction < 1.0:
        raise EvaluationInputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train, test = train_test_split(background, test_size=test_fraction, random_state=seed)
    scaler = StandardScaler().fit(train)

    generator = torch.Generator().manual_seed(seed)
    dims = background.shape[1]
    # Layer initialisation draws from torch's global generator: seed it inside a fork so the
    # caller's random state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(
            torch.nn.Linear(dims, hidden),
            torch.nn.ELU(),
            torch.nn.Linear(hidden, bottleneck),
            torch.nn.ELU(),
            torch.nn.Linear(bottleneck, hidden),
            torch.nn.ELU(),
            torch.nn.Linear(hidden, dims),
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    x_train = torch.as_tensor(scaler.transform(train), dtype=torch.float32)
    loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        order = torch.randperm(x_train.shape[0], generator=generator)
        for start in range(0, x_train.shape[0], batch_size):
            batch = x_train[order[start : start + batch_size]]
            optimizer.zero_grad()
            loss = torch.mean((model(batch) - batch) ** 2)
            loss.backward()
            optimizer.step()

    def reconstruction_error(values: NDArray[np.float64]) -> NDArray[np.float64]:
        with torch.no_grad():
            x = torch.as_tensor(scaler.transform(values), dtype=torch.float32)
            return torch.mean((model(x) - x) ** 2, dim=1).double().numpy()

    scores = np.concatenate([reconstruction_error(test), reconstruction_error(anomaly)])
    truth = np.concatenate([np.zeros(len(test)), np.ones(len(anomaly))])
    return AnomalyResult(
        auc=float(roc_auc_score(truth, scores)),
        n_train=int(x_train.shape[0]),
        n_test_background=len(test),
        n_test_anomaly=len(anomaly),
        final_train_loss=float(loss.detach()),
    )


def _split(
    embeddings: ArrayLike,
    labels: ArrayLike,
    test_fraction: float,
    seed: int,
    l2_normalize: bool,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    x = finite_2d(embeddings, "embeddings")
    y = matching_labels(labels, x.shape[0], "labels")
    classes, counts = np.unique(y, return_counts=True)
    if classes.size < 2:
        raise EvaluationInputError(f"need at least two classes, got labels {classes.tolist()}")
    if counts.min() < 2:
        raise EvaluationInputError(
            f"class {classes[counts.argmin()]} has {counts.min()} jet(s); need >= 2 per class to split"
        )
    if not 0.0 < test_fraction < 1.0:
        raise EvaluationInputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if l2_normalize:
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms == 0).any():
            raise EvaluationInputError("an embedding is exactly zero: it has no direction")
        x = x / norms
    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


def _evaluate(
    model: _FittedClassifier, x_test: NDArray[np.float64], y_test: NDArray[np.int64], n_train: int
) -> ProbeResult:
    probabilities = model.predict_proba(x_test)
    if probabilities.shape[1] == 2:
        auc = roc_auc_score(y_test, probabilities[:, 1])
    else:
        auc = roc_auc_score(y_test, probabilities, multi_class="ovr", labels=model.classes_)
    return ProbeResult(
        auc=float(auc),
        accuracy=float(accuracy_score(y_test, model.predict(x_test))),
        n_train=n_train,
        n_test=len(y_test),
    )
