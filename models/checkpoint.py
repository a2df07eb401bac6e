"""Checkpoints as ``X.safetensors`` (every tensor) + ``X.json`` (everything else). Never unpickles.

Layout of ``X.json`` (``format_version`` 1)::

    {"format": "svd-wct-checkpoint", "format_version": 1, "id": "<uuid, also in the safetensors metadata>",
     "step": int | null, "domains": [...] | null, "backward": str | null,      # quick-look copies
     "config": {...},                                                          # plain JSON
     "nets": <tree>, "extra": <tree>,                                          # nested structure
     "cast": {"<tensor key>": "float32", ...}}                                 # dtype=float16 storage

A *tree* is the JSON image of the nested value with every tensor replaced by ``{"__tensor__": key}`` (its
key in the safetensors file: the dotted path, e.g. ``nets.generator.decoder.up.1.conv.weight`` or
``extra.optimizer_g.state.0.exp_avg``). Containers JSON cannot express exactly are tagged so that they come
back with the same types: dicts with non-string keys (optimiser ``state`` uses int keys)
``{"__dict__": [[key, value], ...]}``, tuples ``{"__tuple__": [...]}``, numpy arrays
``{"__ndarray__": [...], "dtype": ..., "shape": ...}`` (e.g. ``numpy.random.get_state()``), ``torch.dtype``
``{"__dtype__": "float32"}``. Lists, str, int, float, bool and None are stored as themselves, so
``optimizer.load_state_dict`` accepts what :func:`load_checkpoint` returns.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

FORMAT = "svd-wct-checkpoint"
FORMAT_VERSION = 1
_TAGS = ("__tensor__", "__dict__", "__tuple__", "__ndarray__", "__dtype__")


class CheckpointError(ValueError):
    """A checkpoint file is missing, pickled, corrupt, mismatched or of an unknown format."""


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


# ----------------------------------------------------------------------------------------------------------
# encoding
# ----------------------------------------------------------------------------------------------------------
class _Encoder:
    def __init__(self, cast_dtype: torch.dtype | None) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.cast: dict[str, str] = {}
        self.cast_dtype = cast_dtype

    def _key(self, path: str) -> str:
        key, n = path, 1
        while key in self.tensors:
            key, n = f"{path}#{n}", n + 1
        return key

    def encode(self, obj: Any, path: str) -> Any:
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
        if isinstance(obj, torch.Tensor):
            if obj.is_sparse or obj.layout != torch.strided or obj.is_quantized:
                raise CheckpointError(f"{path}: only dense tensors can be saved, got layout {obj.layout}")
            t = obj.detach().to("cpu").contiguous().clone()
            key = self._key(path)
            if self.cast_dtype is not None and t.dtype in (torch.float32, torch.float64):
                self.cast[key] = str(t.dtype).removeprefix("torch.")
                t = t.to(self.cast_dtype)
            self.tensors[key] = t
            return {"__tensor__": key}
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            obj = dataclasses.asdict(obj)
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj) and not any(k in _TAGS for k in obj):
                return {k: self.encode(v, f"{path}.{k}") for k, v in obj.items()}
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (str, int, float, bool))):
                    raise CheckpointError(f"{path}: dict key {k!r} of type {type(k).__name__} cannot be saved")
                items.append([k, self.encode(v, f"{path}.{k}")])
            return {"__dict__": items}
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.encode(v, f"{path}.{i}") for i, v in enumerate(obj)]
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": obj.ravel().tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, torch.dtype):
            return {"__dtype__": str(obj).removeprefix("torch.")}
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if obj is None or isinstance(obj, (str, int, float, bool)):
            return obj
        raise CheckpointError(f"{path}: cannot save a value of type {type(obj).__name__} (not a tensor, "
                              f"container or JSON scalar)")


def _plain(obj: Any, path: str = "config") -> Any:
    """Config to plain JSON (dataclasses -> dicts, tuples -> lists); tensors are refused."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _plain(v, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise CheckpointError(f"{path}: the config must be JSON-like (dataclass/dict/list/str/number), got "
                          f"{type(obj).__name__}; put tensors in extra")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"]).reshape(obj["shape"])
        if "__dtype__" in obj:
            return getattr(torch, obj["__dtype__"])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, nets: dict[str, Any], config: Any = None, extra: dict | None = None,
                    *, dtype: torch.dtype | None = None) -> tuple[Path, Path]:
    """Save networks, a config and extra state as ``X.safetensors`` + ``X.json`` (atomically).

    Args:
        path: ``X.safetensors`` (or ``X`` / ``X.json``); the parent folder is created.
        nets: ``{name: nn.Module or state dict}`` (e.g. ``{"gen_a": g_a, "dis_a": d_a}``; a shipped
            generator uses ``{"generator": g}``).
        config: a dataclass (e.g. :class:`models.GeneratorConfig`), a dict of them, or any JSON-like dict.
        extra: nested dict of anything else: optimiser ``state_dict()`` s, RNG states (``torch``, CUDA,
            ``numpy``, ``random``), ``"step"``, ``"domains"``, a ``"style_bank"`` tensor and its
            ``"style_bank_names"``. Tensors go to the safetensors file, the rest to the JSON.
        dtype: ``torch.float16`` / ``torch.bfloat16`` stores every float32/float64 tensor in that dtype (a
            shipped generator at half the size); :func:`load_checkpoint` casts them back.

    Returns:
        ``(safetensors_path, json_path)``.

    Both files are written to temporary files in the target folder and moved into place with
    ``os.replace``; a shared random id in both lets :func:`load_checkpoint` detect a mismatched pair.
    The files get the mode a plain ``open()`` would give (``0o666`` minus the umask, e.g. 0644).

    Raises:
        CheckpointError: a value that cannot be stored (sparse tensor, arbitrary object, bad config).
    """
    if not isinstance(nets, dict):
        raise CheckpointError(f"nets must be a dict {{name: module or state dict}}, got {type(nets).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise CheckpointError(f"extra must be a dict or None, got {type(extra).__name__}")
    if dtype not in (None, torch.float16, torch.bfloat16, torch.float32):
        raise CheckpointError(f"dtype must be None, torch.float16, torch.bfloat16 or torch.float32, got {dtype}")
    st_path, js_path = _paths(path)
    enc = _Encoder(dtype if dtype in (torch.float16, torch.bfloat16) else None)
    nets_tree = {str(k): enc.encode(v, f"nets.{k}") for k, v in nets.items()}
    extra = dict(extra or {})
    extra_tree = enc.encode(extra, "extra")
    cfg = _plain(config)
    ckpt_id = uuid.uuid4().hex
    step = extra.get("step")
    backward = None
    for c in (cfg, (cfg or {}).get("generator") if isinstance(cfg, dict) else None):
        if isinstance(c, dict) and isinstance(c.get("backward"), str):
            backward = c["backward"]
            break
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "id": ckpt_id,
        "step": int(step) if isinstance(step, (int, np.integer)) and not isinstance(step, bool) else None,
        "domains": _plain(extra.get("domains")) if isinstance(extra.get("domains"), (list, tuple)) else None,
        "backward": backward,
        "torch_version": torch.__version__,
        "config": cfg,
        "nets": nets_tree,
        "extra": extra_tree,
        "cast": enc.cast,
        "storage_dtype": str(enc.cast_dtype).removeprefix("torch.") if enc.cast else None,
    }
    text = json.dumps(meta, indent=1, allow_nan=True)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_files = []
    try:
        fd, tmp_st = tempfile.mkstemp(prefix=st_path.name + ".", suffix=".tmp", dir=st_path.parent)
        os.close(fd)
        tmp_files.append(tmp_st)
        save_file(enc.tensors, tmp_st, metadata={"format": FORMAT, "id": ckpt_id})
        fd, tmp_js = tempfile.mkstemp(prefix=js_path.name + ".", suffix=".tmp", dir=js_path.parent)
        tmp_files.append(tmp_js)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mode = 0o666 & ~_umask()  # mkstemp creates 0600; give the files the mode open() would
        os.chmod(tmp_st, mode)
        os.chmod(tmp_js, mode)
        os.replace(tmp_st, st_path)
        os.replace(tmp_js, js_path)
    finally:
        for t in tmp_files:
            if os.path.exists(t):
                os.unlink(t)
    return st_path, js_path


