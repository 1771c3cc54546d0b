"""Images, training patches and the fixed evaluation set.

The default dataset is the colour photographs that scikit-image ships, so everything
runs offline. Training patches for a whole stage are cut and degraded in one call.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lossagent_env.tasks import Degradation, quantize

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Colour photographs shipped inside scikit-image (no download). Held-out images for
# evaluation are never used for training.
SKIMAGE_TRAIN = ("astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")
SKIMAGE_EVAL = ("chelsea", "coffee", "motorcycle")

SKIMAGE_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "photos": (("astronaut", "coffee", "rocket"), ("chelsea", "motorcycle")),
    "science": (("hubble_deep_field", "retina"), ("immunohistochemistry",)),
    "scenes": (("camera", "coins", "page"), ("moon", "text")),
    "textures": (("brick", "grass"), ("gravel",)),
}
"""Disjoint groups of scikit-image's own pictures, ``{name: (training images, evaluation
images)}``, for problem instances that differ in content (``dataset="skimage:<name>"``):
colour photographs, colour scientific images (space, microscopy, the retina), grey
scenes and text, grey textures. Grey pictures are used as three equal channels."""


def to_tensor(image: np.ndarray | Image.Image) -> torch.Tensor:
    """An 8-bit RGB image ``(H, W, 3)`` as a float tensor ``(3, H, W)`` in ``[0, 1]``."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    array = np.array(array[..., :3], copy=True, order="C")  # writable: torch shares it
    return torch.from_numpy(array).permute(2, 0, 1).float().div(255)


@functools.cache
def _skimage_photo(name: str) -> torch.Tensor:
    import skimage.data

    if name == "motorcycle":
        image = skimage.data.stereo_motorcycle()[1]
    else:
        image = getattr(skimage.data, name)()
    return to_tensor(image)


def _read_folder(path: Path) -> list[Path]:
    if not path.is_dir():
        raise FileNotFoundError(f"Dataset folder {str(path)!r} does not exist or is not a folder.")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"Dataset folder {str(path)!r} holds no images with suffixes {IMAGE_SUFFIXES}.")
    return files


