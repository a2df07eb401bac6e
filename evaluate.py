"""Evaluation CLI: domain accuracy, sharpness, LPIPS and timing (Tables VIII-X of Wang et al., TPAMI 2021).

Sub-commands::

    python evaluate.py train-classifier --data ARTWORKS_ROOT --weights inception_v3_google-0cc3c7bd.pth \\
        --out classifiers/artworks
    python evaluate.py stylize-and-score --checkpoint svd-taylor=checkpoints/monet.safetensors \\
        --checkpoint color --classifier classifiers/artworks.safetensors --data ARTWORKS_ROOT \\
        --lpips-weights alexnet-owt-7be5be79.pth --out results/
    python evaluate.py plot-losses --logdir runs/monet --out losses.png

Data layout (CycleGAN / Artworks): ``ROOT/<domain>2photo/{trainA,testA,trainB,testB}`` with A = paintings of
``<domain>`` and B = photos; ``ROOT`` may also be a single ``<domain>2photo`` folder. The photos of every
pair form the class ``photo`` (deduplicated by file name).

Offline: every weights file is an explicit local path. Nothing is downloaded unless ``--download`` is
given (then torchvision's file goes to the torch hub cache, ``torch.hub.get_dir()/checkpoints``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

PHOTO = "photo"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Smallest input side of torchvision's inception_v3, and the smallest at which its aux head works.
INCEPTION_MIN_SIZE = 75
INCEPTION_AUX_MIN_SIZE = 299
#: torchvision's ImageNet weight files (what ``--weights`` / ``--lpips-weights`` expect).
WEIGHT_FILES = {
    "inception_v3": "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
}


#: Scalar tags plotted as training losses: train.py logs ``gen/<term>`` and ``dis/<term>``.
LOSS_TAGS = r"loss|(^|/)(gen|dis)/"


class EvaluationError(RuntimeError):
    """A user-facing problem (missing data, missing weights, bad arguments); printed without a traceback."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ==========================================================================================================
# data
# ==========================================================================================================
@dataclass
class DomainImages:
    """Image files of one domain (class) split into train and test."""

    name: str
    train: list[Path] = field(default_factory=list)
    test: list[Path] = field(default_factory=list)


def _pair_dirs(root: Path) -> dict[str, Path]:
    """``{domain: <domain>2photo folder}`` under ``root`` (or ``root`` itself when it is such a folder)."""
    root = Path(root)
    if not root.is_dir():
        raise EvaluationError(f"data folder not found: {root}")
    cands = [root] if re.fullmatch(r".+2photo", root.name) else sorted(p for p in root.iterdir() if p.is_dir())
    pairs = {}
    for p in cands:
        m = re.fullmatch(r"(.+)2photo", p.name)
        if m and any((p / s).is_dir() for s in ("trainA", "testA", "trainB", "testB")):
            pairs[m.group(1)] = p
    if not pairs:
        raise EvaluationError(
            f"no <domain>2photo folders with trainA/testA/trainB/testB in {root} "
            "(expected the CycleGAN/Artworks layout, e.g. ROOT/monet2photo/trainA)")
    return pairs


def _images(folder: Path) -> list[Path]:
    from wct.io import list_images

    return list_images(folder) if folder.is_dir() else []


def discover_domains(root: str | os.PathLike) -> dict[str, DomainImages]:
    """Classes of the domain classifier: every painting domain plus ``photo``.

    Args:
        root: Artworks root (``ROOT/<domain>2photo/{trainA,testA,trainB,testB}``) or one pair folder.

    Returns:
        ``{name: DomainImages}`` sorted by name; ``photo`` merges every pair's ``trainB``/``testB`` (a file
        name seen twice is used once).

    Raises:
        EvaluationError: no such folder or no pair folder in it.
    """
    out: dict[str, DomainImages] = {}
    photo = DomainImages(PHOTO)
    seen: set[tuple[str, str]] = set()
    for dom, p in _pair_dirs(Path(root)).items():
        out[dom] = DomainImages(dom, _images(p / "trainA"), _images(p / "testA"))
        for split in ("train", "test"):
            for f in _images(p / f"{split}B"):
                if (split, f.name) not in seen:
                    seen.add((split, f.name))
                    getattr(photo, split).append(f)
    out[PHOTO] = photo
    return dict(sorted(out.items()))


def style_domains(root: str | os.PathLike) -> dict[str, tuple[list[Path], list[Path]]]:
    """``{domain: (test paintings, test photos)}`` of every pair folder that has both test splits."""
    out = {}
    for dom, p in _pair_dirs(Path(root)).items():
        paintings, photos = _images(p / "testA"), _images(p / "testB")
        if paintings and photos:
            out[dom] = (paintings, photos)
        else:
            _log(f"note: {p} has no testA or testB images; domain '{dom}' is not scored")
    if not out:
        raise EvaluationError(f"no domain under {root} has both testA (paintings) and testB (photos) images")
    return out


# ==========================================================================================================
# weights files (offline by default)
# ==========================================================================================================
def resolve_weights(kind: str, given: str | None, *, download: bool, option: str) -> Path | None:
    """Local weights file for ``kind`` (``inception_v3``, ``alex`` or ``vgg``).

    ``given`` is a path, ``"none"`` (returns ``None``: train from scratch / skip) or ``None`` (not given:
    with ``download`` torchvision's file is fetched into the torch hub cache, else an error explains how to
    get it). Nothing is downloaded without ``download``.

    Raises:
        EvaluationError: a missing file, or no file and no ``--download``.
    """
    url = WEIGHT_FILES[kind]
    fname = url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / fname
    if given is not None and given.lower() == "none":
        return None
    if given is not None:
        p = Path(given).expanduser()
        if not p.is_file():
            raise EvaluationError(f"{option} {given}: file not found")
        return p
    if download:
        if not cached.is_file():
            _log(f"downloading {url} -> {cached}")
            cached.parent.mkdir(parents=True, exist_ok=True)
            hash_prefix = re.search(r"-([0-9a-f]{8,})\.", fname)
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=hash_prefix.group(1) if hash_prefix
                                           else None, progress=True)
        return cached
    hint = f" (a copy exists at {cached}: pass {option} {cached})" if cached.is_file() else ""
    raise EvaluationError(
        f"{option} is required: the ImageNet weights of torchvision's "
        f"{'inception_v3' if kind == 'inception_v3' else kind} as a local file{hint}. Get {fname} from "
        f"{url} on a machine with network access and pass {option} PATH, or add --download to fetch it "
        f"now; {option} none skips them{' (trains from scratch)' if kind == 'inception_v3' else ''}.")


