"""Download an image-folder dataset as a zip (FoodVision Mini), verify it, extract it safely.

Everything happens in a temporary folder beside ``root`` that is renamed into place only once the
archive is verified and fully extracted: an interrupted or corrupt download never leaves a half
dataset at ``root`` that a later run would take for a complete one.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import shutil
import ssl
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from urllib.error import URLError

from torchvision.datasets.utils import download_url

from vitlab.errors import DataError, ExistingFileError, NetworkError

log = logging.getLogger(__name__)

# What a failed download raises: urllib wraps a refused connection or an unknown host in URLError, a
# transfer cut short raises the others. A full disk is none of them, and keeps its traceback.
NETWORK_ERRORS = (URLError, ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException)
# What os.replace raises when the target is a folder that holds files, or a file.
CLASH_ERRNOS = (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR)


def is_image_folder(root: Path) -> bool:
    """Whether ``root`` already holds a dataset (so nothing is downloaded)."""
    return (root / "train").is_dir()


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_members(archive: zipfile.ZipFile, source: str) -> None:
    """Refuse members that would land outside the target folder: absolute paths, ``..``, links."""
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        is_link = stat.S_ISLNK(info.external_attr >> 16)
        if name.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts or is_link:
            raise DataError(
                f"refusing to extract {source}: member {info.filename!r} is "
                f"{'a symbolic link' if is_link else 'a path outside the archive folder'}. "
                f"Only plain relative files are allowed; check data.url points at the intended archive."
            )


def _dataset_folder(extracted: Path, source: str) -> Path:
    """The folder holding ``train/``: the archive's top level, or its single top folder."""
    if is_image_folder(extracted):
        return extracted
    folders = [p for p in extracted.iterdir() if p.is_dir() and p.name != "__MACOSX"]
    if len(folders) == 1 and is_image_folder(folders[0]):
        return folders[0]
    raise DataError(
        f"{source} holds no train/ folder (found {sorted(p.name for p in extracted.iterdir())}): the "
        f"archive must contain train/ and test/ with one folder per class, at its top level or in one folder."
    )


def download_dataset(url: str, root: Path, sha256: str | None) -> str:
    """Download the zip at ``url``, check its SHA-256, and extract it to ``root``; returns the
    archive's SHA-256 (for the run's provenance).

    ``sha256=None`` skips the check (the computed digest is logged so it can be pinned).
    """
    root = Path(root).expanduser()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
    try:
        archive = tmp / "archive.zip"
        try:
            download_url(url, str(tmp), filename=archive.name)
        except NETWORK_ERRORS as err:
            raise NetworkError(
                f"no dataset at {root} (data.root) and downloading {url} (data.url) failed: {err}. "
                f"Without network, fetch the zip elsewhere and unzip it so that {root}/train and "
                f"{root}/test exist, or point data.root (or VITLAB_DATA_DIR) at an existing copy."
            ) from err
        digest = sha256sum(archive)
        if sha256 is None:
            log.warning("no data.sha256 given for %s; its SHA-256 is %s", url, digest)
        elif digest != sha256.lower():
            raise DataError(
                f"SHA-256 of {url} is {digest}, expected {sha256} (data.sha256): the download is corrupt "
                f"or incomplete, or the file changed upstream. Try again; if the new file is trusted, "
                f"set data.sha256={digest}."
            )
        extracted = tmp / "extracted"
        try:
            with zipfile.ZipFile(archive) as zf:
                _check_members(zf, url)
                zf.extractall(extracted)
        except zipfile.BadZipFile as err:
            raise DataError(
                f"{url} is not a valid zip archive ({err}): the download is incomplete (a dropped "
                f"connection ends it early without an error), or data.url points at something else. "
                f"Try again, or check data.url."
            ) from err
        _publish(_dataset_folder(extracted, url), root)
        return digest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(folder: Path, root: Path) -> None:
    """Rename the complete dataset into place (atomic on one filesystem)."""
    try:
        os.replace(folder, root)  # succeeds over a missing or empty ``root``
    except OSError as err:
        if is_image_folder(root):  # another process finished the same download first
            return
        if err.errno not in CLASH_ERRNOS:
            raise
        raise ExistingFileError(
            f"cannot move the downloaded dataset to {root}: it exists and is not empty, yet holds no "
            f"train/ folder. Delete or empty it, or set data.root elsewhere."
        ) from err
