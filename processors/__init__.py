"""Ready coffea processors for RS3L, installed as ``rs3l_coffea.processors``.

The directory lives at the top of the repository (``processors/``) so analysts find it;
``pyproject.toml`` maps it into the package namespace to avoid a clash with other
top-level packages named ``processors``.
"""
