"""Inference, the model side: the batched :class:`InferenceEngine` (torch / ONNX Runtime) and
the :class:`RS3LTagger` column producer (``rs3l_coffea.inference.tagger``; awkward only, coffea
and torch load lazily).

Running processors over filesets, the histogram layout and the ``coffea.ml_tools`` adapter are
coffea plumbing and live in :mod:`rs3l_coffea.coffea_processing`, which imports this package.
"""

from rs3l_coffea.inference.engine import InferenceEngine, plan_batches, torch_threads
from rs3l_coffea.inference.tagger import RS3LTagger  # awkward only; coffea/torch load lazily

__all__ = ["InferenceEngine", "RS3LTagger", "plan_batches", "torch_threads"]
