"""Tests of the Gradio app (app.py), driven through its HTTP API with gradio_client.

One demo is launched per module on a free port with tiny injected engines (``build_demo(engines)``), so
the tests exercise the real server, queue, upload and image decoding path without any weights.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

CONCURRENCY = 2
pytestmark = pytest.mark.filterwarnings("ignore:::gradio.queueing")  # pandas deprecations inside gradio


class InvertEngine:
    """Tiny engine: inverts the content (alpha-blended), records the style it was given."""

    name = "invert"
    style_bank_names = ["Fake #1", "Fake #2"]
    min_side = 16  # like the network engines: smaller uploads are refused with a message

    def __init__(self):
        self.calls: list[dict] = []

    def stylize(self, content, style, *, alpha=1.0, preserve_color=False, style_index=0):
        self.calls.append({"size": content.size, "style": None if style is None else style.size,
                           "style_index": style_index, "alpha": alpha, "preserve_color": preserve_color})
        return Image.blend(content, ImageOps.invert(content), alpha)


class SlowEngine:
    """Sleeps, and records how many calls were running at the same time."""

    name = "slow"

    def __init__(self, seconds=0.6):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.done = 0

    def stylize(self, content, style, *, alpha=1.0, preserve_color=False, style_index=0):
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            time.sleep(self.seconds)
            return ImageOps.invert(content)
        finally:
            with self.lock:
                self.running -= 1
                self.done += 1


class NoBankEngine:
    name = "nobank"

    def stylize(self, content, style, *, alpha=1.0, preserve_color=False, style_index=0):
        return ImageOps.mirror(content)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    arr = np.clip(arr + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h RGB pixels but holds no pixel data (a decompression-bomb stand-in)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("app_images")
    paths = {}
    _photo(64, 48, 0).save(paths.setdefault("content", d / "content.png"))
    _photo(40, 40, 1).save(paths.setdefault("style", d / "style.png"))
    _photo(200, 100, 2).save(paths.setdefault("wide", d / "wide.png"))
    # Fully transparent RGBA: wct.io composites it on white.
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(paths.setdefault("transparent", d / "transparent.png"))
    good = d / "full.png"
    _photo(128, 128, 3).save(good)
    data = good.read_bytes()
    (paths.setdefault("truncated", d / "truncated.png")).write_bytes(data[: len(data) // 2])
    (paths.setdefault("notimage", d / "notimage.png")).write_bytes(b"this is not an image" * 10)
    (paths.setdefault("bomb", d / "bomb.png")).write_bytes(_png_header_only(20000, 20000))
    return paths


@pytest.fixture(scope="module")
def engines():
    return {"invert": InvertEngine(), "slow": SlowEngine(), "nobank": NoBankEngine()}


@pytest.fixture(scope="module")
def served(engines, tmp_path_factory):
    examples = app.make_examples(tmp_path_factory.mktemp("examples"))
    demo = app.build_demo(engines, notes=["a test note"], concurrency_limit=CONCURRENCY, examples=examples)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                ssr_mode=False, show_error=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False,
                        download_files=str(tmp_path_factory.mktemp("downloads")))
        yield demo, client
    finally:
        demo.close()


def _call(client, content, style, model="invert", alpha=1.0, preserve=False, max_res=1024, bank=""):
    return client.predict(handle_file(str(content)), None if style is None else handle_file(str(style)),
                          model, alpha, preserve, max_res, bank, api_name="/stylize")


def test_stylize_endpoint_returns_png_of_content_size_and_changed(served, images):
    _, client = served
    out = _call(client, images["content"], images["style"])
    assert Path(out).suffix == ".png"
    result = Image.open(out).convert("RGB")
    content = Image.open(images["content"]).convert("RGB")
    assert result.size == content.size == (64, 48)
    diff = np.abs(np.asarray(result, np.int16) - np.asarray(content, np.int16)).mean()
    assert diff > 20, diff
    # The engine's inversion arrives losslessly (format="png").
    np.testing.assert_array_equal(np.asarray(result), np.asarray(ImageOps.invert(content)))


def test_api_lists_named_stylize_endpoint(served):
    _, client = served
    info = client.view_api(print_info=False, return_format="dict")
    assert "/stylize" in info["named_endpoints"]
    params = [p["parameter_name"] for p in info["named_endpoints"]["/stylize"]["parameters"]]
    assert params == ["content", "style", "model", "alpha", "preserve_color", "max_resolution", "style_bank"]


def test_options_are_passed_to_the_engine(served, engines, images):
    _, client = served
    engine = engines["invert"]
    engine.calls.clear()
    out = _call(client, images["content"], images["style"], alpha=0.25, preserve=True)
    call = engine.calls[-1]
    assert call["alpha"] == pytest.approx(0.25) and call["preserve_color"] is True
    assert call["style"] == (40, 40) and call["size"] == (64, 48)
    assert Image.open(out).size == (64, 48)


def test_max_resolution_downscales_keeping_aspect(served, images):
    _, client = served
    out = _call(client, images["wide"], images["style"], max_res=64)
    assert Image.open(out).size == (64, 32)


def test_style_bank_used_without_style_image(served, engines, images):
    _, client = served
    engine = engines["invert"]
    _call(client, images["content"], None)  # no style image, default: first bank entry
    assert engine.calls[-1]["style"] is None and engine.calls[-1]["style_index"] == 0
    _call(client, images["content"], images["style"], bank="Fake #2")  # bank entry wins over upload
    assert engine.calls[-1]["style"] is None and engine.calls[-1]["style_index"] == 1


def test_transparent_upload_is_composited_on_white(served, engines, images):
    _, client = served
    out = _call(client, images["transparent"], images["style"])
    # white content, inverted by the engine -> black
    assert np.asarray(Image.open(out).convert("RGB")).max() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"content": "truncated"}, "truncated or corrupt"),
        ({"content": "notimage"}, "not an image"),
        ({"content": "bomb"}, "decompression bomb"),
        ({"style": "notimage"}, "style image"),
        ({"model": "nobank", "style": None}, "no style bank"),
        ({"model": "nope"}, "Unknown model"),
        ({"alpha": 1.5}, "alpha"),
        ({"max_res": 10}, "Max resolution"),
        ({"bank": "Monet #9"}, "not in the style bank"),
    ],
)
def test_bad_input_gives_clear_error(served, images, kwargs, message):
    _, client = served
    content = images[kwargs.pop("content", "content")]
    style = kwargs.pop("style", "style")
    style = None if style is None else images[style]
    with pytest.raises(AppError, match=message):
        _call(client, content, style, **kwargs)


@pytest.fixture(scope="module")
def awkward(tmp_path_factory) -> dict[str, Path]:
    """Uploads of every image kind a user may have, made here (all 40x32 once decoded, except 'rotated')."""
    d = tmp_path_factory.mktemp("awkward")
    base = _photo(40, 32, 5)
    base.convert("CMYK").save(d / "cmyk.jpg", quality=95)
    Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257).save(d / "grey16.png")
    base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(d / "palette.png", transparency=0)
    frames = [_photo(40, 32, 6 + i) for i in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 48x32, displayed rotated by 90 degrees: 32x48
    _photo(48, 32, 9).save(d / "rotated.jpg", exif=exif, quality=95)
    _photo(8, 8, 10).save(d / "tiny.png")
    return {p.stem: p for p in d.iterdir()}


@pytest.mark.parametrize("kind", ["cmyk", "grey16", "palette", "anim", "rotated"])
def test_awkward_uploads_are_converted(served, engines, images, awkward, kind):
    _, client = served
    assert Image.open(awkward[kind]).mode != "RGB" or kind in ("rotated", "anim")
    out = _call(client, awkward[kind], awkward[kind] if kind != "rotated" else images["style"])
    expected = (32, 48) if kind == "rotated" else (40, 32)
    assert Image.open(out).size == expected and engines["invert"].calls[-1]["size"] == expected


def test_tiny_upload_gives_clear_error(served, images, awkward):
    _, client = served
    with pytest.raises(AppError, match="at least 16 px"):
        _call(client, awkward["tiny"], images["style"])
    with pytest.raises(AppError, match="The style image.*at least 16 px"):
        _call(client, images["content"], awkward["tiny"])


def test_missing_content_gives_clear_error(served, images):
    _, client = served
    with pytest.raises(AppError, match="content image"):
        client.predict(None, handle_file(str(images["style"])), "invert", 1.0, False, 1024, "",
                       api_name="/stylize")


def test_concurrent_calls_complete_within_the_limit(served, engines, images):
    _, client = served
    slow = engines["slow"]
    slow.max_running = slow.done = 0
    jobs = [client.submit(handle_file(str(images["content"])), handle_file(str(images["style"])), "slow",
                          1.0, False, 1024, "", api_name="/stylize") for _ in range(5)]
    outs = [job.result(timeout=60) for job in jobs]
    assert slow.done == 5
    assert all(Image.open(o).size == (64, 48) for o in outs)
    # never more than the limit at once, and the limit is actually used (calls overlap)
    assert slow.max_running == CONCURRENCY


def test_build_demo_validates_arguments():
    with pytest.raises(ValueError, match="at least one engine"):
        app.build_demo({})
    with pytest.raises(ValueError, match="concurrency_limit"):
        app.build_demo({"invert": InvertEngine()}, concurrency_limit=0, examples=False)
    with pytest.raises(ValueError, match="max_resolution"):
        app.build_demo({"invert": InvertEngine()}, max_resolution=10, examples=False)


def test_example_rows_give_every_model_examples(tmp_path):
    contents = [tmp_path / f"c{i}.jpg" for i in range(4)]
    styles = [tmp_path / f"s{i}.jpg" for i in range(3)]
    rows = app.example_rows(contents, styles, ["color", "monet", "plain"],
                            {"color": [], "monet": ["Monet #1", "Monet #2"], "plain": []})
    # the first model: every content, styles cycled
    assert rows[:4] == [[str(c), str(styles[i % 3]), "color"] for i, c in enumerate(contents)]
    # a model with a style bank: two rows, no style image (the app then uses the bank's first painting)
    assert rows[4:6] == [[str(contents[0]), None, "monet"], [str(contents[1]), None, "monet"]]
    # a model without a bank: two rows with example styles
    assert rows[6:] == [[str(contents[0]), str(styles[0]), "plain"], [str(contents[1]), str(styles[1]), "plain"]]
    # no style images: only models with a bank get rows
    assert app.example_rows(contents, [], ["color", "monet"], {"monet": ["m"]}) == [
        [str(contents[0]), None, "monet"], [str(contents[1]), None, "monet"]]
    assert app.example_rows([], styles, ["color"], {}) == []


def test_make_examples_writes_small_images_once(tmp_path):
    contents, styles = app.make_examples(tmp_path)
    assert len(contents) >= 3 and len(styles) >= 3
    for p in [*contents, *styles]:
        img = Image.open(p)
        assert max(img.size) <= 512 and p.stat().st_size < 150_000
    mtimes = [p.stat().st_mtime_ns for p in contents]
    assert app.make_examples(tmp_path)[0] == contents
    assert [p.stat().st_mtime_ns for p in contents] == mtimes


# ---------------------------------------------------------------------------------------------------
# With the real engines of models.inference
# ---------------------------------------------------------------------------------------------------
def test_load_engines_without_checkpoints_offers_colour_transfer(tmp_path):
    engines, notes = app.load_engines(tmp_path)
    assert list(engines) == ["color"]
    assert any("only **colour transfer**" in n for n in notes)


def test_broken_checkpoint_is_reported_and_colour_still_works(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "broken.json").write_text("{}")
    engines, notes = app.load_engines(tmp_path)
    assert "color" in engines and "broken" not in engines
    assert any("broken" in n and "could not be loaded" in n for n in notes)
    content, style = _photo(48, 32, 0), _photo(32, 32, 1)
    out = engines["color"].stylize(content, style, alpha=1.0)
    assert out.size == content.size


def _tiny_checkpoint(folder: Path) -> Path:
    """A tiny random SVD-WCT generator checkpoint with a 2-entry style bank (models.inference)."""
    from models import Generator, GeneratorConfig, save_checkpoint
    from models.inference import add_style_bank

    cfg = GeneratorConfig(width=4, n_res=1, groups=2, style_n_down=2, gdwct_mlp_dim=8, image_size=32)
    path = folder / "tiny.safetensors"
    save_checkpoint(path, {"generator": Generator(cfg)}, cfg)
    add_style_bank(path, [_photo(40, 40, 5), _photo(40, 40, 6)], n=2, size=32)
    return path


def test_real_engines_through_the_api(tmp_path, images):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    _tiny_checkpoint(ckpts)
    engines, notes = app.load_engines(ckpts)
    assert list(engines) == ["color", "tiny"] and notes == []
    assert app._style_bank_names(engines["tiny"]) == ["Tiny #1", "Tiny #2"]
    demo = app.build_demo(engines, notes=notes, examples=False)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, analytics_enabled=False,
                        download_files=str(tmp_path))
        out_color = _call(client, images["content"], images["style"], model="color")
        out_bank = _call(client, images["content"], None, model="tiny")  # style bank, no style image
        out_bank2 = _call(client, images["content"], None, model="tiny", bank="Tiny #2")
        out_zero = _call(client, images["content"], None, model="tiny", alpha=0.0)
        out_half = _call(client, images["content"], None, model="tiny", alpha=0.5)
        out_upload = _call(client, images["wide"], images["style"], model="tiny", alpha=0.5,
                           bank=app.UPLOADED)
        with pytest.raises(AppError, match="Upload a style image"):
            _call(client, images["content"], None, model="color")
    finally:
        demo.close()
    content = np.asarray(Image.open(images["content"]).convert("RGB"), np.float64)
    style = np.asarray(Image.open(images["style"]).convert("RGB"), np.float64)
    result = np.asarray(Image.open(out_color).convert("RGB"), np.float64)
    assert result.shape == content.shape
    assert np.abs(result - content).mean() > 1.0
    # colour transfer moves the per-channel means towards the style's
    assert (np.abs(result.mean((0, 1)) - style.mean((0, 1))).sum()
            < np.abs(content.mean((0, 1)) - style.mean((0, 1))).sum())
    bank1, bank2 = (np.asarray(Image.open(o).convert("RGB"), np.float64) for o in (out_bank, out_bank2))
    assert bank1.shape == bank2.shape == content.shape
    assert np.abs(bank1 - content).mean() > 1.0
    assert np.abs(bank1 - bank2).max() > 0  # another bank entry, another result
    # strength 1 = the network as trained (its learned WCT blends, alpha=None), not an override to 1.0
    direct = engines["tiny"].stylize(Image.open(images["content"]).convert("RGB"), None, style_index=0)
    assert np.abs(bank1 - np.asarray(direct, np.float64)).max() <= 1
    overridden = engines["tiny"].stylize(Image.open(images["content"]).convert("RGB"), None, alpha=1.0)
    assert np.abs(np.asarray(overridden, np.float64) - np.asarray(direct, np.float64)).max() > 1
    # lower strengths blend the network's output with the content: 0 = the content unchanged
    zero, half = (np.asarray(Image.open(o).convert("RGB"), np.float64) for o in (out_zero, out_half))
    assert np.abs(zero - content).max() == 0
    assert np.abs(half - (0.5 * bank1 + 0.5 * content)).max() <= 1
    assert Image.open(out_upload).size == (200, 100)


def test_main_defaults_to_localhost_7860_without_share(monkeypatch, tmp_path):
    seen = {}

    def fake_launch(self, **kwargs):
        seen.update(kwargs)

    monkeypatch.setattr(app.gr.Blocks, "launch", fake_launch)
    app.main(["--checkpoint-dir", str(tmp_path), "--no-examples"])
    assert seen["server_name"] == "127.0.0.1" and seen["server_port"] == 7860 and seen["share"] is False
    app.main(["--checkpoint-dir", str(tmp_path), "--no-examples", "--host", "0.0.0.0", "--port", "8123",
              "--share"])
    assert seen["server_name"] == "0.0.0.0" and seen["server_port"] == 8123 and seen["share"] is True
    with pytest.raises(SystemExit):
        app.main(["--checkpoint-dir", str(tmp_path), "--concurrency", "0"])


def test_main_port_in_use_is_a_clear_error(tmp_path, capsys):
    # gradio's raw OSError (advising GRADIO_SERVER_PORT) becomes one line naming the port, exit status 2
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        rc = app.main(["--checkpoint-dir", str(tmp_path), "--no-examples", "--port", str(port)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"127.0.0.1:{port}" in err and "--port N" in err and "GRADIO_SERVER_PORT" not in err


def test_main_max_pixels_reaches_the_app(monkeypatch, tmp_path):
    seen = {}
    real = app.build_demo

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(app, "build_demo", spy)
    monkeypatch.setattr(app.gr.Blocks, "launch", lambda self, **kw: None)
    assert app.main(["--checkpoint-dir", str(tmp_path), "--no-examples", "--max-pixels", "1234"]) == 0
    assert seen["max_pixels"] == 1234
    assert app.main(["--checkpoint-dir", str(tmp_path), "--no-examples", "--max-pixels", "0"]) == 0
    assert seen["max_pixels"] is None
    with pytest.raises(SystemExit):
        app.main(["--checkpoint-dir", str(tmp_path), "--max-pixels", "-1"])


def test_model_status_from_the_model_card_is_shown():
    """A checkpoint's extra["status"] (e.g. an early preview) is shown next to the model name."""

    class _Engine:
        name, kind, style_names = "preview", "network", ["Preview #1"]
        status = "early CPU preview: weaker than colour transfer"

    text = app._engines_markdown({"preview": _Engine()}, [])
    assert "early CPU preview: weaker than colour transfer" in text and "`preview`" in text
    _Engine.status = ""
    assert "preview:" not in app._engines_markdown({"preview": _Engine()}, []).lower()