def _load(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            return to_tensor(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"Cannot read the image {str(path)!r} of the dataset: {e}") from None


@dataclass
class ImageSet:
    """Training and evaluation images. ``*_lr`` are given inputs for paired data, else None."""

    train: list[torch.Tensor]
    eval: list[torch.Tensor]
    train_lr: list[torch.Tensor] | None = None
    eval_lr: list[torch.Tensor] | None = None


def check_dataset(dataset: str) -> None:
    """Raise what :func:`load_dataset` raises for ``dataset`` before it reads an image: a
    wrong form, an unknown scikit-image group, a missing folder or one with too few
    images (or, for paired folders, other file names)."""
    _sources(dataset, eval_fraction=0.1)


@dataclass(frozen=True)
class _Sources:
    """What :func:`load_dataset` reads: scikit-image pictures by name, or image files
    (the last ``n_eval`` held out), with their given inputs for paired data."""

    train_names: tuple[str, ...] = ()
    eval_names: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    n_eval: int = 0
    inputs: tuple[Path, ...] | None = None


def _sources(dataset: str, eval_fraction: float) -> _Sources:
    """The sources of ``dataset``, checked (see :func:`check_dataset`)."""
    if dataset == "skimage":
        return _Sources(SKIMAGE_TRAIN, SKIMAGE_EVAL)
    if dataset.startswith("skimage:"):
        group = dataset.partition(":")[2]
        if group not in SKIMAGE_GROUPS:
            raise ValueError(
                f"dataset={dataset!r} names no group of scikit-image pictures. Allowed: "
                + ", ".join(f"'skimage:{g}'" for g in SKIMAGE_GROUPS) + "."
            )
        return _Sources(*SKIMAGE_GROUPS[group])
    if dataset.startswith("paired:"):
        parts = dataset.split(":")
        if len(parts) != 3:
            raise ValueError(f"dataset={dataset!r}: paired data is written 'paired:<lr_dir>:<hr_dir>'.")
        lr_files, hr_files = _read_folder(Path(parts[1])), _read_folder(Path(parts[2]))
        lr_names, hr_names = [p.name for p in lr_files], [p.name for p in hr_files]
        if lr_names != hr_names:
            missing = sorted(set(lr_names) ^ set(hr_names))[:5]
            raise ValueError(f"Paired folders hold different file names, e.g. {missing}.")
        return _Sources(files=tuple(hr_files), n_eval=_n_eval(len(hr_files), eval_fraction), inputs=tuple(lr_files))
    path = Path(dataset).expanduser()
    if path.exists() or "/" in dataset or "\\" in dataset:
        files = _read_folder(path)
        return _Sources(files=tuple(files), n_eval=_n_eval(len(files), eval_fraction))
    raise ValueError(
        f"dataset={dataset!r} is neither 'skimage', 'skimage:<group>', an existing folder, "
        "nor 'paired:<lr_dir>:<hr_dir>'."
    )


def load_dataset(dataset: str, eval_fraction: float = 0.1) -> ImageSet:
    """Load a dataset by name.

    Args:
        dataset: ``"skimage"``; ``"skimage:<group>"``, a group of
            :data:`SKIMAGE_GROUPS`; a folder of clean images (the last ``eval_fraction`` of the
            sorted files, at least one, are held out for evaluation); or
            ``"paired:<lr_dir>:<hr_dir>"``, two folders with the same file names.

    Raises:
        FileNotFoundError: a folder is missing or holds no images.
        ValueError: ``dataset`` has none of the forms above (:func:`check_dataset`), or
            an image cannot be read.
    """
    found = _sources(dataset, eval_fraction)
    if not found.files:  # scikit-image pictures by name
        return ImageSet(
            train=[_skimage_photo(n) for n in found.train_names], eval=[_skimage_photo(n) for n in found.eval_names]
        )
    images, n = [_load(p) for p in found.files], found.n_eval
    if found.inputs is None:
        return ImageSet(images[:-n], images[-n:])
    lr = [_load(p) for p in found.inputs]
    return ImageSet(images[:-n], images[-n:], lr[:-n], lr[-n:])


def _n_eval(n: int, fraction: float) -> int:
    if n < 2:
        raise ValueError(f"A dataset folder needs at least 2 images (found {n}).")
    return min(n - 1, max(1, round(n * fraction)))


class PatchSampler:
    """Cuts random training patches and degrades them, a whole stage at a time.

    Positions and flips come from the env's ``np_random``; noise from a torch Generator.

    Attributes:
        probabilities: ``(len(images),)``: the chance that a patch comes from each
            image, in proportion to its number of patch positions.
    """

    def __init__(
        self,
        images: list[torch.Tensor],
        patch_size: int,
        degradation: Degradation,
        lr_images: list[torch.Tensor] | None = None,
    ):
        self.images = images
        self.lr_images = lr_images
        self.patch_size = patch_size
        self.degradation = degradation
        scale = degradation.scale
        too_small = [tuple(im.shape[1:]) for im in images if min(im.shape[1:]) < patch_size]
        if too_small:
            raise ValueError(f"patch_size={patch_size} is larger than some training images {too_small[:3]}.")
        if lr_images is not None:
            for hr, lr in zip(images, lr_images):
                if hr.shape[1] // scale > lr.shape[1] or hr.shape[2] // scale > lr.shape[2]:
                    raise ValueError(
                        f"A paired input {tuple(lr.shape[1:])} is smaller than its target "
                        f"{tuple(hr.shape[1:])} divided by scale {scale}."
                    )
        areas = np.array(
            [(im.shape[1] - patch_size + 1) * (im.shape[2] - patch_size + 1) for im in images], dtype=np.float64
        )
        self.probabilities = areas / areas.sum()
        self._buffer: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PatchSampler:
        """Keep the images on ``device``, where patches are then cut, flipped and degraded."""
        self.images = [im.to(device) for im in self.images]
        if self.lr_images is not None:
            self.lr_images = [im.to(device) for im in self.lr_images]
        return self

    def sample(
        self, n: int, rng: np.random.Generator, generator: torch.Generator, reuse_buffer: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` (input, target) pairs: ``(n, 3, P/s, P/s)`` and ``(n, 3, P, P)``.

        With ``reuse_buffer`` the targets are written into a buffer this sampler keeps
        and the next such call overwrites (the env uses the patches of a stage only
        during that stage); it saves the page faults of a fresh allocation.

        Every random choice (image, position, flips) is drawn on the CPU from ``rng``,
        so the patches do not depend on the device; the patches are then cut with their
        flips, a few indexing operations per image, on the images' device, and the
        degradation runs on the whole batch there.
        """
        p, s = self.patch_size, self.degradation.scale
        which = rng.choice(len(self.images), size=n, p=self.probabilities)
        u = rng.random((n, 2))
        flips = rng.random((n, 3)) < 0.5
        sizes = np.array([im.shape[1:] for im in self.images])[which]  # (n, 2): H, W
        ys = (u[:, 0] * ((sizes[:, 0] - p) // s + 1)).astype(np.int64) * s
        xs = (u[:, 1] * ((sizes[:, 1] - p) // s + 1)).astype(np.int64) * s
        hr = _cut(self.images, which, ys, xs, p, flips, s, self._buffer if reuse_buffer else None)
        if reuse_buffer:
            self._buffer = hr
        if self.lr_images is not None:
            return _cut(self.lr_images, which, ys // s, xs // s, p // s, flips, 1), hr
        return self.degradation(hr, generator), hr


def _cut(
    images: list[torch.Tensor],
    which: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    size: int,
    flips: np.ndarray,
    step: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Patches ``images[which[k]][:, ys[k]:ys[k]+size, xs[k]:xs[k]+size]``, each flipped
    left-right (``flips[k, 0]``), up-down (``flips[k, 1]``) and then transposed
    (``flips[k, 2]``): ``(n, C, size, size)``, written into ``out`` if given.

    On the CPU each patch is copied once, flips included, from a NumPy view with
    negative strides; the cost is then that of writing the patches (a fresh 1 GB
    output costs more in page faults than in copying, hence ``out``). On a GPU each
    image is seen through a strided view of all its patches (corners are multiples of
    ``step``), and the patches of one orientation are taken in one indexing and
    flipped together.
    """
    n, channels = len(which), images[0].shape[0]
    device = images[0].device
    if out is None or out.shape != (n, channels, size, size) or out.device != device:
        out = torch.empty((n, channels, size, size), dtype=images[0].dtype, device=device)
    if device.type == "cpu":
        arrays = [image.numpy() for image in images]
        target = out.numpy()
        for k in range(n):
            view = arrays[which[k]][:, ys[k] : ys[k] + size, xs[k] : xs[k] + size]
            if flips[k, 0]:
                view = view[:, :, ::-1]
            if flips[k, 1]:
                view = view[:, ::-1, :]
            if flips[k, 2]:
                view = view.transpose(0, 2, 1)
            target[k] = view
        return out
    orientation = flips[:, 0] * 1 + flips[:, 1] * 2 + flips[:, 2] * 4
    for i in np.unique(which):
        windows = images[i].unfold(1, size, step).unfold(2, size, step).permute(1, 2, 0, 3, 4)
        for code in np.unique(orientation[which == i]):
            chosen = np.flatnonzero((which == i) & (orientation == code))
            patches = windows[
                torch.from_numpy(ys[chosen] // step).to(device), torch.from_numpy(xs[chosen] // step).to(device)
            ]
            dims = [dim for dim, bit in ((-1, 1), (-2, 2)) if code & bit]
            if dims:
                patches = patches.flip(dims)
            if code & 4:
                patches = patches.transpose(-1, -2)
            out[torch.from_numpy(chosen).to(device)] = patches
    return out


def eval_crop_positions(
    images: ImageSet, count: int, size: int, scale: int, seed: int = 0
) -> list[tuple[int, int, int]]:
    """Where the crops of :func:`make_eval_set` lie: ``(image index, top, left)`` each.

    Crop ``k`` comes from evaluation image ``k % len(images.eval)``: the centre of every
    image first, then random positions drawn from ``seed``. Corners are multiples of
    ``scale``.

    Raises:
        ValueError: ``size`` is larger than an evaluation image.
    """
    rng = np.random.default_rng(seed)
    positions = []
    for k in range(count):
        i = k % len(images.eval)
        image = images.eval[i]
        if min(image.shape[1:]) < size:
            raise ValueError(f"eval_size={size} is larger than evaluation image {tuple(image.shape[1:])}.")
        if k < len(images.eval):  # the centre of every image first
            y, x = (image.shape[1] - size) // 2, (image.shape[2] - size) // 2
        else:
            y = int(rng.integers(0, image.shape[1] - size + 1))
            x = int(rng.integers(0, image.shape[2] - size + 1))
        positions.append((i, y - y % scale, x - x % scale))
    return positions


def make_eval_set(
    images: ImageSet, count: int, size: int, degradation: Degradation, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed evaluation set: ``count`` crops of side ``size`` and their degraded inputs.

    It depends only on the images, ``count``, ``size``, the degradation and ``seed``, never
    on the episode's seed, so every agent and every seed is measured on the same images.
    """
    positions = eval_crop_positions(images, count, size, degradation.scale, seed)
    return _crop_set(images, positions, size, degradation, seed)


def heldout_crop_positions(images: ImageSet, count: int, size: int, scale: int) -> list[tuple[int, int, int]]:
    """Where the crops of :func:`make_test_set` lie: ``(image index, top, left)`` each.

    Each evaluation image is cut into a grid of ``size`` x ``size`` tiles (corners at
    multiples of ``size``, so of ``scale`` too); tiles that intersect a crop of
    :func:`eval_crop_positions` with the same ``count`` and ``size`` are skipped; the
    others are taken nearest to the image centre first, one image after the other in
    turn (as the validation crops are). They depend only on the images, ``count`` and
    ``size``.

    Raises:
        ValueError: The images have no room for ``count`` such crops.
    """
    taken = eval_crop_positions(images, count, size, scale)
    free: list[list[tuple[int, int, int]]] = []
    for i, image in enumerate(images.eval):
        height, width = image.shape[1:]
        tiles = [
            (i, y, x)
            for y in range(0, height - size + 1, size)
            for x in range(0, width - size + 1, size)
            if not any(j == i and abs(y - ty) < size and abs(x - tx) < size for j, ty, tx in taken)
        ]
        centre = ((height - size) / 2, (width - size) / 2)
        tiles.sort(key=lambda t: (t[1] - centre[0]) ** 2 + (t[2] - centre[1]) ** 2)
        free.append(tiles)
    positions: list[tuple[int, int, int]] = []
    rank = 0
    while len(positions) < count and any(len(tiles) > rank for tiles in free):
        positions.extend(tiles[rank] for tiles in free if len(tiles) > rank)
        rank += 1
    if len(positions) < count:
        raise ValueError(
            f"The evaluation images have room for {len(positions)} test crops of side {size} "
            f"that overlap none of the {count} validation crops; {count} are needed. "
            "Allowed: a smaller eval_images or eval_size, or larger evaluation images."
        )
    return positions[:count]


def make_test_set(
    images: ImageSet, count: int, size: int, degradation: Degradation, seed: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """A second evaluation set, ``(inputs, targets)`` as :func:`make_eval_set` returns, whose
    crops (at :func:`heldout_crop_positions`) overlap none of its crops.

    ``seed`` only draws the noise of random degradations (Gaussian noise), and differs
    from the validation set's by default so that the two noise draws differ too.

    Raises:
        ValueError: The images have no room for ``count`` disjoint crops.
    """
    positions = heldout_crop_positions(images, count, size, degradation.scale)
    return _crop_set(images, positions, size, degradation, seed)


def _crop_set(
    images: ImageSet, positions: list[tuple[int, int, int]], size: int, degradation: Degradation, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the crops at ``positions`` and their inputs (given LR crops, or degraded)."""
    generator = torch.Generator().manual_seed(seed)
    s = degradation.scale
    hr_crops, lr_crops = [], []
    for i, y, x in positions:
        hr_crops.append(images.eval[i][:, y : y + size, x : x + size])
        if images.eval_lr is not None:
            lr_crops.append(images.eval_lr[i][:, y // s : (y + size) // s, x // s : (x + size) // s])
    hr = torch.stack(hr_crops)
    lr = torch.stack(lr_crops) if lr_crops else degradation(hr, generator)
    return lr, quantize(hr)
