"""Train one classifier of the seed paper's study: ``python -m wct.classification.train --config FILE.yaml``.

Protocol (Wang et al., "Robust Differentiable SVD", TPAMI 2021, Sec. 5.1): SGD, learning rate 0.1,
momentum 0.9, weight decay 5e-4, batch 128; CIFAR: 350 epochs with the learning rate ×0.1 every 100 epochs;
Tiny ImageNet: 90 epochs, ×0.1 every 30 (see ``configs/classification/*.yaml``).

A run whose loss, gradients or parameters become non-finite (the paper's "gradient explosion") is stopped
and recorded as a **failed run** (``result.json`` with ``status: "failed"`` and the reason), not a crash;
the command then exits with status 3. Also recorded as failures: ``torch.linalg.LinAlgError`` and the
ValueError that ``wct.linalg`` raises on non-finite input, when they happen after the first successful step
(before that they are configuration errors and propagate).

Other features: seeds (``seed``), bfloat16 autocast on CUDA (``amp``; no loss scaling is needed with
bfloat16, so a non-finite gradient stays a real failure signal; the ZCA layer computes in float64 outside
autocast), checkpoint/resume (``ckpt.safetensors`` + ``ckpt.json`` in ``out_dir`` after every epoch,
written atomically; ``--resume`` continues a run bit-for-bit on CPU), TensorBoard scalars (``tb/``), tqdm.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from wct.classification.data import DataConfig, build_datasets
from wct.classification.models import ModelConfig, build_model

__all__ = ["OptimConfig", "TrainConfig", "load_config", "main", "train"]


@dataclass
class OptimConfig:
    """Optimiser section (YAML key ``optim:``). Defaults: the paper's CIFAR protocol."""

    lr: float = 0.1  # initial SGD learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 weight decay
    batch_size: int = 128  # training batch size (test batches use the same size)
    epochs: int = 350  # training epochs
    lr_step: int = 100  # multiply the learning rate by lr_gamma every lr_step epochs
    lr_gamma: float = 0.1  # learning-rate decay factor

    @classmethod
    def from_dict(cls, d: dict) -> OptimConfig:
        return cls(**_known(cls, d, "optim"))


