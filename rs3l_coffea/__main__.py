"""``python -m rs3l_coffea``: the ``rs3l`` command line (for machines where the package is on
``PYTHONPATH`` but not installed, e.g. ``torchrun ... -m rs3l_coffea train ...``)."""

from rs3l_coffea.cli import main

main()
