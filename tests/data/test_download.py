"""Downloading a dataset zip from a server on 127.0.0.1: checksum, safe extraction, atomic rename."""

from __future__ import annotations

import hashlib
import socket
import stat
import zipfile
from pathlib import Path

import pytest

from vitlab.data import ImageFolderDataModule
from vitlab.data.download import download_dataset
from vitlab.errors import DataError, ExistingFileError, NetworkError
from vitlab.models.preprocessing import FROM_SCRATCH


def zip_folder(source: Path, archive: Path, prefix: str = "") -> str:
    """Zip ``source`` (members named ``prefix`` + relative path); returns the archive's SHA-256."""
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(source).as_posix())
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("prefix", ["", "pizza_steak_sushi/"])
def test_a_good_zip_is_downloaded_checked_and_extracted(make_image_folder, served, tmp_path, prefix):
    www, url = served
    sha = zip_folder(make_image_folder(n_per_class=2), www / "data.zip", prefix)
    root = tmp_path / "data" / "pizza_steak_sushi"
    download_dataset(f"{url}/data.zip", root, sha)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg")) == [
        f"{split}/{food}/{i}.jpg"
        for split in ("test", "train")
        for food in ("pizza", "steak", "sushi")
        for i in (0, 1)
    ]
    assert leftovers(root.parent) == []


def test_the_datamodule_downloads_in_prepare_data_and_only_once(make_image_folder, served, tmp_path):
    www, url = served
    sha = zip_folder(make_image_folder(n_per_class=2), www / "data.zip")
    root = tmp_path / "data" / "food"
    dm = ImageFolderDataModule(
        root,
        preprocessing=FROM_SCRATCH,
        url=f"{url}/data.zip",
        sha256=sha,
        image_size=16,
        num_workers=0,
        val_fraction=0,
    )
    dm.prepare_data()
    assert dm.class_names == ["pizza", "steak", "sushi"]
    (www / "data.zip").unlink()  # a second prepare_data must not need the server
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 6


@pytest.mark.parametrize("damage", ["truncated", "wrong_checksum"])
def test_a_damaged_download_leaves_no_dataset_behind(make_image_folder, served, tmp_path, damage):
    www, url = served
    archive = www / "data.zip"
    sha = zip_folder(make_image_folder(n_per_class=2), archive)
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    else:
        sha = "0" * 64
    root = tmp_path / "data" / "food"
    with pytest.raises(DataError, match=r"SHA-256 of .*data.zip is [0-9a-f]{64}, expected .*data.sha256"):
        download_dataset(f"{url}/data.zip", root, sha)
    assert not root.exists()
    assert leftovers(root.parent) == []


def test_a_truncated_zip_without_checksum_is_reported_as_not_a_zip(make_image_folder, served, tmp_path):
    www, url = served
    archive = www / "data.zip"
    zip_folder(make_image_folder(n_per_class=2), archive)
    archive.write_bytes(archive.read_bytes()[:-100])  # the central directory is at the end
    root = tmp_path / "data" / "food"
    with pytest.raises(DataError, match=r"not a valid zip archive .*incomplete.*Try again"):
        download_dataset(f"{url}/data.zip", root, None)
    assert not root.exists()


@pytest.mark.parametrize("member", ["../evil.txt", "train/../../evil.txt", "/tmp/evil.txt", "link"])
def test_members_outside_the_folder_and_links_are_refused(served, tmp_path, member):
    www, url = served
    with zipfile.ZipFile(www / "evil.zip", "w") as zf:
        zf.writestr("train/pizza/0.jpg", b"x")
        if member == "link":
            info = zipfile.ZipInfo("train/pizza/link.jpg")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(member, b"escaped")
    root = tmp_path / "data" / "food"
    with pytest.raises(DataError, match=r"refusing to extract .*evil.zip: member"):
        download_dataset(f"{url}/evil.zip", root, None)
    assert not root.exists()
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "data" / "evil.txt").exists()


def test_an_archive_without_train_folder_is_refused(served, tmp_path):
    www, url = served
    with zipfile.ZipFile(www / "other.zip", "w") as zf:
        zf.writestr("photos/a.jpg", b"x")
    with pytest.raises(DataError, match=r"holds no train/ folder"):
        download_dataset(f"{url}/other.zip", tmp_path / "food", None)


def test_without_network_the_error_says_where_data_was_looked_for_and_how_to_provide_it(
    tmp_path, monkeypatch
):
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = tmp_path / "data" / "food"
    dm = ImageFolderDataModule(
        root, preprocessing=FROM_SCRATCH, url=f"http://127.0.0.1:{port}/data.zip", sha256=None
    )
    with pytest.raises(
        NetworkError, match=rf"no dataset at {root} .*failed.*unzip it so that .*point data.root"
    ):
        dm.prepare_data()
    assert not root.exists()
    assert leftovers(root.parent) == []


def test_a_missing_file_on_the_server_is_a_network_error_naming_the_url(served, tmp_path):
    _, url = served
    root = tmp_path / "data" / "food"
    with pytest.raises(
        NetworkError, match=rf"downloading {url}/gone.zip \(data.url\) failed: HTTP Error 404"
    ):
        download_dataset(f"{url}/gone.zip", root, None)
    assert not root.exists()
    assert leftovers(root.parent) == []


def test_a_folder_of_other_files_at_root_is_never_overwritten(make_image_folder, served, tmp_path):
    www, url = served
    zip_folder(make_image_folder(n_per_class=1), www / "data.zip")
    root = tmp_path / "data" / "food"
    root.mkdir(parents=True)
    (root / "mine.txt").write_text("the user's own file")
    with pytest.raises(ExistingFileError, match=rf"cannot move the downloaded dataset to {root}: it exists"):
        download_dataset(f"{url}/data.zip", root, None)
    assert [p.name for p in root.iterdir()] == ["mine.txt"]
    assert leftovers(root.parent) == []