@dataclass
class TrainConfig:
    """A whole training config (one YAML file; see ``configs/classification/``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0  # seeds torch, numpy and random; the data order of epoch e uses seed + e
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    out_dir: str | None = None  # checkpoints, TensorBoard logs and result.json (None: nothing written)
    tensorboard: bool = True  # write TensorBoard scalars to out_dir/tb
    progress: bool = True  # tqdm progress bars
    threads: int | None = None  # torch.set_num_threads (None: leave torch's default)
    eval_every: int = 1  # evaluate on the test set every this many epochs (and always after the last one)
    max_steps: int | None = None  # stop after this many optimiser steps (smoke tests); None: full epochs
    fault_nonfinite_grad_step: int | None = None  # fault injection (tests): make the gradients NaN at this step

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        model = ModelConfig.from_dict(d.pop("model", {}) or {})
        data = DataConfig.from_dict(d.pop("data", {}) or {})
        optim = OptimConfig.from_dict(d.pop("optim", {}) or {})
        return cls(model=model, data=data, optim=optim, **_known(cls, d, "top-level"))

    def to_dict(self) -> dict:
        return asdict(self)


def _known(cls, d: dict, where: str) -> dict:
    names = {f.name for f in fields(cls)} - {"model", "data", "optim"}
    unknown = set(d) - names
    if unknown:
        raise ValueError(f"unknown {where} config keys {sorted(unknown)}; expected a subset of {sorted(names)}")
    return d


def _set_path(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ValueError(f"cannot set {dotted!r}: {k!r} is not a section")
    d[keys[-1]] = value


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config and apply ``key.sub=value`` overrides (values parsed as YAML).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown keys or a malformed override.
    """
    raw: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} not found")
        raw = yaml.safe_load(p.read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{p}: expected a mapping at the top level")
    for ov in overrides or []:
        if "=" not in ov:
            raise ValueError(f"override {ov!r} is not of the form key.sub=value")
        k, v = ov.split("=", 1)
        _set_path(raw, k.strip(), yaml.safe_load(v))
    return TrainConfig.from_dict(raw)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints: safetensors (tensors) + JSON (everything else); never pickle.


def _save_checkpoint(out: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = v.detach().cpu().contiguous().clone()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = dict(meta, optim_param_groups=osd["param_groups"], numpy_rng=_np_state(), python_rng=_py_state())
    tmp_t, tmp_j = out / "ckpt.safetensors.tmp", out / "ckpt.json.tmp"
    save_file(tensors, str(tmp_t))
    tmp_j.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_t, out / "ckpt.safetensors")
    os.replace(tmp_j, out / "ckpt.json")


def _np_state() -> list:
    s = np.random.get_state()
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def _py_state() -> list:
    v, st, g = random.getstate()
    return [v, list(st), g]


def _load_checkpoint(out: Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    from safetensors.torch import load_file

    meta = json.loads((out / "ckpt.json").read_text())
    tensors = load_file(str(out / "ckpt.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["optim_param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    n = meta["numpy_rng"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    p = meta["python_rng"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    return meta


# ---------------------------------------------------------------------------------------------------------


class _Failure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return dev


@torch.no_grad()
def _evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool) -> tuple[float, float]:
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits.float(), y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        total += len(y)
    model.train()
    return 100.0 * (1.0 - correct / max(total, 1)), loss_sum / max(total, 1)


def train(cfg: TrainConfig, *, resume: bool = False) -> dict:
    """Train one model under the paper's protocol and return (and write) the run's result.

    Args:
        cfg: the config.
        resume: continue from ``cfg.out_dir/ckpt.*`` when present.

    Returns:
        ``dict`` with ``status`` ("ok" or "failed"), ``reason`` (why it failed, else None), ``failed_at``
        (``{"epoch", "step"}`` or None), ``final_error`` and ``best_error`` (test error in % at the end /
        minimum over epochs; None when no epoch was evaluated), ``max_grad_norm`` (largest total gradient
        L2 norm seen), ``max_stem_grad_norm`` (largest gradient norm of the stem convolution, which
        receives its gradient through the ZCA layer's backward; None without ``conv1``), ``steps``, ``epochs_done``, ``history`` (per epoch: train_loss, test_error, lr) and
        ``seconds``. Also written to ``out_dir/result.json`` when ``out_dir`` is set.

    Raises:
        ValueError / FileNotFoundError: bad config or missing data (before the first step).
    """
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    amp = bool(cfg.amp) and device.type == "cuda"
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    random.seed(cfg.seed)

    train_ds, test_ds, info = build_datasets(cfg.data)
    model = build_model(cfg.model, num_classes=info["num_classes"], in_channels=info["in_channels"]).to(device)
    o = cfg.optim
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    test_loader = DataLoader(test_ds, batch_size=o.batch_size, shuffle=False, num_workers=cfg.data.num_workers)

    out = Path(cfg.out_dir) if cfg.out_dir else None
    start_epoch, step, history, max_gn = 0, 0, [], 0.0
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if resume and (out / "ckpt.json").is_file():
            meta = _load_checkpoint(out, model, opt)
            start_epoch, step, history, max_gn = meta["epoch"], meta["step"], meta["history"], meta["max_grad_norm"]
            print(f"resumed from {out / 'ckpt.safetensors'} at epoch {start_epoch}, step {step}")
    writer = None
    if out is not None and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))

    status, reason, failed_at = "ok", None, None
    params = [p for p in model.parameters() if p.requires_grad]
    stem = getattr(getattr(model, "conv1", None), "weight", None)
    max_stem_gn = 0.0
    first_step = step
    epoch = start_epoch
    try:
        from tqdm.auto import tqdm

        for epoch in range(start_epoch, o.epochs):
            lr = o.lr * o.lr_gamma ** (epoch // o.lr_step)
            for g in opt.param_groups:
                g["lr"] = lr
            gen = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
            loader = DataLoader(train_ds, batch_size=o.batch_size, shuffle=True, drop_last=len(train_ds) > o.batch_size,
                                generator=gen, num_workers=cfg.data.num_workers)
            loss_sum, n_seen = 0.0, 0
            for x, y in tqdm(loader, desc=f"epoch {epoch + 1}/{o.epochs}", disable=not cfg.progress, leave=False):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                try:
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                        loss = nn.functional.cross_entropy(model(x).float(), y)
                    if not torch.isfinite(loss):
                        raise _Failure(f"non-finite loss ({float(loss)})")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                except (torch.linalg.LinAlgError, ValueError) as e:
                    if step == first_step:
                        raise
                    raise _Failure(f"{type(e).__name__}: {e}") from e
                if cfg.fault_nonfinite_grad_step is not None and step == cfg.fault_nonfinite_grad_step:
                    params[0].grad.fill_(float("nan"))  # fault injection for tests
                gn = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
                if not math.isfinite(gn):
                    raise _Failure(f"non-finite gradient (total norm {gn})")
                max_gn = max(max_gn, gn)
                if stem is not None and stem.grad is not None:  # the gradient through the ZCA layer's backward
                    max_stem_gn = max(max_stem_gn, float(stem.grad.norm()))
                opt.step()
                step += 1
                loss_sum += float(loss.detach()) * len(y)
                n_seen += len(y)
                if writer is not None and step % 10 == 0:
                    writer.add_scalar("train/loss", float(loss.detach()), step)
                    writer.add_scalar("train/grad_norm", gn, step)
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
            if not all(torch.isfinite(p).all() for p in model.parameters()) or not all(
                    torch.isfinite(b).all() for b in model.buffers() if b.is_floating_point()):
                raise _Failure("non-finite parameters or running statistics")
            last = epoch + 1 == o.epochs or (cfg.max_steps is not None and step >= cfg.max_steps)
            test_error = test_loss = None
            if last or (epoch + 1) % max(cfg.eval_every, 1) == 0:
                test_error, test_loss = _evaluate(model, test_loader, device, amp)
                if not math.isfinite(test_loss):
                    raise _Failure(f"non-finite test loss ({test_loss})")
            history.append({"epoch": epoch + 1, "train_loss": loss_sum / max(n_seen, 1), "test_error": test_error,
                            "test_loss": test_loss, "lr": lr, "step": step})
            if writer is not None:
                writer.add_scalar("train/epoch_loss", history[-1]["train_loss"], step)
                writer.add_scalar("lr", lr, step)
                if test_error is not None:
                    writer.add_scalar("test/error", test_error, step)
                    writer.add_scalar("test/loss", test_loss, step)
            if cfg.progress:
                print(f"epoch {epoch + 1}/{o.epochs}: train loss {history[-1]['train_loss']:.4f}"
                      + (f", test error {test_error:.2f}%" if test_error is not None else ""))
            if out is not None:
                _save_checkpoint(out, model, opt, {"epoch": epoch + 1, "step": step, "history": history,
                                                   "max_grad_norm": max_gn,
        "max_stem_grad_norm": max_stem_gn if stem is not None else None, "config": cfg.to_dict()})
            if cfg.max_steps is not None and step >= cfg.max_steps:
                break
    except _Failure as f:
        status, reason, failed_at = "failed", f.reason, {"epoch": epoch + 1, "step": step}
        print(f"run FAILED at epoch {epoch + 1}, step {step}: {f.reason}", file=sys.stderr)
    finally:
        if writer is not None:
            writer.close()

    errors = [h["test_error"] for h in history if h["test_error"] is not None]
    result = {
        "status": status,
        "reason": reason,
        "failed_at": failed_at,
        "final_error": history[-1]["test_error"] if history and status == "ok" else None,
        "best_error": min(errors) if errors else None,
        "max_grad_norm": max_gn,
        "max_stem_grad_norm": max_stem_gn if stem is not None else None,
        "steps": step,
        "epochs_done": len(history),
        "history": history,
        "seconds": time.time() - t0,
        "method": cfg.model.method,
        "group_size": cfg.model.group_size,
        "seed": cfg.seed,
    }
    if out is not None:
        (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m wct.classification.train --config FILE [--set key=value ...]``."""
    ap = argparse.ArgumentParser(prog="python -m wct.classification.train", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="YAML config (see configs/classification/)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. --set model.method=exact --set optim.epochs=10")
    ap.add_argument("--out-dir", help="output folder (overrides out_dir)")
    ap.add_argument("--resume", action="store_true", help="continue from out_dir/ckpt.* when present")
    ap.add_argument("--download", action="store_true", help="download CIFAR into data.root when missing")
    ap.add_argument("--device", help="cpu | cuda | cuda:N (overrides device)")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except (FileNotFoundError, ValueError, TypeError) as e:
        ap.error(str(e))
    cfg = copy.deepcopy(cfg)
    if args.out_dir:
        cfg.out_dir = args.out_dir
    if args.download:
        cfg.data.download = True
    if args.device:
        cfg.device = args.device
    try:
        result = train(cfg, resume=args.resume)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {k: result[k] for k in ("status", "reason", "final_error", "best_error", "steps", "seconds")}
    print(json.dumps(summary))
    return 0 if result["status"] == "ok" else 3


if __name__ == "__main__":
    sys.exit(main())