# ==========================================================================================================
# domain classifier (torchvision inception_v3)
# ==========================================================================================================
#: ``train-classifier`` optimisers and their default learning rates (``--optimizer`` / ``--lr``).
CLASSIFIER_DEFAULT_LR = {"adam": 1e-3, "sgd": 0.01}


def build_inception(num_classes: int, *, image_size: int = 299, imagenet_state: dict | None = None) -> nn.Module:
    """torchvision ``inception_v3`` (``weights=None``) for ``num_classes`` domains, optionally from ImageNet.

    The aux head (``AuxLogits``) only fits inputs of at least 299 px; below that it is left out
    (``aux_logits=False``). ``transform_input=True`` as for torchvision's ImageNet weights, so inputs are
    ImageNet-normalised (:func:`preprocess`).

    Args:
        num_classes: number of domains.
        image_size: input side in pixels, ``>= 75``.
        imagenet_state: torchvision's ``inception_v3_google`` state dict; every tensor but the two final
            linear layers (``fc``, ``AuxLogits.fc``) is copied. Those heads are zero-initialised either way.

    Raises:
        EvaluationError: image size below 75 px, or a state dict that is not torchvision's inception_v3.
    """
    import torchvision

    if image_size < INCEPTION_MIN_SIZE:
        raise EvaluationError(f"inception_v3 needs images of at least {INCEPTION_MIN_SIZE} px, got {image_size}")
    aux = image_size >= INCEPTION_AUX_MIN_SIZE
    model = torchvision.models.inception_v3(weights=None, num_classes=num_classes, aux_logits=aux,
                                            transform_input=True, init_weights=imagenet_state is None)
    if imagenet_state is not None:
        own = model.state_dict()
        skip = ("fc.", "AuxLogits.fc.")
        wanted = {k for k in own if not k.startswith(skip)}
        bad = sorted(k for k in wanted if k not in imagenet_state or imagenet_state[k].shape != own[k].shape)
        if bad:
            raise EvaluationError(
                f"the --weights file is not torchvision's inception_v3 state dict: {len(bad)} missing or "
                f"mismatched tensors, e.g. {bad[:3]}")
        model.load_state_dict({k: imagenet_state[k] for k in wanted}, strict=False)
    # New classification heads start at zero (uniform prediction, loss ln K): torchvision's from-scratch
    # init (truncated normal, std 0.1, over 2,048 features) starts with logits of several units and a loss
    # of ~4 for 4 domains, which SGD was still working off after 500 steps on artworks-mini.
    heads = [model.fc] + ([model.AuxLogits.fc] if aux else [])
    with torch.no_grad():
        for head in heads:
            head.weight.zero_()
            head.bias.zero_()
    return model


