"""NanoEvents schemas for the Delphes-layout files written by our own generator.

Our generator writes a ``Delphes`` TTree with uproot's ``mktree``. uproot cannot write
split TClonesArrays, so the branches are flat: either ``EFlowTrack/EFlowTrack.PT`` (a branch
whose *name* contains the slash, which coffea's :class:`DelphesSchema` already reads) or
``EFlowTrack.PT`` (no collection prefix), which :class:`DelphesSchema` would take for a
collection called ``EFlowTrack.PT``. :class:`FlatDelphesSchema` renames the latter to the
former before building collections, and is identical to :class:`DelphesSchema` on real
Delphes files (where no branch name has that shape).
"""

from __future__ import annotations

from typing import Any

from coffea.nanoevents import DelphesSchema


class FlatDelphesSchema(DelphesSchema):
    """:class:`DelphesSchema` that also accepts flat ``Collection.Field`` branch names.

    Use it like any schema::

        NanoEventsFactory.from_root({path: "Delphes"}, schemaclass=FlatDelphesSchema).events()
    """

    def __init__(self, base_form: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        counters = {f[: -len("_size")] for f in base_form["fields"] if f.endswith("_size")}
        renamed = []
        for field in base_form["fields"]:
            collection, dot, _ = field.partition(".")
            # Only rename "Coll.Field" when "Coll_size" exists: that is the flat layout.
            if dot and "/" not in field and collection in counters:
                field = f"{collection}/{field}"
            renamed.append(field)
        base_form = dict(base_form, fields=renamed)
        super().__init__(base_form, *args, **kwargs)
