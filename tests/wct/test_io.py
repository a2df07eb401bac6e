"""Tests of wct.io: every input case of issue 6 with a file the test makes."""

from __future__ import annotations

import struct
import time
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from wct.io import (
    ImageLoadError,
    ImageNotice,
    center_crop,
    list_images,
    load_image,
    pil_to_tensor,
    resize_shorter_side,
    save_image,
    tensor_to_pil,
)


def _png(width: int, height: int, bit_depth: int, color_type: int, raw_rows: bytes | None) -> bytes:
    """A PNG written by hand (lets the tests declare any header and 16-bit RGB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    if raw_rows is not None:
        out += chunk(b"IDAT", zlib.compress(raw_rows))
    return out + chunk(b"IEND", b"")


def _load_quiet(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageNotice)
        return load_image(path, **kw)


# ----------------------------------------------------------------------------------------- modes -> RGB
def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))  # red block at top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rot.png"
    img.save(path, exif=exif)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (20, 40)
    assert out.getpixel((19, 0)) == (255, 0, 0)  # top-left moved to top-right after a CW rotation
    assert out.getpixel((0, 0)) == (0, 0, 255)


def test_greyscale_and_bilevel(tmp_path):
    Image.new("L", (9, 7), 77).save(tmp_path / "l.png")
    Image.new("1", (9, 7), 1).save(tmp_path / "b.png")
    assert load_image(tmp_path / "l.png").getpixel((3, 3)) == (77, 77, 77)
    assert load_image(tmp_path / "b.png").getpixel((3, 3)) == (255, 255, 255)


def test_alpha_modes_composite_on_white(tmp_path):
    la = Image.new("LA", (8, 8), (0, 0))
    la.putpixel((1, 1), (10, 255))
    la.save(tmp_path / "la.png")
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 128))  # half-transparent red on white -> pink
    rgba.save(tmp_path / "rgba.png")
    out = load_image(tmp_path / "la.png")
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((1, 1)) == (10, 10, 10)
    r, g, b = load_image(tmp_path / "rgba.png").getpixel((0, 0))
    assert r == 255 and 125 <= g <= 129 and g == b


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (8, 8), 0)
    p.putpalette([0, 0, 0] + [0, 200, 0] + [0] * (254 * 3))
    p.putpixel((2, 2), 1)
    p.info["transparency"] = 0  # index 0 (black) is transparent
    p.save(tmp_path / "p.png", transparency=0)
    p.save(tmp_path / "p.gif", transparency=0)
    for name in ("p.png", "p.gif"):
        out = load_image(tmp_path / name)
        assert out.getpixel((0, 0)) == (255, 255, 255), name  # transparent -> white, not black
        assert out.getpixel((2, 2)) == (0, 200, 0), name


def test_cmyk(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)  # red
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.tif")
    for name in ("c.jpg", "c.tif"):
        r, g, b = load_image(tmp_path / name).getpixel((4, 4))
        assert r > 240 and g < 15 and b < 15, (name, r, g, b)


def test_16bit_grey_is_rescaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16).repeat(4, 0)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    src = Image.open(tmp_path / "g16.png")
    assert src.mode.startswith("I")  # Pillow opens it as I;16 (or I)
    out = load_image(tmp_path / "g16.png")
    assert [out.getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255]


def test_16bit_rgb_png(tmp_path):
    # 2x1 pixels, 16 bits per channel: (65535, 0, 257*50) and (257*200, 65535, 0)
    row = b"\x00" + struct.pack(">6H", 65535, 0, 257 * 50, 257 * 200, 65535, 0)
    (tmp_path / "rgb16.png").write_bytes(_png(2, 1, 16, 2, row))
    out = load_image(tmp_path / "rgb16.png")
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 0, 50) and out.getpixel((1, 0)) == (200, 255, 0)


def test_float_tiff(tmp_path):
    Image.fromarray(np.full((4, 4), 0.5, np.float32), mode="F").save(tmp_path / "f.tif")
    assert load_image(tmp_path / "f.tif").getpixel((0, 0)) == (128, 128, 128)


# ----------------------------------------------------------------------------------------- animations
@pytest.mark.parametrize("ext", ["gif", "webp"])
def test_animation_uses_first_frame_with_notice(tmp_path, ext):
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    path = tmp_path / f"anim.{ext}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    with pytest.warns(ImageNotice, match="first frame"):
        out = load_image(path)
    r, g, b = out.getpixel((8, 8))
    assert r > 240 and g < 15 and b < 15
    assert any("3 frames" in n for n in out.info["notices"])


@pytest.mark.parametrize("kind", ["anim", "bomb", "corrupt"])
def test_no_file_is_left_open(tmp_path, kind):
    # An animation keeps its file open for seeking: load_image must close it (no ResourceWarning leak)
    import gc

    path = tmp_path / "f.gif"
    if kind == "anim":
        frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
        with Image.open(path) as im:
            assert im.n_frames == 3
    elif kind == "bomb":
        path.write_bytes(_png(20000, 20000, 8, 2, None))
    else:
        path.write_bytes(_png(16, 16, 8, 2, b"\x00" * 7))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            load_image(path)
        except ImageLoadError:
            pass
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# ----------------------------------------------------------------------------------------- bombs
def test_decompression_bomb_refused_before_decoding(tmp_path):
    # Header declares 20000 x 20000 RGB (1.2 GB decoded); the data is not even there.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(20000, 20000, 8, 2, b"\x00" * 64))
    t0 = time.perf_counter()
    with pytest.raises(ImageLoadError, match="decompression bomb") as info:
        load_image(path)
    assert time.perf_counter() - t0 < 2.0
    assert "bomb.png" in str(info.value) and "nothing was decoded" in str(info.value)


def test_max_pixels_limit_below_pillows_own(tmp_path):
    Image.new("RGB", (100, 100)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="100x100"):
        load_image(tmp_path / "big.png", max_pixels=5000)
    assert load_image(tmp_path / "big.png", max_pixels=None).size == (100, 100)


def test_max_pixels_above_pillows_own_limit_is_honoured(tmp_path, monkeypatch):
    # Pillow refuses at open time anything over 2 x MAX_IMAGE_PIXELS; a caller's larger limit wins
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (100, 100), (9, 8, 7)).save(tmp_path / "big.png")
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(tmp_path / "big.png", max_pixels=1500)  # below Pillow's 2000 too: Pillow's check is kept
    img = load_image(tmp_path / "big.png", max_pixels=20000)
    assert img.size == (100, 100) and img.getpixel((5, 5)) == (9, 8, 7)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
    with pytest.raises(ImageLoadError, match="100x100"):
        load_image(tmp_path / "big.png", max_pixels=5000)


@pytest.mark.parametrize("source", ["path", "bytes", "fileobj"])
def test_bomb_over_pillows_limit_gets_our_message_and_limit(tmp_path, source):
    # 100000 x 100000 exceeds Pillow's own open-time limit: the message must still be ours, with our limit
    import io

    from wct.io import DEFAULT_MAX_PIXELS

    data = _png(100000, 100000, 8, 2, None)
    (tmp_path / "huge.png").write_bytes(data)
    src = {"path": tmp_path / "huge.png", "bytes": data, "fileobj": io.BytesIO(data)}[source]
    with pytest.raises(ImageLoadError) as info:
        load_image(src)
    msg = str(info.value)
    assert "100000x100000" in msg and f"{DEFAULT_MAX_PIXELS / 1e6:.1f} MP" in msg
    assert "--max-pixels" in msg and "178956970" not in msg and "exceeds limit" not in msg
    with pytest.raises(ImageLoadError, match=r"limit of 0\.0 MP"):
        load_image(_png(300, 300, 8, 2, None), max_pixels=1)


# ----------------------------------------------------------------------------------------- broken files
def _jpeg_bytes(size=(64, 48)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, format="JPEG")
    return buf.getvalue()


def test_truncated_files(tmp_path):
    data = _jpeg_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    import io

    buf = io.BytesIO()
    Image.effect_noise((64, 48), 60).convert("RGB").save(buf, format="PNG")
    (tmp_path / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    for name in ("trunc.jpg", "trunc.png"):
        with pytest.raises(ImageLoadError, match=name) as info:
            load_image(tmp_path / name)
        assert "truncated" in str(info.value) or "corrupt" in str(info.value)
        assert isinstance(info.value, ValueError)


def test_unusual_decoder_exceptions_become_clear_errors(tmp_path, monkeypatch):
    # crafted files make Pillow raise struct.error, IndexError, ... (not only OSError): still an ImageLoadError
    import struct as _struct

    from PIL import ImageFile

    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")

    def bad_load(self):
        raise IndexError("list index out of range")

    monkeypatch.setattr(ImageFile.ImageFile, "load", bad_load)
    with pytest.raises(ImageLoadError, match="ok.png.*cannot decode the image.*list index"):
        load_image(tmp_path / "ok.png")
    monkeypatch.undo()

    def bad_open(fp, *a, **k):
        raise _struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(Image, "open", bad_open)
    with pytest.raises(ImageLoadError, match="cannot read the image header.*error: unpack"):
        load_image(tmp_path / "ok.png")


def test_corrupt_zero_byte_non_image_missing_dir(tmp_path):
    data = bytearray(_png(4, 4, 8, 2, b"\x00" * 52))
    data[40:48] = b"garbage!"  # break the IDAT
    (tmp_path / "corrupt.png").write_bytes(bytes(data))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not an image\n")
    cases = {
        "corrupt.png": "corrupt|cannot",
        "empty.jpg": "empty",
        "notes.jpg": "not an image",
        "missing.png": "no such file",
    }
    for name, pattern in cases.items():
        with pytest.raises(ImageLoadError, match=pattern) as info:
            load_image(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageLoadError, match="not an image"):
        load_image(b"hello world", name="upload.png")


def test_bytes_and_file_objects(tmp_path):
    data = _jpeg_bytes()
    assert load_image(data).size == (64, 48)
    (tmp_path / "x.jpg").write_bytes(data)
    with open(tmp_path / "x.jpg", "rb") as f:
        assert load_image(f).size == (64, 48)


# ----------------------------------------------------------------------------------------- sizes
def test_too_small_is_a_clear_error(tmp_path):
    Image.new("RGB", (40, 8)).save(tmp_path / "tiny.png")
    with pytest.raises(ImageLoadError, match=r"40x8 pixels.*at least 16 px"):
        load_image(tmp_path / "tiny.png", min_side=16)
    assert load_image(tmp_path / "tiny.png", min_side=8).size == (40, 8)


def test_large_image_downscaled_with_notice(tmp_path):
    Image.new("RGB", (300, 200), (10, 20, 30)).save(tmp_path / "large.png")
    with pytest.warns(ImageNotice, match="downscaled from 300x200 to 150x100"):
        out = load_image(tmp_path / "large.png", max_side=150)
    assert out.size == (150, 100) and out.getpixel((5, 5)) == (10, 20, 30)
    # A JPEG is decoded at reduced scale (draft) and then resized exactly.
    (tmp_path / "large.jpg").write_bytes(_jpeg_bytes((1000, 800)))
    with pytest.warns(ImageNotice, match="downscaled from 1000x800 to 100x80"):
        assert load_image(tmp_path / "large.jpg", max_side=100).size == (100, 80)
    # No notice when it already fits.
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageNotice)
        assert load_image(tmp_path / "large.png", max_side=300).size == (300, 200)


def test_pil_input_is_normalised():
    out = _load_quiet(Image.new("RGBA", (20, 30), (0, 0, 0, 0)), max_side=10)
    assert out.mode == "RGB" and out.size == (7, 10) and out.getpixel((3, 3)) == (255, 255, 255)


# ----------------------------------------------------------------------------------------- helpers
def test_tensor_round_trip():
    img = Image.effect_noise((13, 7), 80).convert("RGB")
    t = pil_to_tensor(img)
    assert t.shape == (1, 3, 7, 13) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert np.array_equal(np.asarray(tensor_to_pil(t)), np.asarray(img))
    assert tensor_to_pil(torch.full((3, 2, 2), 2.0)).getpixel((0, 0)) == (255, 255, 255)  # clamped
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        tensor_to_pil(torch.zeros(2, 3, 4, 4))


def test_list_images(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ["b.JPG", "a.png", "sub/c.webp", "notes.txt", ".hidden/d.png", "._e.jpg"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == ["a.png", "b.JPG", "sub/c.webp"]
    assert [p.name for p in list_images(tmp_path, recursive=False)] == ["a.png", "b.JPG"]
    assert list_images(tmp_path / "a.png") == [tmp_path / "a.png"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")


def test_resize_crop_save(tmp_path):
    img = Image.new("RGB", (300, 200))
    assert resize_shorter_side(img, 100).size == (150, 100)
    assert resize_shorter_side(img, 0) is img
    assert center_crop(img, 100).size == (100, 100)
    with pytest.raises(ValueError):
        center_crop(img, 400)
    out = save_image(img, tmp_path / "deep" / "o.jpg")
    assert Image.open(out).size == (300, 200)
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["o.jpg"]  # no temporary file left
    with pytest.raises(ValueError, match="extension"):
        save_image(img, tmp_path / "o.xyz")


def test_saved_files_get_umask_permissions(tmp_path):
    # mkstemp creates 0600 files; outputs must be 0666 & ~umask like any other program's
    import os

    old = os.umask(0o022)
    try:
        out = save_image(Image.new("RGB", (4, 4)), tmp_path / "o.png")
        assert os.stat(out).st_mode & 0o777 == 0o644
        os.umask(0o027)
        out = save_image(Image.new("RGB", (4, 4)), tmp_path / "p.png")
        assert os.stat(out).st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
