"""Images for the section 4 experiments: bundled photos offline, folders, crops and the split."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from retune_suite.experiments.common.data import (
    EMBEDDED,
    crops,
    embedded_images,
    load_folder,
    train_test_split,
)
from retune_suite.operators import InvalidInputError
from retune_suite.operators.errors import MissingExtraError

SIZES = {
    "astronaut": (512, 512),
    "chelsea": (300, 451),
    "coffee": (400, 600),
    "motorcycle_left": (500, 741),
    "rocket": (427, 640),
}


NO_SKIMAGE = importlib.util.find_spec("skimage") is None


@pytest.fixture(scope="module")
def embedded():
    if NO_SKIMAGE:
        pytest.skip("scikit-image (the extra retune-suite[data]) holds the photographs")
    return embedded_images()


def constant_images(n: int, H: int = 20, W: int = 30) -> list[tuple[str, torch.Tensor]]:
    """Image i is filled with the value i / n: a crop tells which image it came from."""
    return [(f"c{i}", torch.full((3, H, W), i / n)) for i in range(n)]


def test_embedded_images(embedded):
    assert [name for name, _ in embedded] == list(SIZES) == [f.split(".")[0] for f in EMBEDDED]
    for name, image in embedded:
        assert image.shape == (3, *SIZES[name])
        assert image.dtype == torch.float32 and image.device.type == "cpu"
        assert 0.0 <= image.min() < image.max() <= 1.0
        assert not torch.equal(image[0], image[1])  # colour, not grey repeated


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "rocket"])
def test_embedded_images_match_skimage(embedded, name):
    """Same pixels as skimage.data's own loaders (which find these files in the wheel)."""
    skimage_data = pytest.importorskip("skimage.data")

    expected = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1) / 255.0
    torch.testing.assert_close(dict(embedded)[name], expected.float(), rtol=0, atol=0)


