"""Unpaired image data for training the translation network (two folders: domain A and domain B).

The data set follows CycleGAN's unaligned data set as used by GDWCT/MUNIT: item ``i`` of an epoch is
image ``i mod |A|`` of domain A (A in order) paired with a uniformly random image of domain B. Training
crops follow GDWCT's preprocessing: random horizontal flip, resize of the shorter side to ``load_size``,
random ``crop_size`` crop, values scaled to [-1, 1].

Everything random (the B index, the flip, the crop offset) is drawn from a NumPy generator seeded with
``(seed, epoch, index)``, so the data stream is a pure function of the seed and the position in it: a run
resumed at any step sees exactly the images an uninterrupted run would have seen, whatever the number of
loader workers. :class:`ResumableDistributedSampler` is a ``DistributedSampler`` (``set_epoch`` per epoch,
one shard per rank) that can start in the middle of an epoch and hands ``(epoch, index)`` keys to the
data set.

Image files are found with :func:`wct.io.list_images` (image extensions only, recursive) and decoded
with :func:`wct.io.load_image` (EXIF orientation, every mode to RGB with alpha on white). A file that
cannot be decoded (truncated, zero bytes, not an image) is skipped: the sample falls through to the next
file of the same domain and the bad path is reported in the batch's ``"skipped"`` list, which
:class:`BadFileReporter` turns into exactly one warning per file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, DistributedSampler

__all__ = [
    "UnpairedImageFolders",
    "ImageList",
    "ResumableDistributedSampler",
    "BadFileReporter",
    "collate_unpaired",
    "train_transform",
    "eval_transform",
]


def _io():
    # Imported lazily so that ``models`` imports without the optional I/O module being initialised.
    import wct.io

    return wct.io


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return _io().pil_to_tensor(img)[0].mul_(2.0).sub_(1.0)


def train_transform(img: Image.Image, rng: np.random.Generator, *, load_size: int, crop_size: int,
                    flip: bool = True) -> torch.Tensor:
    """GDWCT training preprocessing: flip, resize the shorter side, random crop, scale to [-1, 1].

    Args:
        img: RGB PIL image of any size.
        rng: NumPy generator that decides the flip and the crop offset.
        load_size: the shorter side after resizing, in pixels (>= ``crop_size``).
        crop_size: side of the square random crop, in pixels.
        flip: flip horizontally with probability 1/2.

    Returns:
        Tensor ``(3, crop_size, crop_size)`` float32 in [-1, 1].
    """
    do_flip = bool(flip) and rng.random() < 0.5
    if do_flip:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = _io().resize_shorter_side(img, load_size)
    w, h = img.size
    x0 = int(rng.integers(0, w - crop_size + 1))
    y0 = int(rng.integers(0, h - crop_size + 1))
    return _to_tensor(img.crop((x0, y0, x0 + crop_size, y0 + crop_size)))


def eval_transform(img: Image.Image, *, load_size: int, crop_size: int) -> torch.Tensor:
    """Deterministic preprocessing: resize the shorter side to ``load_size``, centre crop, [-1, 1].

    Returns:
        Tensor ``(3, crop_size, crop_size)`` float32 in [-1, 1].
    """
    io = _io()
    return _to_tensor(io.center_crop(io.resize_shorter_side(img, load_size), crop_size))


def _list_folder(root: str | Path, what: str) -> list[Path]:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {root}")
    files = [Path(p) for p in _io().list_images(root, recursive=True)]
    if not files:
        raise ValueError(f"{what} folder {root} contains no image files (searched recursively)")
    return files


class _Loader:
    """Decodes files of one domain, falling through to the next file when one is unreadable."""

    def __init__(self, files: Sequence[Path], domain: str):
        self.files = list(files)
        self.domain = domain
        self.bad: set[str] = set()  # worker-local memory of unreadable files

    def load(self, index: int) -> tuple[Image.Image, str, list[str]]:
        io = _io()
        n = len(self.files)
        newly_bad: list[str] = []
        for k in range(n):
            path = self.files[(index + k) % n]
            key = str(path)
            if key in self.bad:
                continue
            try:
                img = io.load_image(path)
                img.load()
            except (io.ImageLoadError, OSError, ValueError, SyntaxError) as err:
                self.bad.add(key)
                newly_bad.append(f"{key}\t{err}")
                continue
            return img, key, newly_bad
        raise RuntimeError(
            f"all {n} image files of domain {self.domain} are unreadable "
            f"(first: {self.files[0]}); check the folder"
        )


class UnpairedImageFolders(Dataset):
    """Two unaligned image folders: item ``i`` pairs A[i mod |A|] with a random B image.

    Args:
        root_a: folder of domain A images (searched recursively; non-image files ignored). In this
            project A = paintings, B = photos.
        root_b: folder of domain B images.
        load_size: shorter side after resizing, in pixels.
        crop_size: square crop side in pixels (<= ``load_size``).
        train: random flip/crop (True) or centre crop without flip (False).
        flip: allow random horizontal flips in training.
        seed: seed of the data stream (B indices, flips, crops).
        exclude: paths to leave out (e.g. the held-out sample images).

    Items are dicts: ``"a"``, ``"b"``: tensors ``(3, crop_size, crop_size)`` float32 in [-1, 1];
    ``"path_a"``, ``"path_b"``: file names; ``"skipped"``: list of ``"path\\treason"`` strings for
    files found unreadable while producing this item (each reported once per loader process).

    Keys may be plain indices or ``(epoch, index)`` tuples (from :class:`ResumableDistributedSampler`).

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a folder holds no image files, or ``crop_size > load_size``.
    """

    def __init__(self, root_a: str | Path, root_b: str | Path, *, load_size: int = 256,
                 crop_size: int = 216, train: bool = True, flip: bool = True, seed: int = 0,
                 exclude: Iterable[str | Path] = ()):
        if not (isinstance(crop_size, int) and crop_size >= 16):
            raise ValueError(f"crop_size must be an int >= 16 pixels, got {crop_size!r}")
        if not (isinstance(load_size, int) and load_size >= crop_size):
            raise ValueError(f"load_size ({load_size!r}) must be an int >= crop_size ({crop_size})")
        skip = {str(Path(p)) for p in exclude}
        files_a = [p for p in _list_folder(root_a, "domain A") if str(p) not in skip]
        files_b = [p for p in _list_folder(root_b, "domain B") if str(p) not in skip]
        if not files_a or not files_b:
            raise ValueError("no training images left after excluding the held-out images")
        self.root_a, self.root_b = Path(root_a), Path(root_b)
        self._a = _Loader(files_a, "A")
        self._b = _Loader(files_b, "B")
        self.load_size, self.crop_size = int(load_size), int(crop_size)
        self.train, self.flip, self.seed = bool(train), bool(flip), int(seed)

    @property
    def files_a(self) -> list[Path]:
        return self._a.files

    @property
    def files_b(self) -> list[Path]:
        return self._b.files

    def __len__(self) -> int:
        return max(len(self._a.files), len(self._b.files))

    def _transform(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        if self.train:
            return train_transform(img, rng, load_size=self.load_size, crop_size=self.crop_size,
                                   flip=self.flip)
        return eval_transform(img, load_size=self.load_size, crop_size=self.crop_size)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (0, int(key))
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = np.random.default_rng([self.seed, epoch, index])
        ib = int(rng.integers(len(self._b.files)))
        img_a, path_a, bad_a = self._a.load(index % len(self._a.files))
        img_b, path_b, bad_b = self._b.load(ib)
        return {
            "a": self._transform(img_a, rng),
            "b": self._transform(img_b, rng),
            "path_a": path_a,
            "path_b": path_b,
            "skipped": bad_a + bad_b,
        }


class ImageList(Dataset):
    """Fixed list of image files with the deterministic test transform (held-out samples, style bank).

    Items: ``(tensor (3, crop_size, crop_size) in [-1, 1], path)``. Unreadable files are dropped at
    construction with one warning each and listed in ``skipped`` (``{path: reason}``).
    """

    def __init__(self, files: Sequence[str | Path], *, load_size: int, crop_size: int):
        io = _io()
        self.items: list[tuple[torch.Tensor, str]] = []
        self.skipped: dict[str, str] = {}  # unreadable file -> reason (each also warned about)
        for f in files:
            try:
                img = io.load_image(f)
            except (io.ImageLoadError, OSError, ValueError, SyntaxError) as err:
                self.skipped[str(f)] = str(err)
                warnings.warn(f"skipping unreadable image file {f}: {err}", stacklevel=2)
                continue
            self.items.append((eval_transform(img, load_size=load_size, crop_size=crop_size), str(f)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        return self.items[i]

    def stack(self) -> torch.Tensor:
        """All images as one tensor ``(N, 3, crop_size, crop_size)`` in [-1, 1]."""
        if not self.items:
            return torch.empty(0, 3, 0, 0)
        return torch.stack([t for t, _ in self.items])


def collate_unpaired(items: list[dict]) -> dict:
    """Collate :class:`UnpairedImageFolders` items: stacks images, lists paths, flattens ``skipped``."""
    return {
        "a": torch.stack([it["a"] for it in items]),
        "b": torch.stack([it["b"] for it in items]),
        "path_a": [it["path_a"] for it in items],
        "path_b": [it["path_b"] for it in items],
        "skipped": [s for it in items for s in it["skipped"]],
    }


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(epoch, index)`` keys and can start mid-epoch.

    Call :meth:`set_epoch` (or :meth:`set_position`) before iterating, as with ``DistributedSampler``.
    ``set_position(epoch, start)`` skips the first ``start`` indices of this rank's shard for the next
    iteration only; later epochs start at 0. The order of indices is ``DistributedSampler``'s
    (a permutation seeded by ``seed + epoch`` when ``shuffle``), so it does not depend on the start.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Next iteration covers epoch ``epoch`` from position ``start`` of this rank's shard."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start must be in [0, {self.num_samples}], got {start}")
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start:]
        epoch = self.epoch
        self.start = 0
        return iter([(epoch, i) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


class BadFileReporter:
    """Emits one ``UserWarning`` per unreadable file named in batches' ``"skipped"`` lists."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def update(self, skipped: Iterable[str]) -> list[str]:
        """Warn about files not reported before; returns their paths."""
        new = []
        for entry in skipped:
            path, _, reason = entry.partition("\t")
            if path in self.seen:
                continue
            self.seen[path] = reason
            new.append(path)
            warnings.warn(f"skipping unreadable image file {path}: {reason}", UserWarning, stacklevel=2)
        return new


def batches_per_epoch(num_items: int, world_size: int, batch_size: int) -> int:
    """Number of full batches one rank draws per epoch (``drop_last`` batching of its shard)."""
    return math.ceil(num_items / world_size) // batch_size
