"""Tests of the batch CLI stylize.py (run in-process through ``stylize.main``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stylize
from models import Generator, GeneratorConfig, save_checkpoint
from models.inference import Engine

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread (see tests/conftest.py)


def _img(size, seed) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, size[1] // 4), max(1, size[0] // 4), 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "content" / "sub").mkdir(parents=True)
    for i in range(4):
        _img((48, 40), i).save(d / "content" / f"c{i}.png")
    _img((40, 48), 9).save(d / "content" / "sub" / "tall.jpg", quality=95)
    (d / "content" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    _img((32, 32), 20).save(d / "s1.png")
    _img((36, 30), 21).save(d / "s2.png")
    torch.manual_seed(0)
    g = Generator(GeneratorConfig(width=8, n_res=1, groups=4))
    with torch.no_grad():
        bank = g.encode_style(torch.rand(2, 3, 32, 32) * 2 - 1)
    save_checkpoint(d / "ckpt" / "tiny.safetensors", {"generator": g}, {"generator": g.config},
                    {"style_bank": bank, "style_bank_names": ["Tiny #1", "Tiny #2"]})
    return d


def _names(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_folder_with_a_broken_file(data, tmp_path, capsys):
    out = tmp_path / "out"
    rc = stylize.main(["--content", str(data / "content"), "--style", str(data / "s1.png"),
                       "--output", str(out), "--model", "color", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert _names(out) == ["c0_stylized_s1.png", "c1_stylized_s1.png", "c2_stylized_s1.png",
                           "c3_stylized_s1.png", "sub/tall_stylized_s1.jpg"]
    assert "1 failure(s)" in err and "broken.png" in err
    # sizes and aspect ratio kept by default, output differs from the content
    out_img = Image.open(out / "sub" / "tall_stylized_s1.jpg")
    assert out_img.size == (40, 48)
    c0 = np.asarray(Image.open(data / "content" / "c0.png"), float)
    assert np.abs(np.asarray(Image.open(out / "c0_stylized_s1.png"), float) - c0).mean() > 5


def test_all_good_exit_zero_and_every_style(data, tmp_path):
    out = tmp_path / "o"
    rc = stylize.main(["--content", str(data / "content" / "c0.png"), str(data / "content" / "c1.png"),
                       "--style", str(data / "s1.png"), str(data / "s2.png"), "--output", str(out),
                       "--model", "color", "--ext", "jpg", "--quiet"])
    assert rc == 0
    assert _names(out) == ["c0_stylized_s1.jpg", "c0_stylized_s2.jpg", "c1_stylized_s1.jpg", "c1_stylized_s2.jpg"]


def test_batching_really_batches_and_matches(data, tmp_path, monkeypatch):
    calls: list[int] = []
    orig = Engine.stylize_batch

    def spy(self, contents, *a, **k):
        calls.append(len(contents))
        return orig(self, contents, *a, **k)

    monkeypatch.setattr(Engine, "stylize_batch", spy)
    common = ["--content", str(data / "content"), "--style", str(data / "s1.png"), "--model",
              str(data / "ckpt" / "tiny.safetensors"), "--quiet"]
    assert stylize.main(common + ["--output", str(tmp_path / "b1"), "--batch-size", "1"]) == 1
    assert calls == [1] * 5
    calls.clear()
    assert stylize.main(common + ["--output", str(tmp_path / "b3"), "--batch-size", "3"]) == 1
    assert sorted(calls) == [1, 1, 3]  # 4 same-size images -> 3 + 1, the tall one alone
    for name in _names(tmp_path / "b1"):
        a = np.asarray(Image.open(tmp_path / "b1" / name), int)
        b = np.asarray(Image.open(tmp_path / "b3" / name), int)
        assert np.abs(a - b).max() <= 2, name


def test_style_bank_interpolation_mask_tile(data, tmp_path):
    ck = str(data / "ckpt" / "tiny.safetensors")
    c0 = str(data / "content" / "c0.png")
    out = tmp_path / "bank"
    assert stylize.main(["--content", c0, "--output", str(out), "--model", ck, "--quiet"]) == 0
    assert _names(out) == ["c0_stylized_Tiny-1.png", "c0_stylized_Tiny-2.png"]
    out = tmp_path / "idx"
    assert stylize.main(["--content", c0, "--output", str(out), "--model", ck, "--style-index", "1",
                         "--quiet"]) == 0
    assert _names(out) == ["c0_stylized_Tiny-2.png"]
    out = tmp_path / "mix"
    assert stylize.main(["--content", c0, "--style", str(data / "s1.png"), str(data / "s2.png"),
                         "--style-weights", "0.3", "0.7", "--output", str(out), "--model", ck, "--quiet"]) == 0
    assert _names(out) == ["c0_stylized_s1+s2.png"]
    Image.new("L", (48, 40), 0).save(tmp_path / "black.png")
    out = tmp_path / "mask"
    assert stylize.main(["--content", c0, "--style", str(data / "s1.png"), "--mask", str(tmp_path / "black.png"),
                         "--output", str(out), "--model", ck, "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "c0_stylized_s1.png")), np.asarray(Image.open(c0)))
    out = tmp_path / "tile"
    assert stylize.main(["--content", c0, "--style", str(data / "s1.png"), "--tile", "32", "--tile-overlap",
                         "8", "--output", str(out), "--model", ck, "--quiet"]) == 0
    assert Image.open(out / "c0_stylized_s1.png").size == (48, 40)


def test_sizes_crop_skip_existing(data, tmp_path, capsys):
    c = str(data / "content" / "sub" / "tall.jpg")
    args = ["--content", c, "--style", str(data / "s1.png"), "--model", "color", "--quiet"]
    assert stylize.main(args + ["--output", str(tmp_path / "a"), "--content-size", "20", "--ext", "png"]) == 0
    assert Image.open(tmp_path / "a" / "tall_stylized_s1.png").size == (20, 24)
    assert stylize.main(args + ["--output", str(tmp_path / "b"), "--content-size", "20", "--crop",
                                "--ext", "png"]) == 0
    assert Image.open(tmp_path / "b" / "tall_stylized_s1.png").size == (20, 20)
    target = tmp_path / "b" / "tall_stylized_s1.png"
    Image.new("RGB", (5, 5)).save(target)
    assert stylize.main(args + ["--output", str(tmp_path / "b"), "--ext", "png", "--skip-existing"]) == 0
    assert Image.open(target).size == (5, 5)
    assert "skipped 1 of 1 content file(s)" in capsys.readouterr().err
    # too small for the network: a failure with a clear message, not a crash
    assert stylize.main(["--content", c, "--style", str(data / "s1.png"), "--model",
                         str(data / "ckpt" / "tiny.safetensors"), "--content-size", "8",
                         "--output", str(tmp_path / "c"), "--quiet"]) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "nope"], "unknown engine 'nope'"),
        (["--model", "color", "--style-weights", "1", "2"], "2 values for 1 styles"),
        (["--model", "color", "--crop"], "--crop needs --content-size"),
        (["--model", "color", "--alpha", "2"], "--alpha must be in [0, 1]"),
        (["--model", "color", "--tile", "30"], "multiple of 4"),
        (["--model", "color", "--tile", "128", "--tile-overlap", "64"], "--tile-overlap must be in [0, tile/2)"),
        (["--model", "color", "--tile-overlap", "-1"], "--tile-overlap must be in"),
        (["--model", "color", "--max-pixels", "-5"], "--max-pixels must be >= 0"),
    ],
)
def test_usage_errors_exit_2(data, tmp_path, capsys, extra, message):
    rc = stylize.main(["--content", str(data / "content" / "c0.png"), "--style", str(data / "s1.png"),
                       "--output", str(tmp_path / "x"), "--quiet"] + extra)
    assert rc == 2 and message in capsys.readouterr().err


def test_small_tile_gets_a_fitting_default_overlap(data, tmp_path):
    # --tile 128 with the old fixed 64 px default overlap failed on every image
    ck = str(data / "ckpt" / "tiny.safetensors")
    _img((200, 140), 40).save(tmp_path / "wide.png")
    out = tmp_path / "o"
    assert stylize.main(["--content", str(tmp_path / "wide.png"), "--style", str(data / "s1.png"), "--tile",
                         "128", "--output", str(out), "--model", ck, "--quiet"]) == 0
    assert Image.open(out / "wide_stylized_s1.png").size == (200, 140)


def test_clashing_output_names_are_made_unique(data, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    _img((48, 40), 1).save(d / "chelsea.jpg")
    _img((48, 40), 2).save(d / "chelsea.png")
    _img((48, 40), 3).save(d / "cat.png")
    (tmp_path / "s").mkdir()
    _img((32, 32), 4).save(tmp_path / "s" / "a.png")
    _img((32, 32), 5).save(tmp_path / "s" / "a.jpg")
    out = tmp_path / "out"
    rc = stylize.main(["--content", str(d), str(d / "cat.png"), "--style", str(tmp_path / "s"), "--output",
                       str(out), "--model", "color", "--ext", "png", "--quiet"])
    assert rc == 0
    assert _names(out) == sorted(f"{c}_stylized_{s}.png" for c in ["cat", "cat-2", "chelsea.jpg", "chelsea.png"]
                                 for s in ["a.jpg", "a.png"])
    assert "share an output name" in capsys.readouterr().err
    # without --ext the extensions differ (jpg / png): the plain names are kept
    out = tmp_path / "out2"
    assert stylize.main(["--content", str(d), "--style", str(tmp_path / "s" / "a.png"), "--output", str(out),
                         "--model", "color", "--quiet"]) == 0
    assert _names(out) == ["cat_stylized_a.png", "chelsea_stylized_a.jpg", "chelsea_stylized_a.png"]


def test_output_folder_inside_content_folder_is_not_restylised(data, tmp_path, capsys):
    d = tmp_path / "p"
    d.mkdir()
    _img((48, 40), 1).save(d / "c.jpg")
    args = ["--content", str(d), "--style", str(data / "s1.png"), "--model", "color", "--quiet"]
    for _ in range(2):
        assert stylize.main(args + ["--output", str(d / "out")]) == 0
    assert _names(d) == ["c.jpg", "out/c_stylized_s1.jpg"]
    assert "skipped" in capsys.readouterr().err
    for _ in range(2):  # output folder = content folder: earlier outputs are skipped
        assert stylize.main(args + ["--output", str(d)]) == 0
    assert _names(d) == ["c.jpg", "c_stylized_s1.jpg", "out/c_stylized_s1.jpg"]
    # a content folder inside the output folder is searched as usual
    assert stylize.main(["--content", str(d / "out"), "--style", str(data / "s1.png"), "--model", "color",
                         "--quiet", "--output", str(d)]) == 0
    assert "c_stylized_s1_stylized_s1.jpg" in _names(d)


def test_max_pixels_option_and_messages(data, tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    _img((48, 40), 1).save(d / "c.png")
    (d / "empty.jpg").write_bytes(b"")
    rc = stylize.main(["--content", str(d), "--style", str(data / "s1.png"), "--output", str(tmp_path / "o"),
                       "--model", "color", "--max-pixels", "1500", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "2 failure(s)" in err  # the style (32x32) is under the limit, the 48x40 content not
    assert "48x40" in err and "limit of 0.0 MP" in err and "--max-pixels" in err
    assert f"{d / 'empty.jpg'}: the file is empty" in err and f"'{d / 'empty.jpg'}'" not in err  # path once
    rc = stylize.main(["--content", str(d / "c.png"), "--style", str(data / "s1.png"), "--output",
                       str(tmp_path / "o"), "--model", "color", "--max-pixels", "0", "--quiet"])
    assert rc == 0
    from wct.io import DEFAULT_MAX_PIXELS

    assert stylize._DEFAULT_MAX_PIXELS == DEFAULT_MAX_PIXELS


def test_help_states_each_default_once(capsys):
    with pytest.raises(SystemExit):
        stylize.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in out and "(default: False)" not in out
    assert not re.search(r"\(default[^)]*\) \(default", out)  # e.g. --alpha states its own default
    assert "(default: 512)" in out and "--max-pixels" in out


def test_color_without_style_and_missing_files(data, tmp_path, capsys):
    assert stylize.main(["--content", str(data / "content" / "c0.png"), "--output", str(tmp_path / "x"),
                         "--model", "color", "--quiet"]) == 2
    assert "needs --style" in capsys.readouterr().err
    rc = stylize.main(["--content", str(data / "content" / "c0.png"), str(tmp_path / "missing.png"),
                       "--style", str(data / "s1.png"), "--output", str(tmp_path / "y"), "--model", "color",
                       "--quiet"])
    assert rc == 1 and "missing.png" in capsys.readouterr().err
    assert _names(tmp_path / "y") == ["c0_stylized_s1.png"]


def test_script_entry_point(data, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "stylize.py"), "--content", str(data / "content" / "c0.png"),
                        "--style", str(data / "s1.png"), "--output", str(tmp_path / "z"), "--model", "color",
                        "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "z" / "c0_stylized_s1.png").is_file() and "1 image(s) written" in r.stderr


def test_animated_and_large_inputs_give_notes(data, tmp_path, capsys):
    frames = [_img((64, 48), 30 + i) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    rc = stylize.main(["--content", str(tmp_path / "anim.gif"), "--style", str(data / "s1.png"), "--model",
                       "color", "--max-size", "32", "--output", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 0 and "first frame" in err and "downscaled from 64x48 to 32x24" in err
    assert Image.open(tmp_path / "o" / "anim_stylized_s1.png").size == (32, 24)  # gif -> png by default


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h RGB pixels but holds almost no data (a decompression-bomb stand-in)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


def test_every_awkward_image_kind_is_converted_or_reported(data, tmp_path, capsys):
    # one folder with each kind of input a user may have; the network engine (min side 16 px) runs on all
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    base = _img((40, 32), 40)
    base.convert("CMYK").save(zoo / "cmyk.jpg", quality=95)
    Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257).save(zoo / "grey16.png")
    assert Image.open(zoo / "grey16.png").mode.startswith("I")
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(zoo / "palette.png", transparency=0)
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(zoo / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 48x32, displayed rotated 90 degrees: 32x48
    _img((48, 32), 41).save(zoo / "rotated.jpg", exif=exif, quality=95)
    good = zoo.parent / "good.png"
    _img((64, 64), 42).save(good)
    (zoo / "truncated.png").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    _img((8, 8), 43).save(zoo / "tiny.png")
    (zoo / "bomb.png").write_bytes(_png_header_only(20000, 20000))
    rc = stylize.main(["--content", str(zoo), "--style", str(data / "s1.png"), "--model",
                       str(data / "ckpt" / "tiny.safetensors"), "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    assert "3 failure(s)" in err
    assert _names(tmp_path / "out") == ["cmyk_stylized_s1.jpg", "grey16_stylized_s1.png",
                                        "palette_stylized_s1.png", "rgba_stylized_s1.png",
                                        "rotated_stylized_s1.jpg"]
    sizes = {p.name: Image.open(p).size for p in (tmp_path / "out").iterdir()}
    assert sizes.pop("rotated_stylized_s1.jpg") == (32, 48)  # EXIF orientation applied, size kept
    assert set(sizes.values()) == {(40, 32)}
    lines = {ln.strip().split(":")[0].rsplit("/", 1)[-1]: ln for ln in err.splitlines() if str(zoo) in ln}
    assert "truncated or corrupt" in lines["truncated.png"]
    assert "smaller than the engine's minimum of 16 px" in lines["tiny.png"]
    assert "decompression bomb" in lines["bomb.png"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when CUDA is missing")
def test_device_cuda_without_gpu_is_a_usage_error(data, tmp_path, capsys):
    rc = stylize.main(["--content", str(data / "content" / "c0.png"), "--style", str(data / "s1.png"),
                       "--output", str(tmp_path / "x"), "--model", "color", "--device", "cuda", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "no CUDA GPU is available" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_large_contents_are_tiled_automatically(data, tmp_path, monkeypatch, capsys):
    seen: list[tuple[tuple[int, int], int | None]] = []
    orig = Engine.stylize_batch

    def spy(self, contents, *a, **k):
        seen.append((contents[0].size, k.get("tile")))
        return orig(self, contents, *a, **k)

    monkeypatch.setattr(Engine, "stylize_batch", spy)
    monkeypatch.setattr(stylize, "AUTO_TILE_ABOVE", 44)  # 48x40 and 40x48 are "large", 32x32 is not
    monkeypatch.setattr(stylize, "AUTO_TILE", 32)
    _img((32, 32), 50).save(tmp_path / "small.png")
    ck = str(data / "ckpt" / "tiny.safetensors")
    args = ["--content", str(data / "content" / "c0.png"), str(tmp_path / "small.png"), "--style",
            str(data / "s1.png"), "--tile-overlap", "8", "--model", ck, "--quiet"]
    assert stylize.main(args + ["--output", str(tmp_path / "a")]) == 0
    assert sorted(seen) == [((32, 32), None), ((48, 40), 32)]
    assert "tiles with global statistics" in capsys.readouterr().err
    assert Image.open(tmp_path / "a" / "c0_stylized_s1.png").size == (48, 40)
    seen.clear()
    assert stylize.main(args + ["--output", str(tmp_path / "b"), "--tile", "40"]) == 0  # explicit size wins
    assert sorted(seen) == [((32, 32), 40), ((48, 40), 40)]
    seen.clear()
    assert stylize.main(args[:-3] + ["--model", "color", "--quiet", "--output", str(tmp_path / "c")]) == 0
    assert sorted(seen) == [((32, 32), None), ((48, 40), None)]  # the pixel-wise colour engine never tiles


def test_model_auto_prefers_the_shipped_default(data, tmp_path, capsys):
    from models.inference import DEFAULT_MODEL

    c0 = str(data / "content" / "c0.png")
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()

    def engine_line(name: str) -> str:
        assert stylize.main(["--content", c0, "--output", str(tmp_path / name), "--checkpoint-dir", str(ckpts),
                             "--style", str(data / "s1.png")]) == 0
        return next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("engine:"))

    assert engine_line("none").startswith("engine: color")  # no checkpoint: colour transfer
    for stem in ("aaa", DEFAULT_MODEL):  # "aaa" sorts first; the default still wins once it is there
        for suffix in (".safetensors", ".json"):
            (ckpts / f"{stem}{suffix}").write_bytes((data / "ckpt" / f"tiny{suffix}").read_bytes())
        expected = "aaa" if stem == "aaa" else DEFAULT_MODEL
        assert engine_line(stem).startswith(f"engine: {expected} "), stem
