"""Data sets of the classification study: bundled digits (CPU), CIFAR-10/100, Tiny ImageNet, ImageNet.

- ``digits``: scikit-learn's bundled 8×8 handwritten digits (``sklearn.datasets.load_digits``: 1797
  grayscale images, 10 classes, UCI ML hand-written digits). It ships inside the scikit-learn wheel, so it
  needs no download and no data directory, it is real (not synthetic) image data with CIFAR-10's number of
  classes, and it is small enough for CPU studies. torchvision bundles no image data set, and
  scikit-learn's other image sets either need a download (Olivetti faces, LFW) or hold two photos
  (``load_sample_images``). The images are upsampled bilinearly (8×8 → ``image_size``, default 16) so that
  the network has spatial extent to work with; a fixed, stratified, seeded 80/20 split gives train/test.
- ``cifar10`` / ``cifar100``: ``torchvision.datasets.CIFAR10/100`` under a local ``root``; downloaded only
  when ``download=True`` (``--download`` on the command line).
- ``tiny_imagenet``: the official layout (``root/train/<wnid>/images/*.JPEG`` read as an ImageFolder, and
  ``root/val/images`` + ``root/val/val_annotations.txt``), or plain ImageFolders ``root/{train,val}``.
- ``imagenet``: ImageFolders ``root/train`` and ``root/val``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

__all__ = ["DATASETS", "DataConfig", "build_datasets", "load_digits"]

DATASETS = ("digits", "cifar10", "cifar100", "tiny_imagenet", "imagenet")

_CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
_CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DictConfig:
    """``from_dict`` (unknown keys raise ``ValueError``) and ``to_dict`` for the config dataclasses."""

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            what = cls.__name__.removesuffix("Config").lower() + " config"  # "data config", "model config"
            raise ValueError(f"unknown {what} keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DataConfig(DictConfig):
    """Data section of a classification config (every field is a YAML key under ``data:``)."""

    name: str = "digits"  # digits | cifar10 | cifar100 | tiny_imagenet | imagenet
    root: str = "data"  # data directory (unused by digits)
    download: bool = False  # CIFAR only: download into root when missing (never implicit)
    image_size: int | None = None  # digits: upsampled side (default 16); ImageFolder sets: crop size
    test_fraction: float = 0.2  # digits: held-out fraction (stratified, seeded)
    split_seed: int = 0  # digits: seed of the train/test split
    augment: bool = True  # random crop + horizontal flip (CIFAR, ImageFolder sets); digits: none
    num_workers: int = 0  # DataLoader workers



def load_digits(*, image_size: int = 16, test_fraction: float = 0.2, split_seed: int = 0):
    """scikit-learn's bundled 8×8 digits as normalised image tensors, split into train and test.

    Args:
        image_size: side of the (bilinearly) upsampled images, >= 8.
        test_fraction: fraction of every class held out for testing, in (0, 1).
        split_seed: seed of the stratified split (the same seed gives the same split).

    Returns:
        ``(train, test)`` :class:`torch.utils.data.TensorDataset` of images ``(N, 1, S, S)`` float32
        (standardised with the training set's mean and std) and labels ``(N,)`` int64 in [0, 9]. N = 1797 in
        total.

    Raises:
        ValueError: ``image_size < 8`` or ``test_fraction`` outside (0, 1).
        ImportError: scikit-learn is not installed (it is a dependency of this project).

    Example:
        >>> train, test = load_digits(image_size=16)
        >>> len(train) + len(test), tuple(train[0][0].shape)
        (1797, (1, 16, 16))
    """
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 (the digits are 8x8), got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8) in [0, 1]
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    gen = torch.Generator().manual_seed(split_seed)
    test_idx = []
    for c in range(10):
        idx = torch.nonzero(y == c).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        test_idx.append(idx[: max(1, round(test_fraction * len(idx)))])
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    test_mask[torch.cat(test_idx)] = True
    x_train, x_test = x[~test_mask], x[test_mask]
    mean, std = x_train.mean(), x_train.std()
    return (TensorDataset((x_train - mean) / std, y[~test_mask]),
            TensorDataset((x_test - mean) / std, y[test_mask]))


class _TinyImageNetVal(Dataset):
    """Tiny ImageNet's official validation folder: ``val/images/*.JPEG`` + ``val_annotations.txt``."""

    def __init__(self, val_dir: Path, class_to_idx: dict[str, int], transform) -> None:
        from torchvision.datasets.folder import default_loader

        self.loader, self.transform = default_loader, transform
        self.samples = []
        for line in (val_dir / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in class_to_idx:
                self.samples.append((val_dir / "images" / parts[0], class_to_idx[parts[1]]))
        if not self.samples:
            raise ValueError(f"no usable lines in {val_dir / 'val_annotations.txt'}")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, target = self.samples[i]
        return self.transform(self.loader(path)), target


def build_datasets(cfg: DataConfig) -> tuple[Dataset, Dataset, dict]:
    """Train and test data sets for a :class:`DataConfig`.

    Returns:
        ``(train, test, info)`` where the data sets yield ``(image (C, H, W) float32, label int)`` and
        ``info = {"num_classes", "in_channels", "image_size"}``.

    Raises:
        ValueError: unknown data set name.
        FileNotFoundError: the data set is not under ``cfg.root`` (the message says how to get it; CIFAR
            downloads only with ``download: true`` / ``--download``).
    """
    name = cfg.name
    if name == "digits":
        size = cfg.image_size or 16
        train, test = load_digits(image_size=size, test_fraction=cfg.test_fraction, split_seed=cfg.split_seed)
        return train, test, {"num_classes": 10, "in_channels": 1, "image_size": size}

    import torchvision.transforms as T
    from torchvision import datasets

    root = Path(cfg.root).expanduser()
    if name in ("cifar10", "cifar100"):
        size = cfg.image_size or 32
        norm = T.Normalize(_CIFAR_MEAN[name], _CIFAR_STD[name])
        aug = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if cfg.augment else []
        resize = [T.Resize(size)] if size != 32 else []
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:
            train = cls(str(root), train=True, download=cfg.download,
                        transform=T.Compose(aug + resize + [T.ToTensor(), norm]))
            test = cls(str(root), train=False, download=cfg.download,
                       transform=T.Compose(resize + [T.ToTensor(), norm]))
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted."
            raise FileNotFoundError(
                f"{name} not found under {root} ({e}); set data.root to the folder that holds "
                f"'cifar-10-batches-py' / 'cifar-100-python', or pass --download to fetch it") from e
        return train, test, {"num_classes": 10 if name == "cifar10" else 100, "in_channels": 3, "image_size": size}

    if name in ("tiny_imagenet", "imagenet"):
        default = 64 if name == "tiny_imagenet" else 224
        size = cfg.image_size or default
        norm = T.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)
        if name == "tiny_imagenet":
            aug = [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()] if cfg.augment else []
            train_tf = T.Compose(([T.Resize(size)] if size != 64 else []) + aug + [T.ToTensor(), norm])
            test_tf = T.Compose(([T.Resize(size)] if size != 64 else []) + [T.ToTensor(), norm])
        else:
            aug = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()] if cfg.augment else \
                [T.Resize(round(size * 256 / 224)), T.CenterCrop(size)]
            train_tf = T.Compose(aug + [T.ToTensor(), norm])
            test_tf = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(), norm])
        if not (root / "train").is_dir():
            raise FileNotFoundError(f"{name}: expected ImageFolder directories {root / 'train'} and "
                                    f"{root / 'val'} (set data.root); nothing is downloaded")
        train = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        val_dir = root / "val"
        if (val_dir / "val_annotations.txt").is_file():
            test = _TinyImageNetVal(val_dir, train.class_to_idx, test_tf)
        elif val_dir.is_dir():
            test = datasets.ImageFolder(str(val_dir), transform=test_tf)
            if test.class_to_idx != train.class_to_idx:
                raise ValueError(f"{name}: the class folders of {val_dir} differ from those of {root / 'train'}")
        else:
            raise FileNotFoundError(f"{name}: validation folder {val_dir} not found")
        return train, test, {"num_classes": len(train.classes), "in_channels": 3, "image_size": size}

    raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")

