"""Training of the SVD-WCT / GDWCT image translation network (two domains, unpaired).

Layout and losses follow GDWCT (Cho et al., "Image-to-Image Translation via Group-wise Deep Whitening-and-
Coloring Transformation", CVPR 2019), itself built on MUNIT's trainer (Huang et al., ECCV 2018): one
:class:`models.Generator` (content encoder + style encoder + decoder) and one
:class:`models.MultiScaleDiscriminator` per domain. Translation A -> B is
``x_ab = gen_b.decode(gen_a.encode_content(x_a), gen_b.encode_style(x_b))``.

Generator objective (weights in the ``loss`` config section; GDWCT defaults in brackets)::

    gan     (1)  LSGAN, sum over D scales of mean((D(x_ab) - 1)^2) + same for x_ba
    recon_x (10) |x_a - decode_a(c_a, s_a)|_1 + same for b
    cycle   (10) |x_a - decode_a(encode_content_b(x_ab), s_a)|_1 + same for b
    style   (1)  |s_a - encode_style_a(x_ba)|_1 + same for b
    content (1)  |c_a - encode_content_b(x_ab)|_1 + same for b
    whiten  (0.001), color (10): GDWCT's regularisers, only for ``gen.transform = "gdwct"``
                 (the SVD transform has none: "no regularizers are involved", Wang et al. TPAMI 2021)
    structure (0) not in GDWCT: :func:`structure_loss` (1 - correlation of the coarse luma) of x_a vs x_ab
                 and x_b vs x_ba; the demo configs use it to stop luminance-inverting translations

Discriminator objective: LSGAN, sum over scales of ``mean(D(fake)^2) + mean((D(real) - 1)^2)``.

:class:`Trainer` holds the networks, optimisers (Adam), schedulers and mixed precision state and offers
MUNIT's ``dis_update`` / ``gen_update`` / ``sample`` / ``save`` / ``resume``. :func:`fit` is the
step-based loop (data stream, logging, checkpoints, non-finite handling, DDP); :func:`export_generator`
assembles a shipped photo -> painting :class:`models.Generator` with a style bank. ``train.py`` is the CLI.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import math
import os
import platform
import random
import re
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn

from .checkpoint import CheckpointError
from .data import (
    BadFileReporter,
    ImageList,
    ResumableDistributedSampler,
    UnpairedImageFolders,
    batches_per_epoch,
    collate_unpaired,
)

__all__ = [
    "DEFAULT_CONFIG",
    "Trainer",
    "TrainingDiverged",
    "CheckpointError",
    "load_config",
    "apply_overrides",
    "resolve_config",
    "fit",
    "export_generator",
    "find_checkpoints",
    "structure_loss",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"
CKPT_RE = re.compile(r"^step_(\d+)\.safetensors$")

# Keys that may change when a run is resumed (everything else must match the checkpoint's config).
MUTABLE_ON_RESUME = {
    "out", "device", "cpu_threads", "data.num_workers", "data.train_a", "data.train_b", "data.test_a", "data.test_b",
    "data.root", "train.max_steps", "train.log_every", "train.print_every", "train.image_every",
    "train.sample_every", "train.sample_count", "train.save_every", "train.keep_last",
    "train.max_nonfinite", "train.style_bank_size", "train.amp", "optim.grad_clip", "train.init_from",
}


class TrainingDiverged(RuntimeError):
    """Raised when ``train.max_nonfinite`` consecutive steps were non-finite (after the rollback)."""




# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping, got {type(data).__name__}")
    return data


def _merge_checked(base: dict, update: dict, where: str, prefix: str = "") -> None:
    for k, v in update.items():
        key = f"{prefix}{k}"
        if k not in base:
            options = difflib.get_close_matches(key, list(_flatten(_read_yaml(DEFAULT_CONFIG))), n=3)
            hint = f"; did you mean {', '.join(options)}?" if options else ""
            raise ValueError(f"{where}: unknown config key '{key}'{hint}")
        if isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ValueError(f"{where}: '{key}' must be a mapping of keys, got {v!r}")
            _merge_checked(base[k], v, where, key + ".")
        else:
            base[k] = v


def load_config(path: str | Path | None = None) -> dict:
    """Read a YAML training config on top of ``configs/default.yaml``.

    Args:
        path: a YAML file; ``None`` returns the defaults. Missing keys take the default value.

    Returns:
        Nested dict (sections ``data``, ``gen``, ``dis``, ``loss``, ``optim``, ``train`` + top-level keys).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown key (with close matches), or a section given as a scalar.
    """
    cfg = _read_yaml(DEFAULT_CONFIG)
    if path is not None:
        _merge_checked(cfg, _read_yaml(path), str(path))
    return cfg


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    """Apply ``key=value`` overrides (dotted keys, YAML values) in place and return ``cfg``.

    Example: ``apply_overrides(cfg, ["optim.lr=2e-4", "gen.transform=gdwct", "data.root=null"])``.

    Raises:
        ValueError: malformed item or unknown key.
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override '{item}' must look like key=value (e.g. optim.lr=2e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        value = yaml.safe_load(raw) if raw.strip() else None
        node: dict = {}
        cur = node
        parts = key.split(".")
        for p in parts[:-1]:
            cur[p] = {}
            cur = cur[p]
        cur[parts[-1]] = value
        _merge_checked(cfg, node, f"override '{item}'")
    return cfg


def _path_candidates(p: str) -> list[Path]:
    """Where a configured data path is looked for: as given (absolute, or relative to the working
    directory), then relative to the repository root (the parent of ``configs/``)."""
    path = Path(os.path.expanduser(str(p)))
    if path.is_absolute():
        return [path]
    return [Path.cwd() / path, REPO_ROOT / path]


def _resolve_path(p: str | None) -> str | None:
    if p is None:
        return None
    cands = _path_candidates(p)
    found = next((c for c in cands if c.exists()), cands[0])
    return str(found.resolve())


def _missing_path_error(key: str, p: str, hint: str) -> ValueError:
    tried = list(dict.fromkeys(str(c.resolve()) for c in _path_candidates(p)))
    where = tried[0] if len(tried) == 1 else " or ".join(tried)
    return ValueError(f"{key}: '{p}' does not exist (tried {where}); {hint}")


def resolve_config(cfg: dict) -> dict:
    """Validate the config and fill derived values (data folders, image size) in a copy.

    Data paths are made absolute: a relative path is taken from the working directory, else from the
    repository root (the parent of ``configs/``, so ``../shared/data/...`` in a shipped config means a
    ``shared/`` folder next to the checkout). ``data.root`` supplies ``trainA``/``trainB``/``testA``/``testB``
    for unset folders.

    Raises:
        ValueError: a configured data folder that does not exist (naming the paths tried), no training
            folders, a crop smaller than the discriminator's minimum or larger than the load size, bad numbers.
    """
    cfg = copy.deepcopy(cfg)
    d = cfg["data"]
    override = "pass data.root=/path/to/<pair> (a folder with trainA/ and trainB/) on the command line"
    if d.get("root") is not None and not Path(_resolve_path(d["root"])).is_dir() and (
            d.get("train_a") is None or d.get("train_b") is None):
        raise _missing_path_error("data.root", d["root"], override + ", or --style-dir/--photo-dir")
    root = _resolve_path(d.get("root"))
    d["root"] = root
    for key, sub in (("train_a", "trainA"), ("train_b", "trainB"), ("test_a", "testA"), ("test_b", "testB")):
        if d.get(key) is None and root is not None and (Path(root) / sub).is_dir():
            d[key] = str(Path(root) / sub)
        elif d.get(key) is not None and not Path(_resolve_path(d[key])).is_dir():
            flag = {"train_a": " (--style-dir)", "train_b": " (--photo-dir)"}.get(key, "")
            if Path(_resolve_path(d[key])).exists():
                raise ValueError(f"data.{key}{flag}: {_resolve_path(d[key])} is not a folder")
            raise _missing_path_error(f"data.{key}{flag}", d[key],
                                      f"give an existing folder of images (override: data.{key}=/path/...)")
        d[key] = _resolve_path(d.get(key))
    if d["train_a"] is None or d["train_b"] is None:
        if root is not None:
            missing = [s for k, s in (("train_a", "trainA"), ("train_b", "trainB")) if d[k] is None]
            raise ValueError(f"data.root {root} has no {' or '.join(m + '/' for m in missing)} folder "
                             f"(CycleGAN layout <root>/{{trainA,trainB,testA,testB}}); {override}")
        raise ValueError(
            "no training data: give --style-dir PAINTINGS --photo-dir PHOTOS, or data.root (a folder with "
            "trainA/ and trainB/), or data.train_a and data.train_b")
    for key in ("load_size", "crop_size", "holdout"):
        if isinstance(d[key], bool) or not isinstance(d[key], int) or d[key] < 0:
            raise ValueError(f"data.{key} must be a non-negative int, got {d[key]!r}")
    if d["crop_size"] < 16 or d["load_size"] < d["crop_size"]:
        raise ValueError(f"need 16 <= data.crop_size <= data.load_size, got {d['crop_size']}, {d['load_size']}")
    t = cfg["train"]
    for key in ("max_steps", "batch_size", "log_every", "print_every", "image_every", "sample_every",
                "save_every", "keep_last", "max_nonfinite", "sample_count", "style_bank_size"):
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "max_steps" else 1):
            raise ValueError(f"train.{key} must be a positive int, got {v!r}")
    if t.get("init_from") is not None:
        if not Path(_resolve_path(t["init_from"])).is_file():
            raise _missing_path_error("train.init_from (--init-from)", t["init_from"],
                                      "give a training checkpoint runs/<name>/checkpoints/step_N.safetensors")
        t["init_from"] = _resolve_path(t["init_from"])
    if t["amp"] not in ("auto", "bf16", "fp16", "none", None, False):
        raise ValueError(f"train.amp must be auto | bf16 | fp16 | none, got {t['amp']!r}")
    o = cfg["optim"]
    for key in ("lr", "beta1", "beta2", "weight_decay", "decay_gamma"):
        if not isinstance(o[key], (int, float)) or isinstance(o[key], bool) or not math.isfinite(o[key]):
            raise ValueError(f"optim.{key} must be a number, got {o[key]!r}")
    for key, v in cfg["loss"].items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ValueError(f"loss.{key} must be a non-negative number, got {v!r}")
    ct = cfg.get("cpu_threads")
    if ct is not None and (isinstance(ct, bool) or not isinstance(ct, int) or ct < 1):
        raise ValueError(f"cpu_threads must be null or an int >= 1, got {ct!r}")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", str(cfg["name"])):
        raise ValueError(f"name must use letters, digits, '.', '_' or '-', got {cfg['name']!r}")
    # Build the network configs now so that bad values fail before any data is read.
    _gen_config(cfg)
    dc = _dis_config(cfg)
    min_px = 2 ** (dc.n_layers + dc.n_scales - 1)  # MultiScaleDiscriminator.min_size
    if d["crop_size"] < min_px:
        raise ValueError(
            f"data.crop_size (--image-size) is {d['crop_size']} px; the discriminator (dis.n_layers="
            f"{dc.n_layers}, dis.n_scales={dc.n_scales}) needs at least {min_px} px = 2**(n_layers + n_scales - 1): "
            f"use --image-size {min_px} or more, or lower dis.n_layers / dis.n_scales")
    return cfg


