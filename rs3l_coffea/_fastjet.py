"""FastJet for our readers and observables, without its banner on standard output.

FastJet prints a 13-line banner to ``std::cout`` the first time a ``ClusterSequence`` runs in a
process. Under ``rs3l`` commands, coffea workers and scripts that write results to standard
output, it corrupted pipes and logs, so we switch it off through the bindings' own
``ClusterSequence.set_fastjet_banner_stream`` (the SWIG module shares the library, and hence
the setting, with the awkward interface). The citation it asked for is in the README
("Citing"): FastJet, M. Cacciari, G.P. Salam and G. Soyez, EPJC 72 (2012) 1896
[arXiv:1111.6097], and PLB 641 (2006) 57 [hep-ph/0512210] for the kT algorithm's speed-up.
"""

from __future__ import annotations

from typing import Any

_banner_off = False


def import_fastjet() -> Any:
    """``import fastjet`` with the banner switched off (once per process)."""
    global _banner_off
    import fastjet

    if not _banner_off:
        try:
            from fastjet import _swig

            _swig.ClusterSequence.set_fastjet_banner_stream(None)
        except (ImportError, AttributeError):  # other bindings: the banner is left as it is
            pass
        _banner_off = True
    return fastjet
