"""Image input/output shared by the app, the batch CLI and training.

Everything that reads a user's image goes through :func:`load_image`, which turns whatever Pillow can
open into an 8-bit RGB :class:`PIL.Image.Image`, or raises :class:`ImageLoadError` (a ``ValueError``)
whose message names the file and says what is wrong. What it does, in order:

1. **Decompression bombs** are refused *before* any pixel is decoded: the header's width x height is
   compared with ``max_pixels`` (Pillow's own open-time bomb check, for images over
   2 x ``Image.MAX_IMAGE_PIXELS``, is bypassed for the header read so that every refusal states
   ``max_pixels``: one limit, one message, :func:`bomb_message`).
2. **Animations** (GIF, WebP, APNG, multi-page TIFF): the first frame is used and an
   :class:`ImageNotice` warning says so.
3. **Downscaling** (``max_side``): a larger image is reduced so that its longer side is ``max_side``
   (JPEGs are decoded at a reduced scale first with ``Image.draft``, so a large photo is never fully
   decoded), with an :class:`ImageNotice`.
4. **EXIF orientation** is applied (``ImageOps.exif_transpose``).
5. **Mode conversion** to RGB: ``1``/``L``/``P``/``CMYK``/``YCbCr``/... via Pillow (an embedded ICC
   profile is converted to sRGB with LittleCMS when available); ``LA``/``PA``/``RGBA``/``P`` with a
   transparent colour are composited on **white**; 16-bit (``I;16*``, ``I``) and float (``F``) greyscale
   are rescaled to 8 bits (``v / 257``), not clipped. 16-bit RGB(A) PNGs are reduced to 8 bits per channel
   by Pillow on open.
6. **Too small**: an image whose shorter side is below ``min_side`` raises :class:`ImageLoadError`
   (a clear error, never a silent upscale: upscaling a thumbnail would make a blurry result that looks
   like a bug of the model).

Notices (first frame, downscaling) are issued as :class:`ImageNotice` warnings and also listed in the
returned image's ``info["notices"]`` so a UI can show them.

Truncated, corrupt, zero-byte and non-image files raise :class:`ImageLoadError`.

Example:
    >>> from PIL import Image
    >>> img = load_image(Image.new("LA", (20, 10), (0, 0)))  # fully transparent -> white
    >>> img.mode, img.size, img.getpixel((0, 0))
    ('RGB', (20, 10), (255, 255, 255))
    >>> tuple(pil_to_tensor(img).shape)
    (1, 3, 10, 20)
"""

from __future__ import annotations

import io
import os
import tempfile
import threading
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Union

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
    "ImageNotice",
    "bomb_message",
    "center_crop",
    "list_images",
    "load_image",
    "pil_to_tensor",
    "resize_max_side",
    "resize_shorter_side",
    "save_image",
    "tensor_to_pil",
]

ImageSource = Union[str, os.PathLike, bytes, IO[bytes], Image.Image]

#: Largest number of pixels (width x height) :func:`load_image` decodes by default: 8K x 8K = 67 MP,
#: i.e. 201 MB as 8-bit RGB. Anything larger is refused as a possible decompression bomb.
DEFAULT_MAX_PIXELS = 8192 * 8192

#: File name extensions :func:`list_images` picks up (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".tga"}
)


_PIL_LIMIT_LOCK = threading.Lock()


class ImageLoadError(ValueError):
    """An image could not be read; the message names the file and the reason."""


class ImageNotice(UserWarning):
    """Something was changed on the way in (first frame of an animation, downscaling)."""


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{os.fspath(source)}'"
    if isinstance(source, Image.Image):
        return "<in-memory image>"
    name = getattr(source, "name", None)
    return f"'{name}'" if isinstance(name, str) else "<uploaded bytes>"