def _gen_config(cfg: dict):
    from . import GeneratorConfig

    return GeneratorConfig.from_dict({**cfg["gen"], "image_size": cfg["data"]["crop_size"]})


def _dis_config(cfg: dict):
    from . import DiscriminatorConfig

    return DiscriminatorConfig.from_dict(dict(cfg["dis"]))


def config_diff(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Flattened keys whose values differ: ``{key: (old, new)}``."""
    fo, fn = _flatten(old), _flatten(new)
    return {k: (fo.get(k), fn.get(k)) for k in sorted(set(fo) | set(fn)) if fo.get(k) != fn.get(k)}


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------

def _decode(gen, content, style, size, want_aux: bool):
    if want_aux:
        return gen.decode(content, style, size=size, return_aux=True)
    return gen.decode(content, style, size=size), None


def structure_loss(x: torch.Tensor, y: torch.Tensor, *, pool: int = 4, eps: float = 1e-8) -> torch.Tensor:
    r"""Layout-preservation loss: ``1 - r``, ``r`` the Pearson correlation of the coarse luminance of two images.

    Not part of GDWCT. Cycle and reconstruction losses are satisfied just as well by a translation that
    inverts the luminance (dark sky, bright shadows) as by one that keeps it, and the demo Van Gogh run
    learned exactly that (correlation -0.95 with the photo). This term keeps the translation's coarse
    light/dark layout correlated with its input while leaving colour, contrast and fine texture free:
    correlation is invariant to any positive affine change of the luminance.

    Steps: BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (``kornia.color.rgb_to_grayscale``);
    ``pool x pool`` average pooling; per image ``r = <Y_x - mean, Y_y - mean> / (|Y_x - mean| |Y_y - mean| + eps)``
    (Pearson, 1896); result ``mean_b(1 - r_b)``.

    Args:
        x: ``(B, 3, H, W)`` RGB images, floating point, any fixed affine range (e.g. ``[-1, 1]``).
        y: ``(B, 3, H, W)`` same shape as ``x`` (its translation).
        pool: average-pooling factor (>= 1) before the correlation; ``H, W >= pool``.
        eps: added to the norm product, keeps flat (constant) images finite (their loss is 1).

    Returns:
        Scalar tensor in ``[0, 2]`` (0: same coarse luminance up to a positive affine map; 2: inverted),
        in the dtype of ``x`` (float32 under autocast).

    Raises:
        ValueError: shapes differ, are not ``(B, 3, H, W)``, or are smaller than ``pool``.

    Example:
        >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> round(structure_loss(x, 0.5 * x + 0.1).item(), 4), round(structure_loss(x, 1 - x).item(), 4)
        (0.0, 2.0)
    """
    import kornia

    if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"structure_loss expects two (B, 3, H, W) tensors of one shape, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if pool < 1 or min(x.shape[-2:]) < pool:
        raise ValueError(f"structure_loss: pool {pool} needs pool >= 1 and H, W >= pool, got {tuple(x.shape)}")
    lx = F.avg_pool2d(kornia.color.rgb_to_grayscale(x.float() if x.dtype in (torch.float16, torch.bfloat16)
                                                    else x), pool).flatten(1)
    ly = F.avg_pool2d(kornia.color.rgb_to_grayscale(y.to(lx.dtype)), pool).flatten(1)
    lx = lx - lx.mean(1, keepdim=True)
    ly = ly - ly.mean(1, keepdim=True)
    r = (lx * ly).sum(1) / (lx.norm(dim=1) * ly.norm(dim=1) + eps)
    return (1 - r).mean()


class _GenObjective(nn.Module):
    """Both generators; ``forward`` computes the full generator objective (wrapped by DDP when distributed)."""

    def __init__(self, gen_a: nn.Module, gen_b: nn.Module, weights: dict, transform: str):
        super().__init__()
        self.gen_a, self.gen_b = gen_a, gen_b
        self.w = dict(weights)
        self.use_reg = transform == "gdwct" and (self.w["whiten"] > 0 or self.w["color"] > 0)

    def forward(self, x_a, x_b, dis_a, dis_b):
        ga, gb, w = self.gen_a, self.gen_b, self.w
        c_a, s_a = ga.encode_content(x_a), ga.encode_style(x_a)
        c_b, s_b = gb.encode_content(x_b), gb.encode_style(x_b)
        size_a, size_b = x_a.shape[-2:], x_b.shape[-2:]
        reg = self.use_reg
        x_a_rec, aux1 = _decode(ga, c_a, s_a, size_a, reg)
        x_b_rec, aux2 = _decode(gb, c_b, s_b, size_b, reg)
        x_ba, aux3 = _decode(ga, c_b, s_a, size_b, reg)
        x_ab, aux4 = _decode(gb, c_a, s_b, size_a, reg)
        c_b_rec, s_a_rec = ga.encode_content(x_ba), ga.encode_style(x_ba)
        c_a_rec, s_b_rec = gb.encode_content(x_ab), gb.encode_style(x_ab)
        x_aba, aux5 = _decode(ga, c_a_rec, s_a, size_a, reg)
        x_bab, aux6 = _decode(gb, c_b_rec, s_b, size_b, reg)
        parts = {
            "adv_a": dis_a.gen_loss(x_ba),
            "adv_b": dis_b.gen_loss(x_ab),
            "recon_x_a": F.l1_loss(x_a_rec.float(), x_a.float()),
            "recon_x_b": F.l1_loss(x_b_rec.float(), x_b.float()),
            "cycle_a": F.l1_loss(x_aba.float(), x_a.float()),
            "cycle_b": F.l1_loss(x_bab.float(), x_b.float()),
            "style_a": F.l1_loss(s_a_rec.float(), s_a.float()),
            "style_b": F.l1_loss(s_b_rec.float(), s_b.float()),
            "content_a": F.l1_loss(c_a_rec.float(), c_a.float()),
            "content_b": F.l1_loss(c_b_rec.float(), c_b.float()),
        }
        total = (w["gan"] * (parts["adv_a"] + parts["adv_b"])
                 + w["recon_x"] * (parts["recon_x_a"] + parts["recon_x_b"])
                 + w["cycle"] * (parts["cycle_a"] + parts["cycle_b"])
                 + w["style"] * (parts["style_a"] + parts["style_b"])
                 + w["content"] * (parts["content_a"] + parts["content_b"]))
        if w.get("structure", 0) > 0:
            parts["structure_a"] = structure_loss(x_a, x_ab)
            parts["structure_b"] = structure_loss(x_b, x_ba)
            total = total + w["structure"] * (parts["structure_a"] + parts["structure_b"])
        if reg:  # GDWCT regularisers of every decode (means over the decoder's WCT modules)
            auxes = (aux1, aux2, aux3, aux4, aux5, aux6)
            parts["whiten_reg"] = sum(a["whitening_reg"].float() for a in auxes)
            parts["color_reg"] = sum(a["coloring_reg"].float() for a in auxes)
            total = total + w["whiten"] * parts["whiten_reg"] + w["color"] * parts["color_reg"]
        parts["total"] = total
        images = {"x_a": x_a, "x_ab": x_ab, "x_aba": x_aba, "x_a_rec": x_a_rec,
                  "x_b": x_b, "x_ba": x_ba, "x_bab": x_bab, "x_b_rec": x_b_rec}
        return total, parts, images


class _DisObjective(nn.Module):
    """Both discriminators; ``forward`` computes the LSGAN discriminator objective."""

    def __init__(self, dis_a: nn.Module, dis_b: nn.Module, weight: float):
        super().__init__()
        self.dis_a, self.dis_b, self.weight = dis_a, dis_b, float(weight)

    def forward(self, x_a, x_b, x_ab, x_ba):
        parts = {
            "dis_a": self.dis_a.dis_loss(x_ba, x_a),
            "dis_b": self.dis_b.dis_loss(x_ab, x_b),
        }
        total = self.weight * (parts["dis_a"] + parts["dis_b"])
        parts["total"] = total
        return total, parts


class _LRFactor:
    """Constant, then ``gamma`` every ``every`` steps from ``start`` on (GDWCT: 100k, 10k, 0.5)."""

    def __init__(self, start: int, every: int, gamma: float):
        self.start, self.every, self.gamma = int(start), max(1, int(every)), float(gamma)

    def __call__(self, step: int) -> float:
        if step < self.start:
            return 1.0
        return self.gamma ** ((step - self.start) // self.every + 1)


# --------------------------------------------------------------------------------------------------
# Checkpoint serialisation helpers (optimiser / scheduler / RNG states as nested dicts of tensors + JSON)
# --------------------------------------------------------------------------------------------------

def _rng_state(sampler_state: dict) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
             "sampler": dict(sampler_state)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's current device
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    np.random.set_state(tuple(state["numpy"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8).cpu())


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def find_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """Complete training checkpoints ``step_N.safetensors`` (with ``step_N.json``) in ``folder``, by step."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = CKPT_RE.match(p.name)
        if m and p.with_suffix(".json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


# --------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------

def _amp_dtype(setting, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: ``auto`` = bf16 (fp16 without bf16 support) on CUDA, off on CPU; ``bf16`` also works
    on CPU (CPU autocast; slower than float32 on most CPUs, useful to test the mixed-precision path)."""
    if setting in (None, False, "none"):
        return None
    if device.type != "cuda":
        if setting == "bf16":
            return torch.bfloat16
        if setting == "fp16":
            warnings.warn(f"train.amp=fp16 needs CUDA; training in float32 on {device}", stacklevel=3)
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if setting == "bf16" else torch.float16


class Trainer:
    """Networks, optimisers, schedulers and update steps of one translation model (MUNIT-style API).

    Args:
        config: resolved config (see :func:`resolve_config`).
        device: torch device for the networks.
        rank, world_size: distributed position (``world_size > 1`` wraps the objectives in DDP; the
            process group must already be initialised).

    The domain images passed to the update methods are ``(B, 3, H, W)`` float32 in [-1, 1], A = paintings,
    B = photos, ``H, W`` multiples of 4 (>= 16).
    """

    def __init__(self, config: dict, *, device: str | torch.device = "cpu", rank: int = 0,
                 world_size: int = 1):
        from . import Generator, MultiScaleDiscriminator

        self.config = config
        self.device = torch.device(device)
        self.rank, self.world_size = int(rank), int(world_size)
        self.gen_config = _gen_config(config)
        self.dis_config = _dis_config(config)
        torch.manual_seed(int(config["seed"]))  # identical init on every rank (DDP also broadcasts)
        self.gen_a = Generator(self.gen_config).to(self.device)
        self.gen_b = Generator(self.gen_config).to(self.device)
        self.dis_a = MultiScaleDiscriminator(self.dis_config).to(self.device)
        self.dis_b = MultiScaleDiscriminator(self.dis_config).to(self.device)
        self._gen_obj = _GenObjective(self.gen_a, self.gen_b, config["loss"], self.gen_config.transform)
        self._dis_obj = _DisObjective(self.dis_a, self.dis_b, config["loss"]["gan"])
        self.gen_objective: nn.Module = self._gen_obj
        self.dis_objective: nn.Module = self._dis_obj
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.gen_objective = DDP(self._gen_obj, device_ids=ids)
            self.dis_objective = DDP(self._dis_obj, device_ids=ids)
        o = config["optim"]
        self.gen_params = [p for p in self._gen_obj.parameters() if p.requires_grad]
        self.dis_params = [p for p in self._dis_obj.parameters() if p.requires_grad]
        adam = dict(lr=float(o["lr"]), betas=(float(o["beta1"]), float(o["beta2"])),
                    weight_decay=float(o["weight_decay"]))
        self.opt_gen = torch.optim.Adam(self.gen_params, **adam)
        self.opt_dis = torch.optim.Adam(self.dis_params, **adam)
        factor = _LRFactor(o["decay_start"], o["decay_every"], o["decay_gamma"])
        self.sched_gen = torch.optim.lr_scheduler.LambdaLR(self.opt_gen, factor)
        self.sched_dis = torch.optim.lr_scheduler.LambdaLR(self.opt_dis, factor)
        self.amp_dtype = _amp_dtype(config["train"]["amp"], self.device)
        use_scaler = self.amp_dtype == torch.float16
        self.scaler_gen = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scaler_dis = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.grad_clip = o.get("grad_clip")
        self.step = 0
        self.nonfinite_total = 0   # iterations with a skipped (non-finite) update
        self.nonfinite_streak = 0  # consecutive such iterations
        self.amp_overflows = 0     # fp16 GradScaler overflow skips (normal while the scale calibrates)
        self.fault_hook: Callable[[Trainer, dict], None] | None = None  # tests: inject faults into losses

    # ---------------------------------------------------------------- helpers
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _all_reduce_flag(self, flag: bool) -> bool:
        if self.world_size > 1:
            t = torch.tensor([1.0 if flag else 0.0], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            return bool(t.item() > 0)
        return flag

    def _step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, params: list, scaler) -> dict:
        """Backward + non-finite check + (clip) + optimiser step. Returns status and grad norm."""
        loss_finite = bool(torch.isfinite(loss.detach()).item())
        scaler.scale(loss).backward()
        if scaler.is_enabled():
            scaler.unscale_(opt)
        grads = [p.grad for p in params if p.grad is not None]
        if self.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(params, float(self.grad_clip))
        else:
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        norm_v = float(norm)
        bad = self._all_reduce_flag(not (loss_finite and math.isfinite(norm_v)))
        if bad and loss_finite and scaler.is_enabled():
            scaler.step(opt)  # GradScaler skips the step itself and lowers the scale
            scaler.update()
            opt.zero_grad(set_to_none=True)
            # fp16 overflow is normal while the scale calibrates; with a scale below 1 the gradients are
            # not finite even unscaled: a genuine numerical failure.
            return {"status": "overflow" if scaler.get_scale() >= 1.0 else "nonfinite", "grad_norm": norm_v}
        if bad:
            opt.zero_grad(set_to_none=True)
            if scaler.is_enabled():
                scaler.update()
            return {"status": "nonfinite", "grad_norm": norm_v}
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return {"status": "ok", "grad_norm": norm_v}

    @staticmethod
    def _check_images(x_a: torch.Tensor, x_b: torch.Tensor) -> None:
        for name, x in (("x_a", x_a), ("x_b", x_b)):
            if x.dim() != 4 or x.shape[1] != 3 or min(x.shape[-2:]) < 16:
                raise ValueError(f"{name} must be (B, 3, H, W) with H, W >= 16, got {tuple(x.shape)}")

    # ---------------------------------------------------------------- updates
    def gen_update(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict:
        """One generator step on both domains.

        Returns:
            dict with the loss parts (floats, ``"total"`` included), ``"grad_norm"``, ``"status"``
            (``ok`` | ``nonfinite`` | ``overflow``) and ``"images"`` (detached translations for grids
            and for :meth:`dis_update`'s ``fakes``).
        """
        self._check_images(x_a, x_b)
        for p in self.dis_params:
            p.requires_grad_(False)
        self.gen_a.train(), self.gen_b.train()
        try:
            with self._autocast():
                total, parts, images = self.gen_objective(x_a, x_b, self.dis_a, self.dis_b)
            if self.fault_hook is not None:
                total = self.fault_hook(self, {"update": "gen", "loss": total}) or total
            res = self._step(total, self.opt_gen, self.gen_params, self.scaler_gen)
        finally:
            for p in self.dis_params:
                p.requires_grad_(True)
        if res["status"] == "ok":
            for g in (self.gen_a, self.gen_b):
                clamp = getattr(g, "clamp_alpha_", None)
                if callable(clamp):
                    clamp()
        res.update({k: float(v.detach()) for k, v in parts.items()})
        res["total"] = float(total.detach())
        res["images"] = {k: v.detach() for k, v in images.items()}
        return res

    def translate(self, x_a: torch.Tensor, x_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_ab, x_ba)`` without gradients: A -> B with B's style and B -> A with A's style."""
        with torch.no_grad(), self._autocast():
            c_a, s_a = self.gen_a.encode_content(x_a), self.gen_a.encode_style(x_a)
            c_b, s_b = self.gen_b.encode_content(x_b), self.gen_b.encode_style(x_b)
            return (self.gen_b.decode(c_a, s_b, size=x_a.shape[-2:]),
                    self.gen_a.decode(c_b, s_a, size=x_b.shape[-2:]))

    def dis_update(self, x_a: torch.Tensor, x_b: torch.Tensor,
                   fakes: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
        """One discriminator step. ``fakes = (x_ab, x_ba)`` reuses translations (else recomputed).

        Returns:
            dict with ``dis_a``, ``dis_b``, ``total``, ``grad_norm``, ``status``.
        """
        self._check_images(x_a, x_b)
        x_ab, x_ba = fakes if fakes is not None else self.translate(x_a, x_b)
        with self._autocast():
            total, parts = self.dis_objective(x_a, x_b, x_ab.detach(), x_ba.detach())
        if self.fault_hook is not None:
            total = self.fault_hook(self, {"update": "dis", "loss": total}) or total
        res = self._step(total, self.opt_dis, self.dis_params, self.scaler_dis)
        res.update({k: float(v.detach()) for k, v in parts.items()})
        return res

    def train_step(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict:
        """One iteration: generator update, then discriminator update; advances schedulers and ``step``.

        With ``train.reuse_fakes`` the discriminator sees the translations of the generator step (made
        before its update, as in CycleGAN); otherwise they are recomputed with the updated generators.

        Returns:
            Flat dict of floats: ``gen/<part>``, ``dis/<part>``, ``grad_norm/gen``, ``grad_norm/dis``,
            ``lr``, ``nonfinite`` (0/1), plus ``"images"``.
        """
        g = self.gen_update(x_a, x_b)
        images = g.pop("images")
        fakes = (images["x_ab"], images["x_ba"]) if self.config["train"]["reuse_fakes"] else None
        d = self.dis_update(x_a, x_b, fakes)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            self.sched_gen.step()
            self.sched_dis.step()
        self.step += 1
        bad = "nonfinite" in (g["status"], d["status"])
        self.amp_overflows += int("overflow" in (g["status"], d["status"]))
        if bad:
            self.nonfinite_total += 1
            self.nonfinite_streak += 1
        else:
            self.nonfinite_streak = 0
        out = {f"gen/{k}": v for k, v in g.items() if k not in ("status", "grad_norm")}
        out.update({f"dis/{k}": v for k, v in d.items() if k not in ("status", "grad_norm")})
        out["grad_norm/gen"], out["grad_norm/dis"] = g["grad_norm"], d["grad_norm"]
        out["lr"] = self.opt_gen.param_groups[0]["lr"]
        out["nonfinite"] = float(bad)
        out["images"] = images
        return out

    # ---------------------------------------------------------------- samples
    @torch.no_grad()
    def sample(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Held-out translations in eval mode.

        Args:
            x_a: paintings ``(N, 3, H, W)`` in [-1, 1]; x_b: photos ``(N, 3, H, W)`` in [-1, 1].

        Returns:
            ``{"b2a": (N, 3, 3, H, W), "a2b": (N, 3, 3, H, W)}`` rows of (content | style | output) in
            [0, 1]: ``b2a`` = photo content in painting i's style (the shipped direction).
        """
        was = (self.gen_a.training, self.gen_b.training)
        self.gen_a.eval(), self.gen_b.eval()
        try:
            rows_b2a, rows_a2b = [], []
            for i in range(x_a.shape[0]):
                a, b = x_a[i:i + 1].to(self.device), x_b[i:i + 1].to(self.device)
                with self._autocast():
                    ba = self.gen_a.decode(self.gen_b.encode_content(b), self.gen_a.encode_style(a),
                                           size=b.shape[-2:])
                    ab = self.gen_b.decode(self.gen_a.encode_content(a), self.gen_b.encode_style(b),
                                           size=a.shape[-2:])
                rows_b2a.append(torch.cat([b, a, ba.float()]))
                rows_a2b.append(torch.cat([a, b, ab.float()]))
            to01 = lambda t: ((t + 1) / 2).clamp(0, 1).cpu()  # noqa: E731
            return {"b2a": to01(torch.stack(rows_b2a)), "a2b": to01(torch.stack(rows_a2b))}
        finally:
            self.gen_a.train(was[0]), self.gen_b.train(was[1])

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "optim": {"gen": self.opt_gen.state_dict(), "dis": self.opt_dis.state_dict()},
            "sched": {"gen": _sched_state(self.sched_gen), "dis": _sched_state(self.sched_dis)},
            "scaler": {"gen": self.scaler_gen.state_dict(), "dis": self.scaler_dis.state_dict()},
            "counters": {"step": self.step, "nonfinite_total": self.nonfinite_total,
                         "nonfinite_streak": self.nonfinite_streak, "amp_overflows": self.amp_overflows},
        }

    def nets(self) -> dict[str, nn.Module]:
        return {"gen_a": self.gen_a, "gen_b": self.gen_b, "dis_a": self.dis_a, "dis_b": self.dis_b}

    def save(self, path: str | Path, *, extra: dict | None = None) -> Path:
        """Write a training checkpoint ``path`` (``.safetensors``) + ``.json`` (temporary files, renamed).

        Holds both generators and discriminators, optimiser, scheduler, scaler states, counters, the
        resolved config and whatever ``extra`` holds (RNG and data-stream states from :func:`fit`).
        """
        from . import save_checkpoint

        state = self.state_dict()
        state["format"] = "svd-wct-train/1"
        state["step"] = self.step  # quick-look copy in the JSON header
        state["domains"] = ["A (paintings)", "B (photos)"]
        if extra:
            state.update(extra)
        save_checkpoint(path, self.nets(), self.config, extra=state)
        return Path(path)

    def load_weights(self, path: str | Path) -> int:
        """Fine-tuning start: copy the four networks of a training checkpoint, nothing else.

        Optimisers, schedulers, the step counter and RNGs stay as they are (a new run); the checkpoint may
        come from another data set (e.g. start photo -> Van Gogh from a photo -> Monet run).

        Args:
            path: a training checkpoint (``step_N.safetensors`` written by :meth:`save`) of the same
                network configuration.

        Returns:
            The step the checkpoint was saved at.

        Raises:
            CheckpointError: unreadable, not a training checkpoint, or networks of another shape.
        """
        tensors, extra = self._read_training_checkpoint(path)
        self._load_nets(path, tensors)
        return int(extra["counters"]["step"])  # as :meth:`resume` reads it

    def _read_training_checkpoint(self, path: str | Path) -> tuple[dict, dict]:
        from . import load_checkpoint

        try:
            ckpt = load_checkpoint(path)
        except Exception as err:  # noqa: BLE001 - any failure means this checkpoint is unusable
            raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
        tensors, extra = _split_ckpt(ckpt)
        if extra.get("format") != "svd-wct-train/1":
            raise CheckpointError(f"{path} is not a training checkpoint (use it with --resume only if "
                                  "it was written by train.py)")
        return tensors, extra

    def _load_nets(self, path, tensors: dict) -> None:
        for name, net in self.nets().items():
            if name not in tensors:
                raise CheckpointError(f"{path} has no '{name}' weights")
            try:
                net.load_state_dict(tensors[name])
            except RuntimeError as err:
                details = [ln.strip() for ln in str(err).splitlines()[1:] if ln.strip()]
                first = f" ({len(details)} differences, first: {details[0]})" if details else f": {err}"
                raise CheckpointError(f"{path}: '{name}' does not match this network{first}; it was trained "
                                      "with other gen/dis settings (width, groups, n_res, ...)") from err

    def resume(self, path: str | Path) -> dict:
        """Load a checkpoint written by :meth:`save` into this trainer; returns its ``extra`` dict.

        Raises:
            CheckpointError: the file is not a training checkpoint of a compatible network.
        """
        tensors, extra = self._read_training_checkpoint(path)
        self._load_nets(path, tensors)
        self.opt_gen.load_state_dict(extra["optim"]["gen"])
        self.opt_dis.load_state_dict(extra["optim"]["dis"])
        _load_sched(self.sched_gen, extra["sched"]["gen"])
        _load_sched(self.sched_dis, extra["sched"]["dis"])
        if extra.get("scaler", {}).get("gen") and self.scaler_gen.is_enabled():
            self.scaler_gen.load_state_dict(_scaler_state(extra["scaler"]["gen"]))
            self.scaler_dis.load_state_dict(_scaler_state(extra["scaler"]["dis"]))
        c = extra["counters"]
        self.step = int(c["step"])
        self.nonfinite_total = int(c["nonfinite_total"])
        self.nonfinite_streak = int(c["nonfinite_streak"])
        self.amp_overflows = int(c.get("amp_overflows", 0))
        return extra


def _sched_state(s) -> dict:
    return {k: v for k, v in s.state_dict().items() if k != "lr_lambdas"}


def _load_sched(s, state: dict) -> None:
    full = s.state_dict()
    full.update(state)
    s.load_state_dict(full)


def _scaler_state(d: dict) -> dict:
    return {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in d.items()}


def _split_ckpt(ckpt) -> tuple[dict, dict]:
    """``load_checkpoint`` result -> (per-net state dicts, extra)."""
    if isinstance(ckpt, dict):
        nets = ckpt.get("nets") or ckpt.get("state_dicts") or {}
        extra = ckpt.get("extra") or {}
        return nets, extra
    nets = getattr(ckpt, "nets", None) or getattr(ckpt, "state_dicts", {})
    return nets, getattr(ckpt, "extra", {}) or {}


# --------------------------------------------------------------------------------------------------
# Data stream
# --------------------------------------------------------------------------------------------------

class _BatchStream:
    """Endless batches from a DataLoader over a :class:`ResumableDistributedSampler`, with a position."""

    def __init__(self, loader, sampler: ResumableDistributedSampler, epoch: int = 0, pos: int = 0):
        self.loader, self.sampler = loader, sampler
        self.batch_size = loader.batch_size
        self.epoch, self.pos = int(epoch), int(pos)  # pos = batches consumed in this epoch
        self._it = None

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def __next__(self):
        while True:
            if self._it is None:
                self.sampler.set_position(self.epoch, self.pos * self.batch_size)
                self._it = iter(self.loader)
            try:
                batch = next(self._it)
            except StopIteration:
                self._it = None
                self.epoch, self.pos = self.epoch + 1, 0
                continue
            self.pos += 1
            return batch


# --------------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------------

def _init_distributed(device_setting: str) -> tuple[int, int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device_setting == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_setting)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device=cuda requested but torch.cuda.is_available() is False; use --device cpu")
    if world <= 1:
        return 0, 1, 0, device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, local, device


def _hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        name = f"{name}, {torch.get_num_threads()} threads"
    return f"{world} x {device.type}: {name}"


def _holdout(files: Sequence[Path], k: int) -> list[Path]:
    if k <= 0 or len(files) <= k:
        return []
    idx = np.linspace(0, len(files) - 1, k).round().astype(int)
    return [files[i] for i in sorted(set(idx.tolist()))]


def _sample_files(folder: str | None, k: int) -> list[Path]:
    from wct.io import list_images

    if folder is None or not Path(folder).is_dir():
        return []
    return _holdout(list_images(folder), k) or list(list_images(folder))[:k]


def _make_grid(rows: torch.Tensor):
    from torchvision.utils import make_grid

    n, c = rows.shape[:2]
    return make_grid(rows.reshape(n * c, *rows.shape[2:]), nrow=c, padding=2, pad_value=1.0)


def sample_scores(rows: torch.Tensor) -> dict[str, float]:
    """Artefact and sharpness scores of held-out translations, logged at every sample step.

    Args:
        rows: ``(N, 3, 3, H, W)`` rows of (content | style | output) in [0, 1] (``Trainer.sample()["b2a"]``).

    Returns:
        ``{"ripple_output", "ripple_content", "sharpness_output", "sharpness_content", "luma_corr"}``: means over the N
        rows of :func:`wct.metrics.ripple_score` (oriented stripes at periods 3-12 px; the ripple of the demo
        runs grew from photo level ~30 to thousands in ~1,500 steps) and :func:`wct.metrics.sharpness`
        (mean luma gradient per pixel, [0, 1] images), and ``luma_corr`` = ``1 - structure_loss(content,
        output)``: the correlation of their coarse luminance in [-1, 1] (near -1: the translation inverts
        light and dark). The ripple entries are left out for images under 48 px (too small for the band).
    """
    from wct.metrics import ripple_score, sharpness

    content, output = rows[:, 0].float().clamp(0, 1), rows[:, 2].float().clamp(0, 1)
    out = {"sharpness_output": float(sharpness(output).mean()),
           "sharpness_content": float(sharpness(content).mean()),
           "luma_corr": float(1 - structure_loss(content, output))}
    if min(rows.shape[-2:]) >= 48:
        out["ripple_output"] = float(ripple_score(output).mean())
        out["ripple_content"] = float(ripple_score(content).mean())
    return out


def _save_png(grid: torch.Tensor, path: Path) -> None:
    from wct.io import save_image, tensor_to_pil

    save_image(tensor_to_pil(grid), path)


def fit(config: dict, *, resume: bool | str | Path = False, fault_hook=None, log=print) -> dict:
    """Train (or continue) the run described by a resolved ``config``; returns the summary dict.

    Writes into ``<out>/<name>/``: ``config.yaml`` (resolved), ``checkpoints/step_N.safetensors`` +
    ``.json`` (every ``train.save_every`` steps, at the end, on Ctrl-C / SIGTERM; the last
    ``train.keep_last`` kept), TensorBoard events, ``samples/step_N.png`` (held-out
    content | style | output grids), ``metrics.jsonl`` (losses, every ``train.log_every`` steps),
    ``samples.jsonl`` (:func:`sample_scores` of the held-out photo -> painting samples: ripple artefact score,
    sharpness and luminance correlation, every ``train.sample_every`` steps) and ``summary.json``.

    Args:
        config: resolved config (:func:`resolve_config`).
        resume: ``True`` = continue from the newest complete checkpoint of the run (start fresh when there
            is none); a path = continue from that checkpoint; ``False`` = new run (refuses to overwrite a
            run folder that already holds checkpoints).
        fault_hook: ``fn(trainer, info) -> loss | None`` called on every loss before backward (tests use
            it to inject a NaN).
        log: function receiving progress lines (rank 0 only).

    Raises:
        TrainingDiverged: ``train.max_nonfinite`` consecutive non-finite steps (after rolling the
            networks back to the last checkpoint; the run's files keep the last good checkpoint).
        FileExistsError: a new run would overwrite checkpoints of an existing run.
    """
    from torch.utils.data import DataLoader

    rank, world, _, device = _init_distributed(str(config["device"]))
    is_main = rank == 0
    if device.type == "cpu":
        if config.get("cpu_threads"):
            torch.set_num_threads(int(config["cpu_threads"]))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick the fastest kernels
    t_cfg = config["train"]
    run_dir = Path(config["out"]).expanduser().resolve() / str(config["name"])
    ckpt_dir = run_dir / "checkpoints"
    existing = find_checkpoints(ckpt_dir)
    start_ckpt: Path | None = None
    if resume:
        if isinstance(resume, (str, Path)) and not isinstance(resume, bool):
            start_ckpt = Path(resume)
            if not start_ckpt.is_file():
                raise CheckpointError(f"checkpoint not found: {start_ckpt}")
        elif existing:
            start_ckpt = existing[-1][1]
        elif is_main:
            log(f"--resume: no checkpoint in {ckpt_dir}; starting a new run at step 0")
    elif existing:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints (newest: step {existing[-1][0]}); pass --resume to continue "
            "it, or choose another --name / --out")

    # ---- networks + optionally the checkpoint
    trainer = Trainer(config, device=device, rank=rank, world_size=world)
    trainer.fault_hook = fault_hook
    extra: dict = {}
    if start_ckpt is not None:
        candidates = [start_ckpt] if resume is not True else [p for _, p in reversed(existing)]
        for i, cand in enumerate(candidates):
            try:
                extra = trainer.resume(cand)
                start_ckpt = cand
                break
            except (CheckpointError, FileNotFoundError, KeyError) as err:
                if i == len(candidates) - 1:
                    raise
                if is_main:
                    log(f"warning: skipping unusable checkpoint {cand}: {err}")
    init_from = t_cfg.get("init_from")
    init_info: dict | None = extra.get("init_from")
    if start_ckpt is None and init_from:
        init_step = trainer.load_weights(init_from)
        init_info = {"path": str(init_from), "step": init_step}
        if is_main:
            log(f"networks initialised from {init_from} (its step {init_step}); optimisers start fresh")
    sittings = list(extra.get("sittings", []))
    wall_before = float(extra.get("wall_time_s", 0.0))

    # ---- data
    d = config["data"]
    seed = int(config["seed"])
    from wct.io import list_images

    held_a = [Path(p) for p in _sample_files(d["test_a"], t_cfg["sample_count"])]
    held_b = [Path(p) for p in _sample_files(d["test_b"], t_cfg["sample_count"])]
    exclude: list[Path] = []
    if not held_a:  # no test folder: hold `holdout` training images out, show the first of them
        out_a = _holdout(list_images(d["train_a"]), d["holdout"])
        exclude += out_a
        held_a = out_a[: t_cfg["sample_count"]]
    if not held_b:
        out_b = _holdout(list_images(d["train_b"]), d["holdout"])
        exclude += out_b
        held_b = out_b[: t_cfg["sample_count"]]
    dataset = UnpairedImageFolders(d["train_a"], d["train_b"], load_size=d["load_size"],
                                   crop_size=d["crop_size"], flip=d["flip"], seed=seed, exclude=exclude)
    bs = int(t_cfg["batch_size"])
    if batches_per_epoch(len(dataset), world, bs) < 1:
        raise ValueError(f"{len(dataset)} training images cannot fill one batch of {bs} per process "
                         f"({world} processes); lower --batch-size")
    sampler = ResumableDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=d["shuffle"],
                                          seed=seed)
    nw = d["num_workers"]
    nw = (0 if device.type == "cpu" else 4) if nw in ("auto", None) else int(nw)
    loader = DataLoader(dataset, batch_size=bs, sampler=sampler, num_workers=nw, drop_last=True,
                        collate_fn=collate_unpaired, pin_memory=device.type == "cuda",
                        persistent_workers=nw > 0)
    rngs = extra.get("rng") or []
    pos = rngs[0]["sampler"] if rngs else {"epoch": 0, "pos": 0}  # every rank consumed as many batches
    stream = _BatchStream(loader, sampler, pos["epoch"], pos["pos"])
    if rngs and len(rngs) == world:
        _set_rng_state(rngs[rank])
    else:
        if rngs and is_main:
            log(f"checkpoint has RNG states of {len(rngs)} processes, now {world}: RNGs reseeded")
        torch.manual_seed(seed * 1000 + rank + trainer.step)
        np.random.seed((seed * 1000 + rank + trainer.step) % 2**32)
        random.seed(seed * 1000 + rank + trainer.step)

    # ---- outputs (rank 0 only)
    writer = None
    samples_dir = run_dir / "samples"
    metrics_path, samples_path = run_dir / "metrics.jsonl", run_dir / "samples.jsonl"
    if is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        samples_dir.mkdir(parents=True, exist_ok=True)
        _clean_checkpoint_dir(ckpt_dir, log)
        _atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        for path in (metrics_path, samples_path):
            if path.exists():  # drop records after the step we continue from (a killed sitting)
                keep = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                        if ln.strip() and _jsonl_step(ln) <= trainer.step]
                _atomic_write_text(path, "".join(ln + "\n" for ln in keep))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir), purge_step=trainer.step if trainer.step > 0 else None)
    held = None
    held_skipped: dict[str, str] = {}
    if is_main and held_a and held_b:
        k = min(len(held_a), len(held_b))
        la = ImageList(held_a[:k], load_size=d["load_size"], crop_size=d["crop_size"])
        lb = ImageList(held_b[:k], load_size=d["load_size"], crop_size=d["crop_size"])
        held_skipped = {**la.skipped, **lb.skipped}
        ia, ib = la.stack(), lb.stack()
        k = min(len(ia), len(ib))
        held = (ia[:k], ib[:k]) if k else None

    reporter = BadFileReporter()
    if held_skipped:  # unreadable held-out images were warned about by ImageList; list them too
        reporter.seen.update({k: v for k, v in held_skipped.items() if k not in reporter.seen})
    max_steps = int(t_cfg["max_steps"])
    sitting = {"start_step": trainer.step, "end_step": trainer.step, "wall_s": 0.0,
               "hardware": _hardware(device, world),
               "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    sittings.append(sitting)
    t_start = time.perf_counter()
    status = "running"
    message = ""
    last: dict = {}
    stop_signal: list[int] = []

    def _on_signal(signum, frame):
        if stop_signal and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop at once, without saving
        stop_signal.append(signum)  # first Ctrl-C / SIGTERM: finish the step, save, stop

    old_handlers = {}
    if threading_main():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old_handlers[sig] = signal.signal(sig, _on_signal)

    def should_stop() -> bool:
        # Every rank must stop after the same step (a collective per step; cheap next to a training step).
        return trainer._all_reduce_flag(bool(stop_signal))

    def rng_states() -> list[dict]:
        mine = _rng_state(stream.state())
        if world > 1:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, _cpu_tree(mine))
            return gathered
        return [mine]

    def write_summary(final: bool) -> dict:
        now = time.perf_counter() - t_start
        sitting["end_step"], sitting["wall_s"] = trainer.step, round(now, 1)
        steps_this = trainer.step - sitting["start_step"]
        summary = {
            "name": config["name"], "status": status, "success": status != "diverged",
            "message": message, "steps_done": trainer.step, "max_steps": max_steps,
            "nonfinite_steps": trainer.nonfinite_total, "amp_overflow_steps": trainer.amp_overflows,
            "wall_time_s": round(wall_before + now, 1),
            "sec_per_step_this_sitting": round(now / steps_this, 4) if steps_this else None,
            "hardware": sitting["hardware"], "world_size": world,
            "amp": None if trainer.amp_dtype is None else str(trainer.amp_dtype),
            "bad_files": sorted(reporter.seen), "last_losses": last,
            "sittings": sittings, "torch": torch.__version__, "final": final,
        }
        if init_info:
            summary["init_from"] = init_info
        if is_main:
            _atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        return summary

    def save() -> Path | None:
        rs = rng_states()  # collective: every rank takes part
        if not is_main:
            return None
        path = ckpt_dir / f"step_{trainer.step:08d}.safetensors"
        now = time.perf_counter() - t_start
        sitting["end_step"], sitting["wall_s"] = trainer.step, round(now, 1)
        trainer.save(path, extra={"rng": rs, "sittings": sittings, "wall_time_s": wall_before + now,
                                  **({"init_from": init_info} if init_info else {})})
        for _, old in find_checkpoints(ckpt_dir)[: -int(t_cfg["keep_last"])]:
            for f in (old, old.with_suffix(".json")):
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
        write_summary(final=False)
        return path

    from tqdm.auto import tqdm

    bar = tqdm(total=max_steps, initial=trainer.step, disable=None if is_main else True,
               dynamic_ncols=True, desc=str(config["name"]))
    if is_main:
        log(f"[{config['name']}] step {trainer.step} -> {max_steps} on {sitting['hardware']}; "
            f"{len(dataset.files_a)} A / {len(dataset.files_b)} B images; run folder {run_dir}"
            + (f"; resumed from {start_ckpt}" if start_ckpt else ""))
    t_log, n_log, data_time = time.perf_counter(), 0, 0.0
    t_print, step_print = time.perf_counter(), trainer.step
    saved_at = trainer.step if start_ckpt is not None else -1
    # Denormal floats (tiny values late in training) are very slow on CPUs: flush them to zero while
    # training (process-wide, restored at the end).
    ftz = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        while trainer.step < max_steps:
            if should_stop():
                status = "interrupted"
                name = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}.get(
                    stop_signal[0] if stop_signal else None, "another process's signal")
                message = f"stopped by {name} at step {trainer.step}; checkpoint saved, continue with --resume"
                if is_main:
                    log(message)
                break
            t0 = time.perf_counter()
            batch = next(stream)
            data_time += time.perf_counter() - t0
            if batch["skipped"]:
                reporter.update(batch["skipped"])
            x_a = batch["a"].to(device, non_blocking=True)
            x_b = batch["b"].to(device, non_blocking=True)
            out = trainer.train_step(x_a, x_b)
            images = out.pop("images")
            step = trainer.step
            n_log += 1
            bar.update(1)
            if trainer.nonfinite_streak >= int(t_cfg["max_nonfinite"]):
                good = find_checkpoints(ckpt_dir)
                seen_total = trainer.nonfinite_total
                if good:
                    trainer.resume(good[-1][1])
                    trainer.nonfinite_total = seen_total  # report every non-finite step seen
                    where = f"rolled back to the last good checkpoint {good[-1][1]} (step {good[-1][0]})"
                else:
                    where = "no checkpoint to roll back to (none was written yet)"
                status = "diverged"
                message = (
                    f"training diverged: {t_cfg['max_nonfinite']} non-finite steps in a row ending at step "
                    f"{step} ({seen_total} non-finite steps in all); {where}. Nothing after "
                    "that checkpoint was saved. Try a lower optim.lr, optim.grad_clip=1, train.amp=none or "
                    "gen.backward=taylor, then --resume.")
                raise TrainingDiverged(message)
            if step % int(t_cfg["log_every"]) == 0 or step == max_steps:
                now = time.perf_counter()
                sec = (now - t_log) / max(n_log, 1)
                last = {k: round(v, 5) for k, v in out.items()}
                last["sec_per_step"] = round(sec, 4)
                last["data_sec_per_step"] = round(data_time / max(n_log, 1), 4)
                last.update({f"alpha/{k}": round(v, 5) for k, v in _alpha_values(trainer).items()})
                if is_main:
                    for k, v in out.items():
                        writer.add_scalar(k if "/" in k else f"train/{k}", v, step)
                    writer.add_scalar("train/nonfinite_total", trainer.nonfinite_total, step)
                    writer.add_scalar("perf/sec_per_step", sec, step)
                    writer.add_scalar("perf/data_sec_per_step", last["data_sec_per_step"], step)
                    for k in last:
                        if k.startswith("alpha/"):
                            writer.add_scalar(k, last[k], step)
                    with open(metrics_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"step": step, **last}) + "\n")
                    bar.set_postfix(g=f"{out['gen/total']:.3f}", d=f"{out['dis/total']:.3f}",
                                    nf=trainer.nonfinite_total)
                t_log, n_log, data_time = now, 0, 0.0
            if is_main and (step % int(t_cfg["print_every"]) == 0 or step == max_steps):
                now = time.perf_counter()
                sec = (now - t_print) / max(step - step_print, 1)  # includes logging, samples, saves
                t_print, step_print = now, step
                tqdm.write(f"[{config['name']}] step {step}/{max_steps} gen {out['gen/total']:.4f} "
                           f"dis {out['dis/total']:.4f} lr {out['lr']:.2e} {sec:.3f} s/step "
                           f"non-finite {trainer.nonfinite_total}", file=sys.stdout)
                sys.stdout.flush()
            if is_main and step % int(t_cfg["image_every"]) == 0:
                order = ["x_a", "x_ab", "x_aba", "x_a_rec", "x_b", "x_ba", "x_bab", "x_b_rec"]
                row = torch.stack([images[k][0].float().cpu() for k in order])
                from torchvision.utils import make_grid

                writer.add_image("train/a_ab_aba_arec_b_ba_bab_brec",
                                 make_grid((row + 1) / 2, nrow=4, padding=2).clamp(0, 1), step)
            if is_main and held is not None and step % int(t_cfg["sample_every"]) == 0:
                grids = trainer.sample(*held)
                g = _make_grid(grids["b2a"])
                _save_png(g, samples_dir / f"step_{step:08d}.png")
                writer.add_image("samples/photo_to_painting(content|style|output)", g, step)
                writer.add_image("samples/painting_to_photo(content|style|output)",
                                 _make_grid(grids["a2b"]), step)
                scores = sample_scores(grids["b2a"])
                for k, v in scores.items():
                    writer.add_scalar(f"samples/{k}", v, step)
                with open(samples_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": step, **{k: round(v, 5) for k, v in scores.items()}}) + "\n")
            if step % int(t_cfg["save_every"]) == 0 and step != saved_at:
                save()
                saved_at = step
        else:
            status = "completed"
    except KeyboardInterrupt:
        status = "killed"
        message = (f"stopped at once by a second Ctrl-C during step {trainer.step + 1}; nothing saved after "
                   f"step {max(saved_at, 0)}, continue with --resume")
        if is_main:
            log(message)
        write_summary(final=True)
        raise
    except TrainingDiverged:
        if is_main:
            write_summary(final=True)
            log(message)
        raise
    finally:
        if ftz:
            torch.set_flush_denormal(False)
        bar.close()
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)
        if status in ("completed", "interrupted") and trainer.step != saved_at:
            save()
        if writer is not None:
            writer.flush()
            writer.close()
    summary = write_summary(final=True)
    if is_main:
        log(f"[{config['name']}] {status} at step {trainer.step}: {trainer.nonfinite_total} non-finite steps, "
            f"{summary['wall_time_s']:.0f} s in all; checkpoints in {ckpt_dir}")
    return summary


def _clean_checkpoint_dir(folder: Path, log) -> None:
    """Remove what a kill during a save can leave: temporary files and half pairs (one file of X.safetensors
    + X.json). Complete checkpoints are never touched."""
    complete = {p.name for _, p in find_checkpoints(folder)}
    for p in folder.iterdir():
        stem_st = p.with_suffix(".safetensors").name
        orphan = CKPT_RE.match(stem_st) and stem_st not in complete and p.suffix in (".safetensors", ".json")
        if p.is_file() and (p.name.endswith(".tmp") or orphan):
            log(f"removing incomplete checkpoint file {p} (left by an interrupted save)")
            p.unlink()


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _cpu_tree(x):
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, dict):
        return {k: _cpu_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_cpu_tree(v) for v in x)
    return x


def _jsonl_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62


def _alpha_values(trainer: Trainer) -> dict[str, float]:
    """Current WCT blend of each generator (mean over modules), when the network exposes it."""
    out = {}
    for name, g in (("gen_a", trainer.gen_a), ("gen_b", trainer.gen_b)):
        fn = getattr(g, "alphas", None)
        if callable(fn):
            with torch.no_grad():
                vals = [float(v) for v in fn()]
            if vals:
                out[name] = sum(vals) / len(vals)
    return out


# --------------------------------------------------------------------------------------------------
# Export: a shipped photo -> painting Generator with a style bank
# --------------------------------------------------------------------------------------------------

def export_generator(run: str | Path, *, direction: str = "b2a", out: str | Path, fp16: bool = False,
                     bank_size: int | None = None, bank_prefix: str | None = None,
                     checkpoint: str | Path | None = None, log=print) -> Path:
    """Assemble one :class:`models.Generator` for ``direction`` and save it with a style bank.

    ``b2a`` (photo -> painting, the shipped direction): content encoder of ``gen_b`` (photos) + style
    encoder and decoder of ``gen_a`` (paintings); ``a2b`` the reverse. The style bank holds
    ``encode_style`` of ``bank_size`` training images of the style domain (chosen by
    :func:`models.inference.compute_style_bank`: the most typical, then farthest-point sampling; centre
    squares at ``data.load_size``) as ``extra["style_bank"]`` ``(N, C_s, h, w)``, their display names
    ``"<Prefix> #i"`` as ``extra["style_bank_names"]`` and file names as ``extra["style_bank_sources"]``
    (see docs/DESIGN.md).

    Args:
        run: run folder (``<out>/<name>``) or a training checkpoint file.
        direction: ``"b2a"`` or ``"a2b"``.
        out: output ``.safetensors`` path (the ``.json`` goes beside it).
        fp16: store weights and bank in float16 (half the size; loaders upcast).
        bank_size: number of style images (default ``train.style_bank_size``).
        bank_prefix: display-name prefix of bank entries (default: from ``out``'s stem, e.g. "Monet").
        checkpoint: a specific training checkpoint (default: the newest in the run).

    Returns:
        The written ``.safetensors`` path.

    Raises:
        CheckpointError: no checkpoint found; ValueError: bad direction.
    """
    from . import Generator, load_checkpoint, save_checkpoint

    if direction not in ("b2a", "a2b"):
        raise ValueError(f"direction must be 'b2a' (photo -> painting) or 'a2b', got {direction!r}")
    run = Path(run)
    if checkpoint is None:
        if run.is_file():
            checkpoint = run
        else:
            found = find_checkpoints(run / "checkpoints")
            if not found:
                raise CheckpointError(f"no training checkpoint in {run / 'checkpoints'}")
            checkpoint = found[-1][1]
    ckpt = load_checkpoint(checkpoint)
    tensors, extra = _split_ckpt(ckpt)
    config = ckpt.get("config") if isinstance(ckpt, dict) else getattr(ckpt, "config", None)
    if extra.get("format") != "svd-wct-train/1" or not config:
        raise CheckpointError(f"{checkpoint} is not a training checkpoint written by train.py")
    gcfg = _gen_config(config)
    src, dst = ("gen_b", "gen_a") if direction == "b2a" else ("gen_a", "gen_b")
    content_gen, style_gen = Generator(gcfg), Generator(gcfg)
    content_gen.load_state_dict(tensors[src])
    style_gen.load_state_dict(tensors[dst])
    gen = Generator.compose(content_gen, style_gen).eval()  # content encoder + style encoder, decoder

    d = config["data"]
    style_folder = d["train_a"] if direction == "b2a" else d["train_b"]
    from .inference import compute_style_bank

    n = int(bank_size or config["train"]["style_bank_size"])
    prefix = bank_prefix or Path(out).stem.replace("_", " ").replace("-", " ").title()
    # Typical-then-farthest-point selection over the style domain's training images (models.inference),
    # encoded as centre squares at the training load size.
    bank, names, sources = compute_style_bank(gen, style_folder, n=n, size=int(d["load_size"]), prefix=prefix)
    gen = gen.cpu().eval()
    step = int(extra["counters"]["step"])
    meta = {
        "style_bank": bank,
        "style_bank_names": names,
        "style_bank_sources": [Path(p).name for p in sources],
        "direction": direction,
        "step": step,
        "trained_steps": step,
        "source_run": str(config["name"]),
        "source_checkpoint": Path(checkpoint).name,
        "train_config": config,
        "wall_time_s": extra.get("wall_time_s"),
        "sittings": extra.get("sittings"),
    }
    if extra.get("init_from"):  # fine-tuned: the run started from another run's networks at this step
        meta["init_from"] = extra["init_from"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = save_checkpoint(out, {"generator": gen}, gcfg, extra=meta, dtype=torch.float16 if fp16 else None)
    umask = os.umask(0)
    os.umask(umask)
    for p in paths:  # temporary files are created 0600; a shipped checkpoint is for everyone to read
        os.chmod(p, 0o666 & ~umask)
    log(f"exported {direction} generator (step {step}, {'fp16' if fp16 else 'fp32'}, style bank of "
        f"{len(names)}) to {out}")
    return out