def _umask() -> int:
    """The process umask (``os.umask`` can only be read by setting it, so set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _refuse_pickle(p: Path) -> None:
    """Raise unless ``p`` starts like a safetensors file (u64 header length, then ``{``); name pickles."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80" or p.suffix in (".pt", ".pth", ".ckpt", ".pkl", ".bin"):
        raise CheckpointError(
            f"{p} looks like a pickled PyTorch file (torch.save); this project never unpickles files "
            f"(unpickling can run arbitrary code). Convert it where you trust it: "
            f"models.save_checkpoint(path, {{'generator': state_dict}}, config) writes safetensors + JSON.")
    raise CheckpointError(f"{p} is not a safetensors file (bad header)")


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` without unpickling anything.

    Args:
        path: ``X.safetensors``, ``X.json`` or ``X``.
        device: where the tensors go.

    Returns:
        ``{"nets": {name: state dict}, "config": dict | None, "extra": dict, "step", "domains", "backward",
        "format_version", "id", "storage_dtype"}`` (``storage_dtype``: ``torch.float16`` when saved with
        ``dtype=torch.float16``, else ``None``; pass it back as ``dtype=`` when re-saving). Nested structure and container types are restored exactly (optimiser
        state dicts load with ``optimizer.load_state_dict``); tensors stored with ``dtype=torch.float16``
        come back in their original dtype (float32).

    Raises:
        FileNotFoundError: a file of the pair is missing.
        CheckpointError: a pickled file (``torch.save``), a corrupt/foreign file, a mismatched pair or a newer
            format version.
    """
    st_path, js_path = _paths(path)
    given = Path(path)
    if given.exists() and given.suffix not in (".safetensors", ".json"):
        _refuse_pickle(given)
    for p in (st_path, js_path):
        if not p.is_file():
            raise FileNotFoundError(f"checkpoint file {p} not found (a checkpoint is X.safetensors + X.json)")
    _refuse_pickle(st_path)
    try:
        meta = json.loads(js_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{js_path} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{js_path} is not an {FORMAT} JSON file (missing 'format': '{FORMAT}')")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{js_path}: format_version {version!r} is not supported by this version "
                              f"(<= {FORMAT_VERSION}); update the project")
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(st_path), framework="pt", device="cpu") as f:
            file_meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{st_path} is not a readable safetensors file: {e}") from None
    if file_meta.get("id") != meta.get("id"):
        raise CheckpointError(f"{st_path} and {js_path} do not belong together (ids {file_meta.get('id')} vs "
                              f"{meta.get('id')}); was one of them overwritten separately?")
    for k, dt in (meta.get("cast") or {}).items():
        if k in tensors:
            tensors[k] = tensors[k].to(getattr(torch, dt))
    if str(device) != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    try:
        nets = _decode(meta.get("nets") or {}, tensors)
        extra = _decode(meta.get("extra") or {}, tensors)
    except KeyError as e:
        raise CheckpointError(f"{js_path} refers to tensor {e} missing from {st_path}") from None
    return {
        "nets": nets,
        "config": meta.get("config"),
        "extra": extra,
        "step": meta.get("step"),
        "domains": meta.get("domains"),
        "backward": meta.get("backward"),
        "format_version": version,
        "id": meta.get("id"),
        "storage_dtype": getattr(torch, meta["storage_dtype"]) if meta.get("storage_dtype") else None,
    }
