"""Ready coffea processors for RS3L, installed as ``rs3l_coffea.processors``.

The directory lives at the top of the repository (``processors/``) so analysts find it;
``setup.py`` (``package_dir={"rs3l_coffea.processors": "processors"}``) installs it into the
package namespace to avoid a clash with other top-level packages named ``processors``. The
per-chunk logic they share is :mod:`rs3l_coffea.coffea_processing.analysis`.

* :class:`TaggingProcessor` -- RS3L columns and histograms per dataset (optional skims).
* :class:`VariantProcessor` -- the same with a ``variant`` axis for re-simulated samples.
"""

from rs3l_coffea.processors.tagging import TaggingProcessor, VariantProcessor

__all__ = ["TaggingProcessor", "VariantProcessor"]