def _open(source: ImageSource, what: str) -> Image.Image:
    """``Image.open`` with every failure mode turned into an :class:`ImageLoadError`."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(f"{what}: no such file")
        if path.is_dir():
            raise ImageLoadError(f"{what}: is a directory, not an image file")
        if path.stat().st_size == 0:
            raise ImageLoadError(f"{what}: the file is empty (0 bytes)")
        fp: str | IO[bytes] = str(path)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageLoadError(f"{what}: the data is empty (0 bytes)")
        fp = io.BytesIO(bytes(source))
    else:
        fp = source
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except Image.DecompressionBombError:
        raise  # load_image re-reads the header without Pillow's limit and reports with its own limit
    except UnidentifiedImageError as exc:
        raise ImageLoadError(f"{what}: not an image file, or a format Pillow cannot read") from exc
    except Exception as exc:  # noqa: BLE001 - crafted files make Pillow raise struct.error, IndexError, ...
        raise ImageLoadError(f"{what}: cannot read the image header ({type(exc).__name__}: {exc})") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB (alpha composited on white, 16-bit rescaled)."""
    mode = img.mode
    if mode == "RGB":
        return img
    icc = img.info.get("icc_profile")
    if icc and mode in ("CMYK", "RGB", "L"):
        try:  # colour-managed conversion (e.g. Photoshop CMYK JPEGs)
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
        except Exception:  # noqa: BLE001 - a broken profile falls back to Pillow's plain conversion
            pass
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if mode == "F":
            arr = arr.astype(np.float64)
            scale = 255.0 if np.nanmax(arr) <= 1.0 else 1.0  # [0, 1] floats or 8-bit range
            arr = np.nan_to_num(arr * scale)
        elif mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr.astype(np.float64) / 257.0  # 16-bit -> 8-bit: 65535 -> 255
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(
    source: ImageSource,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
    min_side: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """Read an image as 8-bit RGB, safely (see the module docstring for every case handled).

    Args:
        source: a path, raw bytes, a binary file object, or a :class:`PIL.Image.Image` (then only the
            mode conversion, EXIF orientation and size checks apply).
        max_pixels: refuse images whose header declares more than this many pixels (width x height),
            before decoding. ``None`` disables the check (and Pillow's own bomb check).
        max_side: if given, downscale (Lanczos) so that the longer side is at most this many pixels,
            with an :class:`ImageNotice`.
        min_side: if given, raise when the shorter side (after downscaling) is below this many pixels.
        name: how to call the image in messages (default: the path, or ``<uploaded bytes>``).

    Returns:
        A loaded ``PIL.Image.Image`` in mode ``"RGB"``; ``info["notices"]`` lists what was changed.

    Raises:
        ImageLoadError: missing, empty, truncated, corrupt or non-image file; decompression bomb;
            image smaller than ``min_side``; bad arguments.
    """
    what = name or _describe(source)
    if max_side is not None and max_side < 1:
        raise ImageLoadError(f"{what}: max_side must be a positive number of pixels, got {max_side}")
    if isinstance(source, Image.Image):
        img = source
    else:
        pil_limit = Image.MAX_IMAGE_PIXELS
        if max_pixels is None or (pil_limit is not None and max_pixels > 2 * pil_limit):
            img = _open_without_pillow_limit(source, what)
        else:
            try:
                img = _open(source, what)
            except Image.DecompressionBombError:
                # Over Pillow's own open-time limit (2 x MAX_IMAGE_PIXELS): read the header again without it
                # so that the refusal below states the size and *our* limit (one consistent message).
                img = _open_without_pillow_limit(source, what)
    # Close what we opened (animations keep their file open for seeking) unless the caller gave it to us.
    opened = img if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)) else None
    try:
        result = _load_opened(img, source, what, max_pixels, max_side, min_side)
    except BaseException:
        if opened is not None:
            opened.close()
        raise
    if opened is not None and result is not opened:
        opened.close()
    return result


def _open_without_pillow_limit(source: ImageSource, what: str) -> Image.Image:
    """:func:`_open` with Pillow's open-time bomb check off (our header check in load_image replaces it)."""
    with _PIL_LIMIT_LOCK:
        old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return _open(source, what)
        finally:
            Image.MAX_IMAGE_PIXELS = old


def bomb_message(what: str, width: int, height: int, max_pixels: int) -> str:
    """The one message for an image refused as a possible decompression bomb (CLI, app and library)."""
    return (
        f"{what}: the image declares {width}x{height} = {width * height / 1e6:.1f} megapixels, more than the "
        f"limit of {max_pixels / 1e6:.1f} MP; refused as a possible decompression bomb (nothing was decoded). "
        "Downscale it first, or raise the limit if you trust it (stylize.py / app.py: --max-pixels N; "
        "wct.io.load_image: max_pixels=N)."
    )