def test_default_model_opens_first_and_falls_back_to_colour(monkeypatch, tmp_path):
    seen: dict = {}

    def spy(engines, **kwargs):
        seen["names"] = list(engines)
        return real(engines, **kwargs)

    real = app.build_demo
    monkeypatch.setattr(app, "build_demo", spy)
    monkeypatch.setattr(app.gr.Blocks, "launch", lambda self, **kw: None)
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    _tiny_checkpoint(ckpts)
    # the shipped default (vangogh) is not in this folder: colour transfer opens, no error
    assert app.main(["--checkpoint-dir", str(ckpts), "--no-examples"]) == 0
    assert seen["names"] == ["color", "tiny"]
    assert app.main(["--checkpoint-dir", str(ckpts), "--no-examples", "--default-model", "tiny"]) == 0
    assert seen["names"] == ["tiny", "color"]
    with pytest.raises(SystemExit):  # a default the user names must exist
        app.main(["--checkpoint-dir", str(ckpts), "--no-examples", "--default-model", "nope"])
    # with the shipped default present it opens first; order_engines keeps the rest in order
    (ckpts / "tiny.safetensors").rename(ckpts / f"{app.DEFAULT_MODEL}.safetensors")
    (ckpts / "tiny.json").rename(ckpts / f"{app.DEFAULT_MODEL}.json")
    assert app.main(["--checkpoint-dir", str(ckpts), "--no-examples"]) == 0
    assert seen["names"] == [app.DEFAULT_MODEL, "color"]
    assert list(app.order_engines({"a": 1, "b": 2, "c": 3}, "c")) == ["c", "a", "b"]
    assert list(app.order_engines({"a": 1, "b": 2}, None)) == ["a", "b"]


def test_strength_of_network_and_colour_engines():
    content = Image.new("RGB", (4, 2), (0, 100, 200))
    out = Image.new("RGB", (4, 2), (200, 100, 0))
    out.info["notices"] = ["n"]

    class Net:
        kind = "network"

        def stylize(self, content, style, *, alpha, **kwargs):
            self.alpha = alpha
            return out

    class Colour(Net):
        kind = "color"

    net, colour = Net(), Colour()
    mixed = app.stylize_at_strength(net, content, None, 0.25)
    assert net.alpha is None  # the network's learned blends
    assert mixed.getpixel((0, 0)) == (50, 100, 150) and mixed.info["notices"] == ["n"]
    assert app.stylize_at_strength(net, content, None, 1.0) is out
    assert app.stylize_at_strength(colour, content, None, 0.25) is out  # its alpha is the strength
    assert colour.alpha == 0.25
