"""The coffea plumbing behind the ready processors (``processors/``, installed as
``rs3l_coffea.processors``): what a processor does with a chunk, how a fileset is run, and the
``coffea.ml_tools`` adapter.

* :mod:`rs3l_coffea.coffea_processing.analysis` -- per-chunk logic: the events x jets table
  (kinematics, observables, selection, RS3L columns), the histogram layout and filling, the
  cutflow and parquet skims;
* :mod:`rs3l_coffea.coffea_processing.runner` -- filesets (reading, file checks), executors,
  the client-side preflight, chunk error handling and ``save_output`` (``rs3l process``);
* :mod:`rs3l_coffea.coffea_processing.torch_wrapper` -- :class:`RS3LTorchWrapper`, the same
  model through ``coffea.ml_tools.torch_wrapper`` for analyses standardised on it.

The model side (the bounded-memory engine and the :class:`~rs3l_coffea.inference.RS3LTagger`
column producer) stays in :mod:`rs3l_coffea.inference`; this package uses it and never the
other way round (docs/architecture.md). Import the modules themselves: this ``__init__``
imports nothing, so ``import rs3l_coffea.coffea_processing`` pulls in neither coffea nor torch.
"""