@pytest.mark.skipif(NO_SKIMAGE, reason="scikit-image (retune-suite[data]) is not installed")
def test_embedded_images_offline_without_importing_skimage():
    """No socket, no pooch: the photos are read from the installed wheel, not downloaded."""
    code = """
import socket, sys

def refuse(*args, **kwargs):
    raise AssertionError("network access")

socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
sys.modules["pooch"] = None  # `import pooch` fails
from retune_suite.experiments.common.data import embedded_images
assert len(embedded_images()) == 5
assert "skimage" not in sys.modules, "skimage.data's loaders may download: not used"
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_scikit_image_the_error_names_the_extra(monkeypatch):
    """No scikit-image: one message naming the extra and the way around it (--images)."""
    monkeypatch.setitem(sys.modules, "skimage", None)  # find_spec("skimage") is None
    with pytest.raises(MissingExtraError) as caught:
        embedded_images()
    message = str(caught.value)
    assert message.startswith("reading the embedded photographs needs scikit-image: ")
    assert "pip install 'retune-suite[data]'" in message and "--images FOLDER" in message
    assert "\n" not in message and isinstance(caught.value, ImportError)


def test_load_folder(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (9, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: the colours must survive anyway
    yy, xx = np.mgrid[0:16, 0:24]
    grey = (8 * xx + 4 * yy).astype(np.uint8)  # smooth, so JPEG keeps it within a few levels
    grey16 = (np.arange(5 * 6, dtype=np.uint16) * 2000).reshape(5, 6)
    Image.fromarray(rgb).save(tmp_path / "b_rgb.png")
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "c_rgba.png")
    Image.fromarray(grey, mode="L").save(tmp_path / "a_grey.JPG", quality=95)
    Image.fromarray(grey16).save(tmp_path / "d_grey16.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    Image.fromarray(rgb).save(tmp_path / "sub" / "ignored.png")

    images = load_folder(tmp_path)
    assert [name for name, _ in images] == ["a_grey", "b_rgb", "c_rgba", "d_grey16"]
    loaded = dict(images)
    for image in loaded.values():
        assert image.dtype == torch.float32 and image.shape[0] == 3
        assert 0.0 <= image.min() and image.max() <= 1.0
    exact = {"b_rgb": rgb / 255.0, "c_rgba": rgba[..., :3] / 255.0}
    for name, array in exact.items():
        expected = torch.from_numpy(array).permute(2, 0, 1).float()
        torch.testing.assert_close(loaded[name], expected, rtol=0, atol=0)
    a = loaded["a_grey"]
    assert a.shape == (3, 16, 24)
    assert torch.equal(a[0], a[1]) and torch.equal(a[1], a[2])
    # JPEG is lossy: within 4 grey levels of the original on this smooth ramp.
    assert (a[0] - torch.from_numpy(grey / 255.0).float()).abs().max() <= 4 / 255
    d = loaded["d_grey16"]
    torch.testing.assert_close(d[1], torch.from_numpy(grey16 / 65535.0).float())


def test_load_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_folder(tmp_path / "missing")
    (tmp_path / "readme.md").write_text("no images here")
    with pytest.raises(FileNotFoundError, match=r"no image in .*\.png, \.jpg, \.jpeg"):
        load_folder(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match=r"cannot read image .*broken\.png"):
        load_folder(tmp_path)


def test_crops_shape_range_dtype(embedded):
    batch = crops(embedded, size=64, count=12, seed=0)
    assert batch.shape == (12, 3, 64, 64)
    assert batch.dtype == torch.float32 and batch.device.type == "cpu"
    assert 0.0 <= batch.min() and batch.max() <= 1.0


def test_crops_deterministic(embedded):
    first = crops(embedded, size=48, count=10, seed=3)
    assert torch.equal(first, crops(embedded, size=48, count=10, seed=3))
    assert not torch.equal(first, crops(embedded, size=48, count=10, seed=4))


def test_crops_round_robin_and_windows():
    images = constant_images(3)
    batch = crops(images, size=5, count=7, seed=0)
    assert [round(3 * float(c.mean())) for c in batch] == [0, 1, 2, 0, 1, 2, 0]
    ramp = torch.arange(3 * 20 * 30, dtype=torch.float32).reshape(3, 20, 30)
    corners = set()
    for crop in crops([ramp], size=5, count=50, seed=1):
        top, left = divmod(int(crop[0, 0, 0]), 30)
        assert torch.equal(crop, ramp[:, top : top + 5, left : left + 5])
        corners.add((top, left))
    assert len(corners) > 10  # the corners are spread, not one window


def test_crop_of_full_size_and_bare_tensors():
    image = torch.rand(3, 8, 8)
    assert torch.equal(crops([image], size=8, count=2, seed=0), image.expand(2, 3, 8, 8))


def test_crops_errors(embedded):
    with pytest.raises(
        InvalidInputError, match=r"crop size 320 exceeds image 'chelsea' of 300×451"
    ):
        crops(embedded, size=320, count=1, seed=0)
    with pytest.raises(InvalidInputError, match="crop size must be"):
        crops(embedded, size=0, count=1, seed=0)
    with pytest.raises(InvalidInputError, match="crop count must be"):
        crops(embedded, size=8, count=0, seed=0)
    with pytest.raises(InvalidInputError, match="no images"):
        crops([], size=8, count=1, seed=0)
    with pytest.raises(InvalidInputError, match=r"'grey' must be a \(3, H, W\) tensor"):
        crops([("grey", torch.rand(1, 8, 8))], size=4, count=1, seed=0)


def test_train_test_split(embedded):
    train, test = train_test_split(embedded, test=2, seed=0)
    names = [name for name, _ in embedded]
    assert len(test) == 2 and len(train) == 3
    assert sorted(n for n, _ in train + test) == sorted(names)
    assert [n for n, _ in train] == [n for n in names if n in dict(train)]  # input order kept
    again = train_test_split(embedded, test=2, seed=0)
    assert [n for n, _ in again[1]] == [n for n, _ in test]
    splits = {tuple(n for n, _ in train_test_split(embedded, 2, seed)[1]) for seed in range(10)}
    assert len(splits) > 1  # the seed matters
    assert train_test_split(embedded, test=0, seed=0) == (list(embedded), [])


def test_test_images_never_cropped_for_training():
    images = constant_images(6)
    train, test = train_test_split(images, test=2, seed=5)
    held_out = {round(6 * float(image.mean())) for _, image in test}
    batch = crops(train, size=4, count=40, seed=0)
    assert not {round(6 * float(c.mean())) for c in batch} & held_out


def test_train_test_split_errors():
    with pytest.raises(InvalidInputError, match=r"test must be an integer in \[0, 2\] for 3"):
        train_test_split(["a", "b", "c"], test=3, seed=0)
    with pytest.raises(InvalidInputError, match="test must be"):
        train_test_split(["a", "b", "c"], test=-1, seed=0)
