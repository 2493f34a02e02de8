"""Package discovery only (all metadata is in pyproject.toml).

``processors/`` sits at the top of the repository, where analysts look for it, but is
installed as ``rs3l_coffea.processors`` so that it cannot clash with other distributions'
top-level ``processors`` packages. ``packages.find`` cannot express that mapping.
"""

from setuptools import find_packages, setup

library = find_packages(include=["rs3l_coffea", "rs3l_coffea.*"])
processors = ["rs3l_coffea.processors"] + [
    f"rs3l_coffea.processors.{name}" for name in find_packages(where="processors")
]

setup(
    packages=library + processors,
    package_dir={"rs3l_coffea.processors": "processors"},
)
