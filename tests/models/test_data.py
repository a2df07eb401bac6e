"""Tests of models.data: unpaired folders, preprocessing, broken files, resumable sampling."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from models.data import (
    BadFileReporter,
    ImageList,
    ResumableDistributedSampler,
    UnpairedImageFolders,
    collate_unpaired,
    eval_transform,
    train_transform,
)


def _img(path, size=(48, 40), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _png16_rgb(path, arr):
    """Write a 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = arr.shape

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def folders(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    for i in range(3):
        _img(a / f"a{i}.png", seed=i)
    for i in range(5):
        _img(b / "sub" / f"b{i}.jpg", size=(60, 36), seed=10 + i)  # recursive, non-square
    (b / "notes.txt").write_text("not an image")
    return a, b


def test_items_shapes_ranges_and_recursion(folders):
    a, b = folders
    ds = UnpairedImageFolders(a, b, load_size=36, crop_size=32, seed=1)
    assert len(ds) == 5 and len(ds.files_a) == 3 and len(ds.files_b) == 5  # notes.txt ignored
    item = ds[(0, 4)]
    for k in ("a", "b"):
        assert item[k].shape == (3, 32, 32) and item[k].dtype == torch.float32
        assert item[k].min() >= -1 and item[k].max() <= 1
    assert item["path_a"].endswith("a1.png")  # A in order: 4 mod 3 = 1
    assert item["skipped"] == []
    batch = collate_unpaired([ds[(0, i)] for i in range(2)])
    assert batch["a"].shape == (2, 3, 32, 32) and len(batch["path_b"]) == 2


def test_stream_is_a_function_of_seed_epoch_index(folders):
    a, b = folders
    ds1 = UnpairedImageFolders(a, b, load_size=40, crop_size=32, seed=3)
    ds2 = UnpairedImageFolders(a, b, load_size=40, crop_size=32, seed=3)
    x, y = ds1[(2, 1)], ds2[(2, 1)]
    assert torch.equal(x["a"], y["a"]) and torch.equal(x["b"], y["b"]) and x["path_b"] == y["path_b"]
    # other epochs / seeds give other crops or B images
    others = [ds1[(e, 1)] for e in range(3, 9)]
    assert any(not torch.equal(o["a"], x["a"]) or o["path_b"] != x["path_b"] for o in others)


def test_train_and_test_transform_sizes():
    img = Image.new("RGB", (90, 30), (10, 200, 30))
    t = train_transform(img, np.random.default_rng(0), load_size=40, crop_size=32)
    assert t.shape == (3, 32, 32)
    assert torch.allclose(t[:, 0, 0], torch.tensor([10, 200, 30]) / 127.5 - 1, atol=2e-2)
    assert eval_transform(img, load_size=32, crop_size=32).shape == (3, 32, 32)


def test_modes_and_broken_files_warn_exactly_once(tmp_path):
    a = tmp_path / "A"
    _img(a / "rgb.png")
    _img(a / "la.png", mode="LA")
    _img(a / "l.png", mode="L")
    _img(a / "p.png", mode="P")
    _img(a / "rgba.png", mode="RGBA")
    grey16 = np.random.default_rng(0).integers(0, 65535, (40, 48), dtype=np.uint16)
    Image.fromarray(grey16).save(a / "i16.png")  # I;16 greyscale
    _png16_rgb(a / "rgb16.png", np.random.default_rng(1).integers(0, 65535, (40, 48, 3), dtype=np.uint16))
    Image.open(a / "rgb.png").convert("CMYK").save(a / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    Image.open(a / "rgb.png").save(a / "exif.jpg", exif=exif)
    good = _img(tmp_path / "x.jpg")
    data = good.read_bytes()
    (a / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (a / "empty.png").write_bytes(b"")
    (a / "text.txt").write_text("hello")
    b = tmp_path / "B"
    _img(b / "p0.png")
    ds = UnpairedImageFolders(a, b, load_size=32, crop_size=32, seed=0)
    assert len(ds.files_a) == 11  # the two broken files are listed (by extension), the .txt is not
    img, path, _ = ds._a.load([p.name for p in ds.files_a].index("exif.jpg"))
    assert img.size == (40, 48) and img.mode == "RGB"  # EXIF orientation applied (48x40 stored)
    img, _, _ = ds._a.load([p.name for p in ds.files_a].index("cmyk.jpg"))
    assert img.mode == "RGB"
    rep = BadFileReporter()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for epoch in range(2):
            for i in range(len(ds)):
                item = ds[(epoch, i)]
                assert item["a"].shape == (3, 32, 32) and torch.isfinite(item["a"]).all()
                rep.update(item["skipped"])
    msgs = [str(w.message) for w in rec if "unreadable" in str(w.message)]
    assert sorted(m.split(":")[0].rsplit("/", 1)[-1] for m in msgs) == ["empty.png", "truncated.jpg"]
    assert set(rep.seen) == {str(a / "empty.png"), str(a / "truncated.jpg")}


def test_all_unreadable_raises(tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    (a / "x.png").write_bytes(b"")
    _img(b / "ok.png")
    ds = UnpairedImageFolders(a, b, load_size=32, crop_size=32)
    with pytest.raises(RuntimeError, match="unreadable"):
        ds[0]


def test_bad_arguments(tmp_path, folders):
    a, b = folders
    with pytest.raises(FileNotFoundError, match="domain A"):
        UnpairedImageFolders(tmp_path / "missing", b)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        UnpairedImageFolders(tmp_path / "empty", b)
    with pytest.raises(ValueError, match="load_size"):
        UnpairedImageFolders(a, b, load_size=20, crop_size=32)
    with pytest.raises(ValueError, match="crop_size"):
        UnpairedImageFolders(a, b, load_size=20, crop_size=8)
    with pytest.raises(IndexError):
        UnpairedImageFolders(a, b, load_size=32, crop_size=32)[99]


def test_exclude_holds_files_out(folders):
    a, b = folders
    held = sorted(a.iterdir())[0]
    ds = UnpairedImageFolders(a, b, load_size=32, crop_size=32, exclude=[held])
    assert held not in ds.files_a and len(ds.files_a) == 2


def test_sampler_resumes_mid_epoch_and_shards(folders):
    a, b = folders
    ds = UnpairedImageFolders(a, b, load_size=32, crop_size=32)
    s = ResumableDistributedSampler(ds, shuffle=True, seed=5)
    s.set_epoch(3)
    full = list(s)
    assert sorted(i for _, i in full) == list(range(len(ds))) and {e for e, _ in full} == {3}
    s.set_position(3, 2)
    assert len(s) == len(ds) - 2 and list(s) == full[2:]
    assert len(s) == len(ds)  # later iterations start at 0 again
    s0 = ResumableDistributedSampler(ds, num_replicas=2, rank=0, seed=5)
    s1 = ResumableDistributedSampler(ds, num_replicas=2, rank=1, seed=5)
    s0.set_epoch(0), s1.set_epoch(0)
    idx0, idx1 = [i for _, i in s0], [i for _, i in s1]
    assert len(idx0) == len(idx1) == 3 and set(idx0) | set(idx1) == set(range(len(ds)))
    with pytest.raises(ValueError):
        s.set_position(0, 99)


def test_sampler_in_order_without_shuffle(folders):
    a, b = folders
    ds = UnpairedImageFolders(a, b, load_size=32, crop_size=32)
    s = ResumableDistributedSampler(ds, shuffle=False)
    s.set_epoch(0)
    paths = [ds[k]["path_a"] for k in s]
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["a0.png", "a1.png", "a2.png", "a0.png", "a1.png"]


def test_image_list_drops_unreadable(tmp_path):
    good = _img(tmp_path / "g.png", size=(50, 40))
    bad = tmp_path / "b.png"
    bad.write_bytes(b"")
    with pytest.warns(UserWarning, match="b.png"):
        il = ImageList([good, bad], load_size=32, crop_size=32)
    assert len(il) == 1 and il.stack().shape == (1, 3, 32, 32)
    assert list(il.skipped) == [str(bad)]
