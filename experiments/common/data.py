"""Colour images for the imaging experiments of section 4: bundled, from a folder, and crops.

:func:`embedded_images` reads natural colour photographs that ship inside the scikit-image
wheel, straight from its installed ``skimage/data`` folder: it never calls ``skimage.data``,
whose loaders may download through pooch, so it works offline. :func:`load_folder` reads a
user's PNG/JPEG folder the same way. Split by image with :func:`train_test_split` *before*
cutting training patches with :func:`crops`, so that no test image is seen in training.

>>> images = embedded_images()
>>> [name for name, _ in images]
['astronaut', 'chelsea', 'coffee', 'motorcycle_left', 'rocket']
>>> train, test = train_test_split(images, test=1, seed=0)
>>> crops(train, size=64, count=8, seed=0).shape
torch.Size([8, 3, 64, 64])
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from retune_suite.operators.errors import InvalidInputError, MissingExtraError

EMBEDDED = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "rocket.jpg",
)
"""The natural colour photographs of the scikit-image wheel (``skimage/data``). Left out:
``motorcycle_right`` (the other view of a stereo pair, a near-copy of ``motorcycle_left`` that
would leak between a train and a test split), the scientific images (``hubble_deep_field``,
``ihc``, ``retina``), the synthetic ones (``color``, ``chessboard_RGB``, ``phantom``) and the
grey or RGBA ones."""

EXTENSIONS = (".png", ".jpg", ".jpeg")

NamedImage = tuple[str, torch.Tensor]
Images = Sequence[NamedImage] | Sequence[torch.Tensor]


def embedded_images() -> list[NamedImage]:
    """The :data:`EMBEDDED` photographs as (name, image) pairs, image (3, H, W) float32 in [0, 1].

    Read from the installed scikit-image package (the extra ``retune-suite[data]``), without
    importing it and without any network access; without it, :class:`MissingExtraError` names
    the extra and ``--images FOLDER`` / :func:`load_folder`. Sizes (H × W): astronaut 512 × 512,
    chelsea 300 × 451, coffee 400 × 600, motorcycle_left 500 × 741, rocket 427 × 640.
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "scikit-image",
            "data",
            "reading the embedded photographs",
            hint="(its wheel holds them), or use your own images: --images FOLDER (load_folder)",
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    images = []
    for file in EMBEDDED:
        path = folder / file
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing from the scikit-image install (a stripped package?); "
                "reinstall scikit-image from its wheel, or use load_folder()."
            )
        images.append((path.stem, _read(path)))
    return images


def load_folder(path: str | Path) -> list[NamedImage]:
    """The PNG/JPEG images of a folder (not its subfolders), sorted by file name.

    Each is (stem, image) with image (3, H, W) float32 in [0, 1]: grey images are repeated
    on the three channels, the alpha channel of RGBA / grey-alpha images is dropped (colours
    are kept as stored, not composited), 16-bit images are scaled by 1/65535 and JPEG EXIF
    orientation is applied.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist or is not a folder.")
    files = sorted(
        (f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in EXTENSIONS),
        key=lambda f: f.name,
    )
    if not files:
        raise FileNotFoundError(
            f"no image in {folder}: expected files ending in {', '.join(EXTENSIONS)} "
            "(any case); subfolders are not searched."
        )
    return [(f.stem, _read(f)) for f in files]


def crops(images: Images, size: int, count: int, seed: int) -> torch.Tensor:
    """``count`` random ``size`` × ``size`` crops, shape (count, 3, size, size).

    Crop i comes from image i mod len(images) (round robin, so every image contributes
    equally), at a corner drawn uniformly by a CPU ``torch.Generator`` seeded with ``seed``:
    the same arguments give the same crops on every machine. ``images`` holds (name, image)
    pairs or bare (3, H, W) tensors.

    >>> x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    >>> batch = crops([x[0], x[1]], size=2, count=3, seed=0)
    >>> batch.shape, bool((batch[0] < 60).all() and (batch[1] >= 60).all())
    (torch.Size([3, 3, 2, 2]), True)
    """
    tensors = _tensors(images)
    if not isinstance(size, int) or size < 1:
        raise InvalidInputError(f"crop size must be a positive integer, got {size}.")
    if not isinstance(count, int) or count < 1:
        raise InvalidInputError(f"crop count must be a positive integer, got {count}.")
    for name, image in tensors:
        H, W = image.shape[-2:]
        if size > H or size > W:
            raise InvalidInputError(
                f"crop size {size} exceeds image {name!r} of {H}×{W} pixels; use a size of "
                f"at most {min(H, W)} or leave that image out."
            )
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        image = tensors[i % len(tensors)][1]
        H, W = image.shape[-2:]
        top = int(torch.randint(H - size + 1, (1,), generator=generator))
        left = int(torch.randint(W - size + 1, (1,), generator=generator))
        out.append(image[:, top : top + size, left : left + size])
    return torch.stack(out)


def train_test_split(images: Sequence, test: int, seed: int) -> tuple[list, list]:
    """Split by image: ``test`` images drawn by a permutation seeded with ``seed``, the others
    for training; both lists keep the input order.

    Cut training crops from the first list only, so test images are never trained on.

    >>> train_test_split(["a", "b", "c", "d"], test=1, seed=0)
    (['b', 'c', 'd'], ['a'])
    """
    n = len(images)
    if not isinstance(test, int) or not 0 <= test < n:
        raise InvalidInputError(
            f"test must be an integer in [0, {n - 1}] for {n} images (at least one image is "
            f"left for training), got {test}."
        )
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held_out = set(permutation[:test].tolist())
    train = [image for i, image in enumerate(images) if i not in held_out]
    return train, [image for i, image in enumerate(images) if i in held_out]


def _tensors(images: Images) -> list[NamedImage]:
    if len(images) == 0:
        raise InvalidInputError("no images to crop from.")
    pairs = [
        (f"#{i}", item) if isinstance(item, torch.Tensor) else tuple(item)
        for i, item in enumerate(images)
    ]
    for name, image in pairs:
        if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise InvalidInputError(f"image {name!r} must be a (3, H, W) tensor, got {got}.")
    return pairs


def _read(path: Path) -> torch.Tensor:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode.startswith("I"):  # 16-bit (or 32-bit integer) grey
                grey = np.asarray(image, dtype=np.float64) / 65535.0
                array = np.repeat(np.clip(grey, 0.0, 1.0)[..., None], 3, axis=-1)
            else:
                # convert("RGB") repeats grey, drops alpha (RGBA, LA) and expands palettes.
                array = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise InvalidInputError(f"cannot read image {path}: {error}") from error
    return torch.from_numpy(array).permute(2, 0, 1).to(torch.float32).contiguous()


__all__ = [
    "EMBEDDED",
    "EXTENSIONS",
    "crops",
    "embedded_images",
    "load_folder",
    "train_test_split",
]
