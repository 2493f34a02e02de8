"""Inference: the batched :class:`InferenceEngine` (torch / ONNX Runtime), no coffea imports here.

The coffea column producer lives in ``rs3l_coffea.inference.tagger`` and is imported from there.
"""

from rs3l_coffea.inference.engine import InferenceEngine, plan_batches, torch_threads
from rs3l_coffea.inference.tagger import RS3LTagger  # awkward only; coffea/torch load lazily

__all__ = ["InferenceEngine", "RS3LTagger", "plan_batches", "torch_threads"]
