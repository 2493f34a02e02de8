"""``TaggingProcessor`` and ``VariantProcessor``: thin coffea processors over
:mod:`rs3l_coffea.coffea_processing.analysis`.

Both run under ``processor.Runner`` (eager/virtual chunks, any executor) and under
``dataset_tools.apply_to_fileset`` (dask-awkward events; skims are not written there).

Output accumulator::

    {"hists": {name: hist.Hist}, "cutflow": {dataset: {events, jets, tagged_jets,
     selected_tagged_jets}}, "skims": [parquet paths]}

plus whatever a subclass's :meth:`TaggingProcessor.extra_output` hook adds (``rs3l demo`` adds
per-jet rows with truth labels this way instead of re-implementing ``process``).
"""

from __future__ import annotations

import os
from typing import Any

from coffea import processor

from rs3l_coffea._awkward import is_dask
from rs3l_coffea.coffea_processing import analysis
from rs3l_coffea.errors import ConfigError, InputFileError
from rs3l_coffea.features import JetSelection
from rs3l_coffea.inference.tagger import RS3LTagger


def _tagger(model: RS3LTagger | str | os.PathLike[str] | None) -> RS3LTagger:
    if model is None:
        return RS3LTagger.default()
    if isinstance(model, RS3LTagger):
        return model
    return RS3LTagger.load(model)


class TaggingProcessor(processor.ProcessorABC):
    """Tag jets with RS3L and histogram embedding directions, scores, N2, masses, pT per dataset.

    Args:
        model: an :class:`RS3LTagger`, a model path, or ``None`` for the shipped default.
        source: ``"auto"``, ``"delphes"``, ``"pfnano"`` or ``"nanoaod"``.
        jets: stored jet collection (PFNano/NanoAOD default ``FatJet``; Delphes reclusters).
        recluster_radius: recluster all candidates with anti-kT of this radius instead.
        puppi: PFNano/NanoAOD only: scale each candidate by its ``puppiWeight`` and drop weight-0
            candidates (off by default: the shipped model saw unweighted candidates).
        selection: jets that enter the histograms (default :meth:`JetSelection.permissive`);
            every jet is tagged and written to skims, with a ``selected`` flag.
        skim_dir: if given, write each chunk's jet table there as parquet.
        binning: override ``(bins, low, high)`` of histograms (see ``analysis.DEFAULT_BINNING``).
    """

    variant_axis = False

    def __init__(
        self,
        model: RS3LTagger | str | os.PathLike[str] | None = None,
        *,
        source: str = "auto",
        jets: str | None = None,
        recluster_radius: float | None = None,
        puppi: bool = False,
        selection: JetSelection | None = None,
        skim_dir: str | os.PathLike[str] | None = None,
        binning: dict[str, tuple[int, float, float]] | None = None,
    ) -> None:
        self.tagger = _tagger(model)
        self.source, self.jets, self.recluster_radius = source, jets, recluster_radius
        self.puppi = puppi
        self.selection = selection or self.default_selection()
        self.skim_dir = None if skim_dir is None else str(skim_dir)
        self.binning = binning

    @staticmethod
    def default_selection() -> JetSelection:
        """Jets entering the histograms when no selection is given."""
        return JetSelection.permissive()

    def variant(self, events: Any) -> Any:
        """Variant label(s) for the chunk (``None``: no variant axis)."""
        return None

    def process(self, events: Any) -> dict[str, Any]:
        from rs3l_coffea.io import jets_from_events

        metadata = dict(getattr(events, "metadata", {}) or {})
        dataset = str(metadata.get("dataset", "unknown"))
        origin = metadata.get("filename")
        jets, constituents = jets_from_events(
            events,
            source=self.source,
            jets=self.jets,
            recluster_radius=self.recluster_radius,
            puppi=self.puppi,
            origin=origin,
        )
        table = analysis.jet_table(jets, constituents, self.tagger, self.selection)
        dask = is_dask(table)
        hists = analysis.make_histograms(
            self.tagger.head_names,
            self.tagger.embedding_dim,
            variant_axis=self.variant_axis,
            dask=dask,
            binning=self.binning,
        )
        variant = self.variant(events)
        analysis.fill_histograms(
            hists,
            table,
            dataset=dataset,
            head_names=self.tagger.head_names,
            variant=variant,
        )
        skims = []
        if self.skim_dir is not None:
            start = int(metadata.get("entrystart", 0))
            stop = int(metadata.get("entrystop", start + len(table)))
            path = analysis.skim_path(self.skim_dir, dataset, str(origin), start, stop)
            skims.append(str(analysis.write_skim(path, table, entry_start=start)))
        output = {
            "hists": hists,
            "cutflow": {dataset: analysis.cutflow(events, table)},
            "skims": skims,
        }
        extra = self.extra_output(events, jets, table, dataset=dataset, variant=variant)
        clash = sorted(set(extra) & set(output))
        if clash:
            raise ConfigError(f"extra_output must not replace the accumulator keys {clash}")
        output.update(extra)
        return output

    def extra_output(
        self, events: Any, jets: Any, table: Any, *, dataset: str, variant: Any
    ) -> dict[str, Any]:
        """Hook for subclasses: more accumulator entries from one chunk (default: none).

        Called at the end of :meth:`process` with the chunk's ``events``, the reader's ``jets``
        (events x jets), the :func:`~rs3l_coffea.coffea_processing.analysis.jet_table` ``table``,
        the dataset name and the chunk's variant (``None``, a name, or per-event codes). The
        returned values must be coffea-accumulatable (dicts, lists, numbers, histograms).
        """
        return {}

    def postprocess(self, accumulator: Any) -> Any:
        return accumulator


class VariantProcessor(TaggingProcessor):
    """:class:`TaggingProcessor` for re-simulated samples (``rs3l generate``): every histogram
    gets a ``variant`` StrCategory axis, ready for Wasserstein tables across variants.

    The variant comes from the fileset metadata key ``variant`` when present, else from the
    file's ``Event.VariantCode`` branch. Default selection: :meth:`JetSelection.generated`.
    """

    variant_axis = True

    @staticmethod
    def default_selection() -> JetSelection:
        return JetSelection.generated()

    def variant(self, events: Any) -> Any:
        metadata = dict(getattr(events, "metadata", {}) or {})
        if metadata.get("variant") is not None:
            return str(metadata["variant"])
        if "Event" not in events.fields or "VariantCode" not in events.Event.fields:
            raise InputFileError(
                f"{metadata.get('filename', 'input')}: no variant label: the file has no "
                "Event.VariantCode branch and the fileset gives no 'variant' metadata"
            )
        codes = events.Event.VariantCode
        if codes.ndim == 1:  # DelphesSchema makes Event a singleton per event
            return codes
        # A list-per-event Event collection (other schemas): Delphes writes exactly one entry.
        if is_dask(codes):
            import dask_awkward as dak

            return dak.firsts(codes, axis=1)
        import awkward as ak

        return ak.firsts(codes, axis=1)