def preprocess(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, S, S)`` resized (bilinear, antialiased) and ImageNet-normalised."""
    if images.shape[-2:] != (image_size, image_size):
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True,
                               align_corners=False)
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


class _ClassifierData(torch.utils.data.Dataset):
    def __init__(self, items: list[tuple[Path, int]], image_size: int, train: bool, seed: int = 0) -> None:
        self.items, self.size, self.train, self.seed = items, image_size, train, seed
        self.bad: set[Path] = set()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from torchvision.transforms import v2

        from wct.io import ImageNotice, load_image, pil_to_tensor

        for k in range(len(self.items)):  # an unreadable file is reported once and replaced by the next one
            path, label = self.items[(i + k) % len(self.items)]
            if path in self.bad:
                continue
            try:
                with warnings.catch_warnings():  # the downscale notice is expected here
                    warnings.simplefilter("ignore", ImageNotice)
                    img = pil_to_tensor(load_image(path, max_side=2 * self.size))[0]
                break
            except ValueError as e:
                self.bad.add(path)
                _log(f"warning: skipping unreadable image {path}: {e}")
        else:
            raise EvaluationError("none of the classifier's images can be read")
        if self.train:
            img = v2.RandomResizedCrop(self.size, scale=(0.35, 1.0), antialias=True)(img)
            if torch.rand(()) < 0.5:
                img = img.flip(-1)
        else:
            img = F.interpolate(img[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                                align_corners=False)[0]
        return img, label


def _device(name: str) -> torch.device:
    """``models.inference.resolve_device`` with its ``ValueError`` (CUDA asked for, none present) as a
    clean CLI error."""
    from models.inference import resolve_device

    try:
        return resolve_device(name)
    except ValueError as exc:
        raise EvaluationError(f"--device {name}: {exc}") from exc


@torch.no_grad()
def _accuracy(model: nn.Module, data: _ClassifierData, classes: list[str], batch_size: int,
              device: torch.device) -> dict[str, float]:
    model.eval()
    correct = {c: 0 for c in classes}
    count = {c: 0 for c in classes}
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    for x, y in loader:
        pred = model(preprocess_normalised(x.to(device))).argmax(1).cpu()
        for p, t in zip(pred.tolist(), y.tolist(), strict=True):
            count[classes[t]] += 1
            correct[classes[t]] += int(p == t)
    return {c: correct[c] / count[c] for c in classes if count[c]}


def preprocess_normalised(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of ``(B, 3, S, S)`` in [0, 1] already at the classifier size."""
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def train_classifier(
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights: Path | None,
    image_size: int = 299,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    optimizer: str = "adam",
    aux_weight: float = 0.4,
    seed: int = 0,
    device: str = "auto",
    workers: int = 0,
    save_every: int = 500,
    eval_batch_size: int = 32,
) -> Path:
    """Fine-tune inception_v3 on the domains under ``data`` and save ``out.safetensors`` + ``out.json``.

    Training: class-balanced sampling (every domain equally often, whatever its size), random resized crops
    (scale 0.35-1) and horizontal flips, Adam (default; lr 1e-3) or SGD with momentum 0.9 (lr 0.01) and a
    cosine learning-rate schedule, loss
    ``CE(logits) + aux_weight * CE(aux_logits)`` when the aux head is active (299 px and above; Szegedy et
    al., "Rethinking the Inception Architecture", CVPR 2016, Sec. 8). The checkpoint is written every
    ``save_every`` steps and at the end (``models.save_checkpoint``: safetensors + JSON, atomic).

    Why Adam by default: from random initialisation (``weights=None``, the only choice offline) SGD at
    lr 0.01 / 0.002 stayed at chance on artworks-mini (cross-entropy ~1.5 for 4 domains after 500 steps of
    batch 16 at 96 px) and could not even fit 32 fixed images in 40 steps, which Adam at 1e-3 did (loss
    1.39 -> 0.06). ``optimizer="sgd"`` keeps the usual fine-tuning recipe for ImageNet weights.

    Returns:
        The ``.safetensors`` path. Its JSON config has ``arch``, ``classes``, ``image_size``,
        ``aux_logits``; ``extra`` has the per-class test accuracy and the loss history.

    Raises:
        EvaluationError: no training images, a class without images, bad sizes, an unknown optimizer.
    """
    from tqdm import tqdm

    from models import save_checkpoint
    from wct.metrics import load_state_dict_file

    if batch_size < 2:
        raise EvaluationError("--batch-size must be >= 2 (batch norm in training mode)")
    if steps < 1:
        raise EvaluationError("--steps must be >= 1")
    if optimizer not in CLASSIFIER_DEFAULT_LR:
        raise EvaluationError(f"--optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    doms = discover_domains(data)
    empty = [d for d, v in doms.items() if not v.train]
    if empty:
        raise EvaluationError(f"no training images for domain(s) {empty} under {data}")
    classes = list(doms)
    torch.manual_seed(seed)
    random.seed(seed)
    dev = _device(device)
    state = load_state_dict_file(weights) if weights is not None else None
    model = build_inception(len(classes), image_size=image_size, imagenet_state=state).to(dev)
    aux = model.aux_logits
    del state
    items = [(p, i) for i, c in enumerate(classes) for p in doms[c].train]
    counts = {c: len(doms[c].train) for c in classes}
    sample_w = torch.tensor([1.0 / counts[classes[y]] for _, y in items], dtype=torch.double)
    gen = torch.Generator().manual_seed(seed)
    sampler = torch.utils.data.WeightedRandomSampler(sample_w, steps * batch_size, replacement=True,
                                                     generator=gen)
    loader = torch.utils.data.DataLoader(_ClassifierData(items, image_size, train=True), batch_size=batch_size,
                                         sampler=sampler, num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0)
    lr = CLASSIFIER_DEFAULT_LR[optimizer] if lr is None else lr
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    out = Path(out)
    if out.suffix in (".safetensors", ".json"):
        out = out.with_suffix("")
    config = {"arch": "inception_v3", "classes": classes, "image_size": image_size, "aux_logits": aux,
              "transform_input": True, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
              "init": str(weights) if weights is not None else "none (random init)",
              "steps": steps, "batch_size": batch_size, "optimizer": optimizer, "lr": lr,
              "weight_decay": weight_decay,
              "aux_weight": aux_weight, "seed": seed, "data": str(data)}
    history: list[list[float]] = []

    def save(step: int, test_acc: dict | None) -> None:
        save_checkpoint(out.with_suffix(".safetensors"), {"classifier": model}, config,
                        extra={"step": step, "train_counts": counts, "test_accuracy": test_acc,
                               "loss_history": history})

    _log(f"train-classifier: classes {classes} (train images {counts}), {image_size} px, aux head "
         f"{'on' if aux else 'off (needs >= 299 px)'}, init {config['init']}, device {dev}")
    model.train()
    ce = nn.CrossEntropyLoss()
    bar = tqdm(loader, total=steps, desc="train-classifier", file=sys.stderr, disable=None)
    for step, (x, y) in enumerate(bar, start=1):
        x, y = preprocess_normalised(x.to(dev)), y.to(dev)
        outp = model(x)
        if isinstance(outp, tuple):  # InceptionOutputs(logits, aux_logits) in training mode with the aux head
            loss = ce(outp.logits, y) + aux_weight * ce(outp.aux_logits, y)
        else:
            loss = ce(outp, y)
        if not torch.isfinite(loss):
            raise EvaluationError(f"non-finite loss at step {step}; lower --lr (now {lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append([step, float(loss.detach())])
        bar.set_postfix(loss=f"{history[-1][1]:.3f}")
        if save_every and step % save_every == 0 and step < steps:
            save(step, None)
    bar.close()
    test_items = [(p, i) for i, c in enumerate(classes) for p in doms[c].test]
    test_acc = _accuracy(model, _ClassifierData(test_items, image_size, train=False), classes,
                         eval_batch_size, dev) if test_items else {}
    save(steps, test_acc)
    _log(f"test accuracy per domain: { {k: round(v, 3) for k, v in test_acc.items()} }")
    _log(f"saved {out.with_suffix('.safetensors')} (+ .json)")
    return out.with_suffix(".safetensors")


def load_classifier(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a classifier written by :func:`train_classifier` (never unpickles); returns ``(model, config)``.

    Raises:
        FileNotFoundError: missing files; EvaluationError: not a classifier checkpoint.
    """
    from models import load_checkpoint

    ckpt = load_checkpoint(path, device="cpu")
    cfg = ckpt.get("config") or {}
    if cfg.get("arch") != "inception_v3" or "classifier" not in ckpt["nets"]:
        raise EvaluationError(f"{path} is not a domain classifier written by 'evaluate.py train-classifier'")
    import torchvision

    model = torchvision.models.inception_v3(weights=None, num_classes=len(cfg["classes"]),
                                            aux_logits=bool(cfg["aux_logits"]),
                                            transform_input=bool(cfg.get("transform_input", True)),
                                            init_weights=False)
    model.load_state_dict(ckpt["nets"]["classifier"], strict=True)
    return model.to(device).eval(), cfg


@torch.no_grad()
def classify(model: nn.Module, config: dict, images: torch.Tensor) -> torch.Tensor:
    """Predicted class indices ``(B,)`` of images ``(B, 3, H, W)`` in [0, 1] (resized to the classifier size)."""
    dev = next(model.parameters()).device
    return model(preprocess(images.to(dev), int(config["image_size"]))).argmax(1).cpu()


# ==========================================================================================================
# stylize-and-score
# ==========================================================================================================
@dataclass
class RowSpec:
    """One ``--checkpoint`` entry: table row ``label``, engine ``source`` and target ``domain`` (None: all)."""

    label: str
    source: str
    domain: str | None = None


def parse_checkpoint_spec(spec: str) -> RowSpec:
    """Parse ``[LABEL=]SOURCE[@DOMAIN]``; SOURCE is ``color``, a checkpoint name or a path.

    >>> parse_checkpoint_spec("svd-taylor=runs/monet.safetensors@monet")
    RowSpec(label='svd-taylor', source='runs/monet.safetensors', domain='monet')
    >>> parse_checkpoint_spec("color")
    RowSpec(label='color', source='color', domain=None)
    """
    label, sep, rest = spec.partition("=")
    if not sep:
        label, rest = "", spec
    source, _, domain = rest.rpartition("@") if "@" in rest else (rest, "", "")
    source = source.strip()
    if not source:
        raise EvaluationError(f"--checkpoint {spec!r}: expected [LABEL=]SOURCE[@DOMAIN]")
    if not label:
        label = "color" if source == "color" else Path(source).stem
    return RowSpec(label.strip(), source, domain.strip() or None)


def infer_domain(source: str, domains: Sequence[str]) -> str | None:
    """Target domain of a generator checkpoint, or None (then it is scored on every domain).

    Looked up, in order: ``extra["target_domain"]`` of its JSON, a ``<domain>2photo`` folder in the
    training data paths recorded by ``train.py`` export (``extra["train_config"]["data"]``), the file stem
    (``monet``, ``monet-svd-taylor``).
    """
    if source == "color":
        return None
    from models.inference import DEFAULT_CHECKPOINT_DIR

    p = Path(source)
    if p.suffix != ".safetensors" and not p.exists():
        p = DEFAULT_CHECKPOINT_DIR / f"{source}.safetensors"
    js = p.with_suffix(".json")
    try:
        meta = json.loads(js.read_text(encoding="utf-8")) if js.is_file() else {}
    except (OSError, json.JSONDecodeError):
        meta = {}
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    if extra.get("target_domain") in domains:
        return extra["target_domain"]
    data = ((extra.get("train_config") or {}).get("data") or {}) if isinstance(extra.get("train_config"), dict) \
        else {}
    key = "train_b" if extra.get("direction") == "a2b" else "train_a"
    for value in (data.get(key), data.get("root")):
        if isinstance(value, str):
            for m in re.finditer(r"([A-Za-z0-9_]+)2photo", value):
                if m.group(1) in domains:
                    return m.group(1)
    stem = p.stem.lower()
    for d in sorted(domains, key=len, reverse=True):
        if stem == d or re.match(rf"{re.escape(d)}[-_.]", stem):
            return d
    return None


def _load_eval_image(path: Path, size: int | None):
    from wct.io import ImageNotice, load_image, resize_shorter_side

    with warnings.catch_warnings():  # downscaling to the evaluation size is intended
        warnings.simplefilter("ignore", ImageNotice)
        img = load_image(path, max_side=None if size else 1024)
    return resize_shorter_side(img, size) if size else img


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return sum(xs) / len(xs) if xs else None


def _std(xs: Sequence[float]) -> float | None:
    return statistics.pstdev(xs) if len(xs) > 1 else (0.0 if xs else None)


class _Scorer:
    """Accumulates accuracy, sharpness and LPIPS over images of one (row, domain) cell."""

    def __init__(self, target: int | None, classifier, lpips_model) -> None:
        self.target, self.classifier, self.lpips = target, classifier, lpips_model
        self.sharp: list[float] = []
        self.lp: list[float] = []
        self.correct = 0
        self.n = 0
        self._buf: list[torch.Tensor] = []

    def add(self, img: torch.Tensor, content: torch.Tensor | None) -> None:
        from wct.metrics import sharpness

        self.n += 1
        self.sharp.append(float(sharpness(img)))
        if self.lpips is not None and content is not None:
            dev = next(self.lpips.parameters()).device
            self.lp.append(float(self.lpips(content.to(dev), img.to(dev))))
        if self.classifier is not None and self.target is not None:
            self._buf.append(img)
            if len(self._buf) >= 16:
                self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        model, cfg = self.classifier
        size = int(cfg["image_size"])
        x = torch.cat([F.interpolate(t, size=(size, size), mode="bilinear", antialias=True,
                                     align_corners=False) for t in self._buf])
        self.correct += int((classify(model, cfg, x) == self.target).sum())
        self._buf = []

    def result(self) -> dict[str, Any]:
        self._flush()
        acc = self.correct / self.n if (self.classifier is not None and self.target is not None and self.n) \
            else None
        return {"n": self.n, "accuracy": acc, "sharpness": _mean(self.sharp), "sharpness_std": _std(self.sharp),
                "lpips": _mean(self.lp), "lpips_std": _std(self.lp)}


def _triptych(content, style, out):
    from PIL import Image

    h = content.size[1]
    style = style.resize((max(1, round(style.size[0] * h / style.size[1])), h))
    canvas = Image.new("RGB", (content.size[0] + style.size[0] + out.size[0], h), "white")
    x = 0
    for im in (content, style, out):
        canvas.paste(im, (x, 0))
        x += im.size[0]
    return canvas


def stylize_and_score(
    checkpoints: Sequence[str],
    *,
    data: str | os.PathLike,
    out: str | os.PathLike,
    classifier: str | None,
    lpips_weights: Path | None,
    lpips_net: str = "alex",
    domains: Sequence[str] | None = None,
    size: int | None = None,
    max_images: int | None = None,
    alpha: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    save_samples: int = 4,
    logdirs: Sequence[str] = (),
) -> dict[str, Any]:
    """Stylise each domain's test photos with every engine and write the tables (see the module docstring).

    For target domain ``d``: content = ``<d>2photo/testB`` photos; each photo gets a style exemplar drawn
    (``random.Random(f"{seed}:{d}")``) from ``<d>2photo/testA``; every row uses the same pairs. Per cell:
    accuracy = fraction of stylised images the classifier assigns to ``d``; drop = accuracy on the real test
    paintings of ``d`` minus that; sharpness (:func:`wct.metrics.sharpness`, per pixel at the content's
    size); LPIPS(content, stylised); time = mean wall-clock seconds of ``engine.stylize(content, exemplar)``
    at batch 1 (style encoding and PIL conversions included, one untimed warm-up call per engine).

    Writes ``out/results.json``, ``out/results.md``, ``out/results.png`` (bar chart), ``out/losses.png``
    (TensorBoard loss curves, when logs are found) and ``out/samples/`` (content | exemplar | result).

    Returns:
        The results dict written to ``results.json``.
    """
    from models.inference import load_engine
    from wct.io import pil_to_tensor, save_image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = _device(device)
    avail = style_domains(data)
    if domains:
        unknown = sorted(set(domains) - set(avail))
        if unknown:
            raise EvaluationError(f"--domains {unknown} not found under {data}; available: {sorted(avail)}")
        avail = {d: avail[d] for d in domains}
    dnames = list(avail)
    specs = [parse_checkpoint_spec(s) for s in checkpoints]
    if not specs:
        raise EvaluationError("give at least one --checkpoint (a checkpoint path/name, or 'color')")
    for s in specs:
        if s.domain is not None and s.domain not in dnames:
            raise EvaluationError(f"--checkpoint {s.label}: domain '{s.domain}' is not among {dnames}")
        if s.domain is None:
            s.domain = infer_domain(s.source, dnames)
    seen = set()
    for s in specs:
        for d in [s.domain] if s.domain else dnames:
            if (s.label, d) in seen:
                raise EvaluationError(f"row '{s.label}' has two checkpoints for domain '{d}'; give them labels")
            seen.add((s.label, d))

    clf = None
    classes: list[str] = []
    if classifier is not None:
        model, ccfg = load_classifier(classifier, device=dev)
        clf = (model, ccfg)
        classes = list(ccfg["classes"])
        missing = [d for d in dnames if d not in classes]
        if missing:
            _log(f"note: the classifier has no class for {missing} (classes {classes}): no accuracy there")
    else:
        _log("note: no --classifier: the accuracy table (VIII) is left empty")
    lp_model = None
    if lpips_weights is not None:
        from wct.metrics import LPIPSDistance

        lp_model = LPIPSDistance(lpips_weights, net=lpips_net).to(dev)
    else:
        _log("note: no --lpips-weights: the LPIPS table is left empty (pass a torchvision "
             f"{'alexnet' if lpips_net == 'alex' else 'vgg16'} weights file, or --download)")

    def target(d: str) -> int | None:
        return classes.index(d) if d in classes else None

    # the evaluation set: the same (content, exemplar) pairs for every row
    # (unreadable or too small files are skipped for every row alike and listed in results.json)
    from functools import lru_cache

    img = lru_cache(maxsize=256)(lambda p: _load_eval_image(p, size))
    min_side = 32 if lp_model is not None else 16
    skipped: list[str] = []

    def usable(p: Path) -> bool:
        try:
            im = img(p)
        except ValueError as e:
            skipped.append(f"{p}: {e}")
            _log(f"warning: skipping {p}: {e}")
            return False
        if min(im.size) < min_side:
            skipped.append(f"{p}: {im.size[0]}x{im.size[1]} px, below {min_side} px")
            _log(f"warning: skipping {p}: {im.size[0]}x{im.size[1]} px is below {min_side} px")
            return False
        return True

    def first_usable(files: list[Path]) -> list[Path]:
        out_files = []
        for f in files:
            if max_images and len(out_files) >= max_images:
                break
            if usable(f):
                out_files.append(f)
        return out_files

    pairs: dict[str, list[tuple[Path, Path]]] = {}
    real: dict[str, list[Path]] = {}
    for d, (paintings, photos) in avail.items():
        rng = random.Random(f"{seed}:{d}")
        pool = list(paintings)
        pairs[d] = []
        for c in first_usable(photos):
            while pool:
                st = rng.choice(pool)
                if usable(st):
                    break
                pool.remove(st)
            else:
                raise EvaluationError(f"no usable test painting (testA) for domain '{d}': every file is "
                                      f"unreadable or below {min_side} px (see the warnings above)")
            pairs[d].append((c, st))
        real[d] = first_usable(paintings)
        if not pairs[d]:
            raise EvaluationError(f"no usable test photo (testB) for domain '{d}': every file is unreadable "
                                  f"or below {min_side} px (see the warnings above; check --size)")

    rows: list[dict[str, Any]] = []
    # reference rows
    ref_p = {"label": "real paintings", "kind": "reference", "source": "testA", "domains": {}}
    ref_c = {"label": "content photos", "kind": "reference", "source": "testB (no transfer)", "domains": {}}
    for d in avail:
        sp = _Scorer(target(d), clf, None)
        for p in real[d]:
            sp.add(pil_to_tensor(img(p)), None)
        ref_p["domains"][d] = sp.result()
        sc = _Scorer(target(d), clf, None)
        for c, _ in pairs[d]:
            sc.add(pil_to_tensor(img(c)), None)
        ref_c["domains"][d] = sc.result()
    rows += [ref_p, ref_c]
    real_acc = {d: ref_p["domains"][d]["accuracy"] for d in dnames}

    by_label: dict[str, dict[str, Any]] = {}
    for s in specs:
        row = by_label.get(s.label)
        if row is None:
            row = by_label[s.label] = {"label": s.label, "kind": "color" if s.source == "color" else "network",
                                       "source": [], "domains": {}, "_times": []}
            rows.append(row)
        row["source"].append(s.source if s.domain is None else f"{s.source}@{s.domain}")
        torch.manual_seed(seed)
        engine = load_engine(s.source, device=dev)
        targets = [s.domain] if s.domain else dnames
        _log(f"[{s.label}] engine {engine!r} on domains {targets}")
        warm = pairs[targets[0]][0]
        engine.stylize(img(warm[0]), img(warm[1]), alpha=alpha)  # warm-up, not timed
        for d in targets:
            scorer = _Scorer(target(d), clf, lp_model)
            times = []
            for i, (c, st) in enumerate(pairs[d]):
                cimg, simg = img(c), img(st)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                res = engine.stylize(cimg, simg, alpha=alpha)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                times.append(time.perf_counter() - t0)
                if res.size != cimg.size:
                    res = res.resize(cimg.size)
                scorer.add(pil_to_tensor(res), pil_to_tensor(cimg))
                if i < save_samples:
                    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", s.label)
                    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", c.stem)
                    save_image(_triptych(cimg, simg, res), out / "samples" / safe / d / f"{i:03d}_{stem}.png")
            cell = scorer.result()
            cell["seconds_per_image"] = _mean(times)
            row["domains"][d] = cell
            row["_times"] += times
        del engine

    for row in rows:
        times = row.pop("_times", None)
        for d, cell in row["domains"].items():
            ra = real_acc.get(d)
            cell["accuracy_drop"] = (ra - cell["accuracy"]) if (ra is not None and cell["accuracy"] is not None
                                                                and row["label"] != "real paintings") else None
            cell.setdefault("seconds_per_image", None)
        cells = row["domains"].values()
        row["mean"] = {k: _mean([c[k] for c in cells])
                       for k in ("accuracy", "accuracy_drop", "sharpness", "lpips")}
        row["mean"]["seconds_per_image"] = _mean(times) if times else None
        row["mean"]["images_per_second"] = 1.0 / row["mean"]["seconds_per_image"] \
            if row["mean"]["seconds_per_image"] else None

    import platform

    results = {
        "format": "svd-wct-evaluation/1",
        "domains": dnames,
        "rows": rows,
        "settings": {
            "data": str(data), "classifier": str(classifier) if classifier else None,
            "classifier_classes": classes, "lpips_weights": str(lpips_weights) if lpips_weights else None,
            "lpips_net": lpips_net, "size": size, "max_images": max_images, "alpha": alpha, "seed": seed,
            "device": str(dev), "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda"
            else platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "n_pairs": {d: len(v) for d, v in pairs.items()},
            "skipped_files": skipped,
        },
        "definitions": {
            "accuracy": "fraction of stylised test photos that the domain classifier assigns to the target domain",
            "accuracy_drop": "accuracy on the real test paintings of the domain minus the row's accuracy",
            "sharpness": "wct.metrics.sharpness: mean |grad Y| per pixel, BT.601 luma in [0, 1], central "
                         "differences, at the content image's size",
            "lpips": f"LPIPS v0.1 ({lpips_net}) between the content photo and the stylised image (lower = closer)",
            "seconds_per_image": "mean wall-clock seconds of one engine.stylize(content, exemplar) call at batch 1",
        },
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False, default=str) + "\n",
                                      encoding="utf-8")
    (out / "results.md").write_text(results_markdown(results), encoding="utf-8")
    plot_results(results, out / "results.png")
    runs = _logdirs_for(specs, logdirs)
    if runs:
        try:
            plot_losses(runs, out / "losses.png")
        except EvaluationError as e:
            _log(f"note: no loss curves: {e}")
    _log(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    return results


# ==========================================================================================================
# tables and plots
# ==========================================================================================================
def _fmt(v: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "—" if v is None else f"{v * scale:.{digits}f}"


def results_markdown(results: dict[str, Any]) -> str:
    """The four tables (VIII accuracy and drop, IX sharpness, X time, LPIPS) as markdown."""
    doms = results["domains"]
    rows = results["rows"]
    s = results["settings"]
    head = "| Method | " + " | ".join(doms) + " | mean |\n|---|" + "---:|" * (len(doms) + 1) + "\n"
    lines = ["# Evaluation results", "",
             f"Data `{s['data']}`, {sum(s['n_pairs'].values())} content/exemplar pairs "
             f"({', '.join(f'{d}: {n}' for d, n in s['n_pairs'].items())}), seed {s['seed']}, "
             f"size {s['size'] or 'native'}, device {s['device']} ({s['device_name']}, {s['threads']} threads), "
             f"torch {s['torch']}.", ""]

    def acc_cell(c: dict | None) -> str:
        if c is None or c.get("accuracy") is None:
            return "—"
        drop = c.get("accuracy_drop")
        return f"{100 * c['accuracy']:.1f}" + ("" if drop is None else f" ({-100 * drop + 0.0:+.1f})")

    lines += ["## Table VIII: domain classification accuracy (%) and change vs real paintings", "",
              "Accuracy of the domain classifier "
              f"(`{s['classifier']}`) on the stylised test photos; in brackets the difference to its accuracy "
              "on the real test paintings of the domain (negative = drop).", "", head.rstrip("\n")]
    for r in rows:
        lines.append(f"| {r['label']} | " + " | ".join(acc_cell(r["domains"].get(d)) for d in doms)
                     + f" | {acc_cell(r['mean'])} |")
    lines += ["", "## Table IX: sharpness (mean luminance gradient norm per pixel, x100)", "",
              "`wct.metrics.sharpness` (BT.601 luma in [0, 1], central differences), higher = sharper.", "",
              head.rstrip("\n")]
    for r in rows:
        lines.append(f"| {r['label']} | " + " | ".join(
            _fmt((r["domains"].get(d) or {}).get("sharpness"), 100, 2) for d in doms)
            + f" | {_fmt(r['mean']['sharpness'], 100, 2)} |")
    lines += ["", "## Table X: inference time per image (batch 1)", "",
              "| Method | s / image | images / s |", "|---|---:|---:|"]
    for r in rows:
        if r["kind"] != "reference":
            lines.append(f"| {r['label']} | {_fmt(r['mean']['seconds_per_image'], 1, 4)} | "
                         f"{_fmt(r['mean']['images_per_second'], 1, 2)} |")
    lines += ["", "## LPIPS between content photo and stylised image (lower = more content kept)", ""]
    if s["lpips_weights"] is None:
        lines += ["Not computed: no `--lpips-weights` (a local torchvision alexnet file) was given.", ""]
    lines.append(head.rstrip("\n"))
    for r in rows:
        if r["kind"] != "reference":
            lines.append(f"| {r['label']} | " + " | ".join(
                _fmt((r["domains"].get(d) or {}).get("lpips"), 1, 4) for d in doms)
                + f" | {_fmt(r['mean']['lpips'], 1, 4)} |")
    sources = [r["source"] if isinstance(r["source"], str) else ", ".join(r["source"]) for r in rows]
    lines += ["", "Rows: " + "; ".join(f"**{r['label']}**: {src}" for r, src in zip(rows, sources, strict=True))
              + ".", ""]
    return "\n".join(lines)


def plot_results(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Bar chart of the table rows: accuracy, sharpness, LPIPS per domain, and time per image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    doms, rows = results["domains"], results["rows"]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    panels = [("accuracy", "domain accuracy (%)", 100.0), ("sharpness", "sharpness (x100)", 100.0),
              ("lpips", "LPIPS to content", 1.0)]
    width = 0.8 / max(1, len(rows))
    for ax, (key, title, scale) in zip(axes, panels, strict=False):
        for i, r in enumerate(rows):
            vals = [(r["domains"].get(d) or {}).get(key) for d in doms]
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(doms))]
            ax.bar(xs, [math.nan if v is None else v * scale for v in vals], width, label=r["label"])
        ax.set_xticks(range(len(doms)), doms)
        ax.set_title(title)
    timed = [r for r in rows if r["mean"].get("seconds_per_image")]
    axes[3].bar(range(len(timed)), [r["mean"]["seconds_per_image"] for r in timed],
                color=[f"C{rows.index(r)}" for r in timed])
    axes[3].set_xticks(range(len(timed)), [r["label"] for r in timed], rotation=30, ha="right")
    axes[3].set_title("seconds per image (batch 1)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_scalars(logdir: str | os.PathLike) -> dict[str, tuple[list[int], list[float]]]:
    """Every scalar series in the TensorBoard event files under ``logdir`` (recursively).

    Uses tensorboard's ``EventAccumulator`` per folder holding ``events.out.tfevents.*`` files; series of
    sub-folders get the folder path as a tag prefix. Steps are sorted, a repeated step keeps its last value.

    Raises:
        EvaluationError: no folder or no event file.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    logdir = Path(logdir)
    if not logdir.is_dir():
        raise EvaluationError(f"TensorBoard log folder not found: {logdir}")
    folders = sorted({p.parent for p in logdir.rglob("events.out.tfevents.*")})
    if not folders:
        raise EvaluationError(f"no TensorBoard event files (events.out.tfevents.*) under {logdir}")
    out: dict[str, tuple[list[int], list[float]]] = {}
    for folder in folders:
        acc = EventAccumulator(str(folder), size_guidance={SCALARS: 0})
        acc.Reload()
        prefix = "" if folder == logdir else folder.relative_to(logdir).as_posix() + "/"
        for tag in acc.Tags().get("scalars", []):
            series = {e.step: e.value for e in acc.Scalars(tag)}
            steps = sorted(series)
            out[prefix + tag] = (steps, [series[k] for k in steps])
    return out


def plot_losses(runs: dict[str, str | os.PathLike], path: str | os.PathLike, *,
                pattern: str = LOSS_TAGS, max_panels: int = 16) -> Path:
    """Training-loss curves from TensorBoard logs: one panel per scalar tag matching ``pattern``, one line per run.

    Args:
        runs: ``{label: log folder}``.
        path: output PNG.
        pattern: regular expression on the tag (case-insensitive); default: tags containing ``loss`` and
            the ``gen/*`` and ``dis/*`` losses that ``train.py`` logs.

    Raises:
        EvaluationError: no log folder, no event file, or no tag matching ``pattern``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    data = {label: read_scalars(d) for label, d in runs.items()}
    rx = re.compile(pattern, re.IGNORECASE)
    tags = sorted({t for s in data.values() for t in s if rx.search(t)})
    if not tags:
        raise EvaluationError(f"no scalar tag matching '{pattern}' in {sorted(runs.values())}")
    tags = tags[:max_panels]
    ncol = min(4, len(tags))
    nrow = math.ceil(len(tags) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.5 * ncol, 3.2 * nrow), squeeze=False)
    for ax, tag in zip(axes.flat, tags, strict=False):
        for i, (label, series) in enumerate(data.items()):
            if tag not in series:
                continue
            steps, vals = series[tag]
            ax.plot(steps, vals, color=f"C{i}", alpha=0.3, lw=0.8)
            k = max(1, len(vals) // 50)  # moving average over ~2% of the run
            if k > 1:
                sm = [sum(vals[max(0, j - k + 1): j + 1]) / len(vals[max(0, j - k + 1): j + 1])
                      for j in range(len(vals))]
                ax.plot(steps, sm, color=f"C{i}", lw=1.4, label=label)
            else:
                ax.lines[-1].set_alpha(1.0)
                ax.lines[-1].set_label(label)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _logdirs_for(specs: Sequence[RowSpec], logdirs: Sequence[str]) -> dict[str, str]:
    """``--logdir [LABEL=]DIR`` entries, else the run folders recorded in exported checkpoints (if present)."""
    runs: dict[str, str] = {}
    for entry in logdirs:
        label, sep, d = entry.partition("=")
        if not sep:
            label, d = Path(entry).name, entry
        runs[label] = d
    if runs:
        return runs
    for s in specs:
        js = Path(s.source).with_suffix(".json")
        try:
            meta = json.loads(js.read_text(encoding="utf-8")) if js.is_file() else {}
            cfg = (meta.get("extra") or {}).get("train_config") or {}
            run = Path(cfg["out"]) / cfg["name"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            continue
        if run.is_dir() and any(run.rglob("events.out.tfevents.*")):
            runs.setdefault(s.label, str(run))
    return runs


# ==========================================================================================================
# CLI
# ==========================================================================================================
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train-classifier", help="fine-tune inception_v3 as the domain classifier (Table VIII)")
    t.add_argument("--data", required=True, help="Artworks root: ROOT/<domain>2photo/{trainA,testA,trainB,testB}")
    t.add_argument("--weights", default=None,
                   help="torchvision ImageNet weights (inception_v3_google-0cc3c7bd.pth), or 'none' = from scratch")
    t.add_argument("--download", action="store_true", help="fetch the ImageNet weights if --weights is not given")
    t.add_argument("--out", default="classifiers/artworks", help="output X (writes X.safetensors + X.json)")
    t.add_argument("--image-size", type=int, default=299, help="input side in px (>= 75; aux head at >= 299)")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--optimizer", default="adam", choices=list(CLASSIFIER_DEFAULT_LR),
                   help="adam (AdamW; trains from scratch) or sgd (momentum 0.9; fine-tuning ImageNet weights)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-3 adam, 0.01 sgd)")
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--save-every", type=int, default=500, help="also save every N steps (0: only at the end)")
    t.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("stylize-and-score", help="stylise the test photos and write Tables VIII-X + LPIPS")
    s.add_argument("--checkpoint", action="append", required=True, metavar="[LABEL=]SOURCE[@DOMAIN]",
                   help="one per engine: 'color', a checkpoint name in checkpoints/ or a .safetensors path; "
                        "entries with the same LABEL form one row; @DOMAIN sets the target domain "
                        "(default: from the checkpoint, else every domain)")
    s.add_argument("--classifier", required=True, help="classifier from train-classifier (.safetensors), or 'none'")
    s.add_argument("--data", required=True, help="Artworks root (test photos = testB, exemplars = testA)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--lpips-weights", default=None,
                   help="torchvision alexnet (or vgg16) ImageNet weights for LPIPS, or 'none' to skip LPIPS")
    s.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"])
    s.add_argument("--download", action="store_true", help="fetch the LPIPS backbone weights if not given")
    s.add_argument("--domains", nargs="+", default=None, help="score only these target domains")
    s.add_argument("--size", type=int, default=None, help="resize images so the shorter side is this (px)")
    s.add_argument("--max-images", type=int, default=None, help="at most this many test photos per domain")
    s.add_argument("--alpha", type=float, default=None, help="style strength in [0, 1] (default: learned / 1)")
    s.add_argument("--save-samples", type=int, default=4, help="triptychs saved per row and domain")
    s.add_argument("--logdir", action="append", default=[], metavar="[LABEL=]DIR",
                   help="TensorBoard run folder(s) for the loss curves (default: the run recorded in each "
                        "exported checkpoint, when present)")
    s.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    s.add_argument("--seed", type=int, default=0)

    pl = sub.add_parser("plot-losses", help="training-loss curves from TensorBoard logs")
    pl.add_argument("--logdir", action="append", required=True, metavar="[LABEL=]DIR")
    pl.add_argument("--out", default="losses.png")
    pl.add_argument("--pattern", default=LOSS_TAGS, help="regular expression on the scalar tags")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``train-classifier``, ``stylize-and-score``, ``plot-losses``).

    Returns:
        Exit status: 0 on success, 2 on a usage or data error (missing weights or files, unknown domains,
        unreadable checkpoints), reported as one ``error: ...`` line on stderr, never a traceback.
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "train-classifier":
            weights = resolve_weights("inception_v3", args.weights, download=args.download, option="--weights")
            if weights is None:
                _log("note: --weights none: training inception_v3 from random initialisation (only useful "
                     "for tests; accuracies will be far below the paper's)")
            train_classifier(args.data, args.out, weights=weights, image_size=args.image_size, steps=args.steps,
                             batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                             optimizer=args.optimizer,
                             seed=args.seed, device=args.device, workers=args.workers,
                             save_every=args.save_every)
        elif args.command == "stylize-and-score":
            if args.lpips_weights is None and not args.download:
                lp = None
                _log("note: LPIPS needs the ImageNet weights of its backbone as a local file; pass "
                     f"--lpips-weights PATH ({WEIGHT_FILES[args.lpips_net]}), or --download, "
                     "or --lpips-weights none")
            else:
                lp = resolve_weights(args.lpips_net, args.lpips_weights, download=args.download,
                                     option="--lpips-weights")
            if args.alpha is not None and not 0.0 <= args.alpha <= 1.0:
                raise EvaluationError(f"--alpha must be in [0, 1], got {args.alpha}")
            for name, v in (("--size", args.size), ("--max-images", args.max_images)):
                if v is not None and v < 1:
                    raise EvaluationError(f"{name} must be >= 1, got {v}")
            classifier = None if args.classifier.lower() == "none" else args.classifier
            res = stylize_and_score(args.checkpoint, data=args.data, out=args.out, classifier=classifier,
                                    lpips_weights=lp, lpips_net=args.lpips_net, domains=args.domains,
                                    size=args.size, max_images=args.max_images, alpha=args.alpha,
                                    seed=args.seed, device=args.device, save_samples=args.save_samples,
                                    logdirs=args.logdir)
            print(results_markdown(res))
        elif args.command == "plot-losses":
            runs = {}
            for entry in args.logdir:
                label, sep, d = entry.partition("=")
                runs[label if sep else Path(entry).name] = d if sep else entry
            print(plot_losses(runs, args.out, pattern=args.pattern))
    except (EvaluationError, FileNotFoundError) as e:
        _log(f"error: {e}")
        return 2
    except ValueError as e:  # checkpoint/image errors of the library carry their own clear messages
        _log(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
        sys.exit(main())