def _load_opened(img: Image.Image, source: ImageSource, what: str, max_pixels: int | None,
                 max_side: int | None, min_side: int | None) -> Image.Image:
    """The part of :func:`load_image` after the header was read (``img`` is closed by the caller)."""
    notices: list[str] = []
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageLoadError(f"{what}: the image has no pixels ({w}x{h})")
    if max_pixels is not None and w * h > max_pixels:
        raise ImageLoadError(bomb_message(what, w, h, max_pixels))
    n_frames = getattr(img, "n_frames", 1)
    if getattr(img, "is_animated", False) or n_frames > 1:
        img.seek(0)
        notices.append(f"{what} has {n_frames} frames (animation); using the first frame only")
    if max_side is not None and max(w, h) > max_side and img.format == "JPEG" and not isinstance(
        source, Image.Image
    ):
        # Decode at 1/2, 1/4 or 1/8 scale directly from the DCT (never holds the full image).
        img.draft("RGB", (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h))))
    try:
        img.load()
        img = ImageOps.exif_transpose(img) or img
        img = _to_rgb(img)
    except Image.DecompressionBombError as exc:
        limit = max_pixels if max_pixels is not None else w * h - 1  # only Pillow's check can get here
        raise ImageLoadError(bomb_message(what, w, h, limit)) from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure on a user's file is reported, not raised
        hint = " (the file is truncated or corrupt)" if not isinstance(exc, MemoryError) else ""
        raise ImageLoadError(f"{what}: cannot decode the image{hint}: {exc}") from exc
    drafted = sorted(img.size) != sorted((w, h))  # JPEG draft already reduced it
    if max_side is not None and (max(img.size) > max_side or drafted):
        img = resize_max_side(img, max_side)
        notices.append(f"{what} was downscaled from {w}x{h} to {img.width}x{img.height} (max side {max_side})")
    if min_side is not None and min(img.size) < min_side:
        raise ImageLoadError(
            f"{what}: the image is {img.width}x{img.height} pixels; the shorter side must be at least "
            f"{min_side} px. Use a larger image (small images are not upscaled automatically)."
        )
    for note in notices:
        warnings.warn(note, ImageNotice, stacklevel=2)
    img.info["notices"] = notices
    return img


def resize_max_side(img: Image.Image, max_side: int) -> Image.Image:
    """Downscale (never upscale) so that ``max(img.size) <= max_side``, keeping the aspect ratio."""
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS,
                      reducing_gap=3.0)


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Resize (up or down, Lanczos) so that the shorter side is ``size`` pixels; ``size=0`` keeps it."""
    if size is None or size <= 0:
        return img
    w, h = img.size
    s = size / min(w, h)
    new = (max(1, round(w * s)), max(1, round(h * s)))
    if new == (w, h):
        return img
    return img.resize(new, Image.Resampling.LANCZOS)


def center_crop(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Crop the central ``size`` (int: square) region; the image must be at least that large."""
    tw, th = (size, size) if isinstance(size, int) else size
    w, h = img.size
    if tw > w or th > h:
        raise ValueError(f"cannot crop {tw}x{th} from a {w}x{h} image")
    left, top = (w - tw) // 2, (h - th) // 2
    return img.crop((left, top, left + tw, top + th))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB ``PIL.Image`` -> float32 tensor ``(1, 3, H, W)`` in ``[0, 1]`` (other modes converted first)."""
    if img.mode != "RGB":
        img = _to_rgb(img)
    arr = np.array(img, dtype=np.uint8)  # a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """Tensor ``(3, H, W)`` or ``(1, 3, H, W)`` in ``[0, 1]`` (clamped, rounded) -> RGB ``PIL.Image``.

    Raises:
        ValueError: on any other shape.
    """
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected an image tensor (3, H, W) or (1, 3, H, W), got {tuple(t.shape)}")
    u8 = t.detach().to(torch.float32).clamp(0, 1).mul_(255.0).round_().to(torch.uint8)
    return Image.fromarray(u8.permute(1, 2, 0).contiguous().cpu().numpy(), mode="RGB")


def list_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files in ``folder`` (by extension, case-insensitive), sorted; hidden files are skipped.

    A path to a single file is returned as ``[path]``.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
    """
    root = Path(folder)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such file or folder: '{root}'")
    it: Iterable[Path] = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        p for p in it
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _umask() -> int:
    """The process umask, read without changing it where possible (``/proc``), else set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _PIL_LIMIT_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def save_image(img: Image.Image, path: str | os.PathLike, *, quality: int = 95) -> Path:
    """Write ``img`` atomically (temporary file, then ``os.replace``); format from the extension.

    JPEG is written with ``quality`` and 4:4:4 chroma; alpha is dropped for formats without it.
    Creates missing parent folders; the file gets the usual permissions (``0666 & ~umask``, e.g. 0644).
    Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image extension '{path.suffix}' for '{path}'")
    kwargs: dict = {}
    if fmt == "JPEG":
        img = img.convert("RGB")
        kwargs = {"quality": quality, "subsampling": 0}
    elif fmt == "WEBP":
        kwargs = {"quality": quality}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp creates 0600; give the output the usual 0666 & ~umask
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            img.save(f, format=fmt, **kwargs)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# Pillow must not silently accept truncated files behind our back.
if ImageFile.LOAD_TRUNCATED_IMAGES:  # pragma: no cover - only if some import flipped it
    warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated files will load padded",
                  ImageNotice, stacklevel=1)
