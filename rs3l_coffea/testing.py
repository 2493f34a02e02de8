"""Real ROOT sample files that nobody on this project wrote, for tests and the demo.

The coffea source distribution on the package index ships small Delphes, PFNano and
NanoAOD files under ``tests/samples``. :func:`sample_path` downloads that sdist once
(``pip download``, so the ordinary index configuration and proxies apply), extracts the
ROOT files and caches them in ``~/.cache/rs3l-coffea`` (override with ``RS3L_TESTDATA``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

COFFEA_SDIST_VERSION = "2026.9.0"
KNOWN_SAMPLES = (
    "delphes.root",
    "bad_delphes.root",
    "pfnano.root",
    "nano_tt_v15.root",
    "nano_dy.root",
)


def cache_dir() -> Path:
    """Directory holding the extracted samples (``$RS3L_TESTDATA`` or ``~/.cache/rs3l-coffea``)."""
    override = os.environ.get("RS3L_TESTDATA")
    base = Path(override) if override else Path.home() / ".cache" / "rs3l-coffea"
    return base / f"coffea-{COFFEA_SDIST_VERSION}-samples"


def _download_and_extract(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        tmp_path = Path(tmp)
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--no-binary", ":all:", f"coffea=={COFFEA_SDIST_VERSION}", "-d", str(tmp_path),
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        archives = sorted(tmp_path.glob("coffea-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(
                f"could not download the coffea {COFFEA_SDIST_VERSION} sdist with "
                f"{' '.join(command)!r}: {result.stderr.strip() or 'no archive produced'}"
            )
        staging = tmp_path / "samples"
        staging.mkdir()
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if (
                    member.isfile()
                    and len(parts) >= 4
                    and parts[-3:-1] == ("tests", "samples")
                    and member.name.endswith(".root")
                ):
                    source = archive.extractfile(member)
                    assert source is not None
                    with source, open(staging / parts[-1], "wb") as sink:
                        shutil.copyfileobj(source, sink)
        # Atomic publish: a concurrent or killed download never leaves a half-filled cache.
        try:
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():
                raise


def sample_path(name: str) -> Path:
    """Path of a cached coffea test sample, downloading the sdist on first use.

    >>> sample_path("delphes.root")  # doctest: +SKIP
    PosixPath('/home/me/.cache/rs3l-coffea/coffea-2026.9.0-samples/delphes.root')
    """
    directory = cache_dir()
    if not directory.is_dir():
        _download_and_extract(directory)
    path = directory / name
    if not path.is_file():
        available = sorted(p.name for p in directory.glob("*.root"))
        raise FileNotFoundError(
            f"sample {name!r} is not in the coffea {COFFEA_SDIST_VERSION} sdist; "
            f"available: {', '.join(available)}"
        )
    return path
