"""Shipped demo checkpoints (checkpoints/*.safetensors, issue 9): load, stylise a bundled photo, sanity checks.

Every shipped checkpoint must load through ``models.inference.load_engine``, carry a style bank, be at most
25 MB, and turn scikit-image's ``coffee`` photo into an image of the same size with finite values that
differs measurably from the photo and from plain colour transfer with the same exemplar, and that keeps the
photo's layout (luminance correlation with the photo > 0.3: an inverted or scrambled picture fails). Skips
(with the reason) when no checkpoint is shipped yet. ``SVD_WCT_TEST_CHECKPOINTS=DIR`` runs the same checks
on another folder, e.g. fresh exports before they are shipped (benchmarks/demo_release.sh).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
#: the shipped checkpoints; $SVD_WCT_TEST_CHECKPOINTS points the test at another folder (e.g. a fresh export)
CKPT_DIR = Path(os.environ.get("SVD_WCT_TEST_CHECKPOINTS") or ROOT / "checkpoints")
SHIPPED = sorted(p for p in CKPT_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file())
MAX_BYTES = 25 * 1024 * 1024
#: mean absolute difference (pixel values in [0, 1]) below which two images count as "the same picture"
MIN_DIFF = 0.02

pytestmark = pytest.mark.skipif(not SHIPPED, reason=f"no shipped checkpoint (*.safetensors + .json) in {CKPT_DIR}")


def _coffee(size: tuple[int, int] = (144, 96)) -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.coffee()).resize(size, Image.BICUBIC)


def _exemplar(size: tuple[int, int] = (96, 96)) -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.astronaut()).resize(size, Image.BICUBIC)


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0


def test_shipped_list_matches_engines():
    from models.inference import available_engines

    names = available_engines(CKPT_DIR)
    assert names[0] == "color"
    assert [p.stem for p in SHIPPED] == [n for n in names if n != "color"]


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_checkpoint_files(path: Path):
    assert path.stat().st_size <= MAX_BYTES, f"{path.name} is {path.stat().st_size / 2**20:.1f} MB > 25 MB"
    meta = json.loads(path.with_suffix(".json").read_text())
    text = json.dumps(meta)
    assert "style_bank_names" in text and "trained_steps" in text


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_checkpoint_stylizes_coffee(path: Path):
    from models.inference import load_engine
    from wct.io import pil_to_tensor

    torch.set_num_threads(min(2, torch.get_num_threads()))
    eng = load_engine(path.stem, checkpoint_dir=CKPT_DIR)
    assert eng.kind == "network" and eng.style_names, "a shipped checkpoint needs a style bank"
    content, style = _coffee(), _exemplar()

    # raw network output on the style bank entry: finite, same size as the content
    gen = eng.generator
    x = pil_to_tensor(content).to(eng.device) * 2 - 1
    with torch.no_grad():
        y = gen.decode(gen.encode_content(x), eng.style_bank[:1].to(eng.device))
    y = y[..., : x.shape[-2], : x.shape[-1]]
    assert torch.isfinite(y).all()

    out_bank = eng.stylize(content)  # style bank entry 0
    out_ex = eng.stylize(content, style)  # an exemplar image
    ct = load_engine("color").stylize(content, style)
    for out in (out_bank, out_ex):
        assert out.size == content.size and out.mode == "RGB"
    c, b, e, t = _arr(content), _arr(out_bank), _arr(out_ex), _arr(ct)
    assert np.abs(b - c).mean() > MIN_DIFF, "bank stylisation is (almost) the input photo"
    assert np.abs(e - c).mean() > MIN_DIFF, "exemplar stylisation is (almost) the input photo"
    assert np.abs(e - t).mean() > MIN_DIFF, "network output is (almost) plain colour transfer"
    # the picture is kept: the output correlates with the photo's luminance
    lum = lambda a: a @ np.array([0.299, 0.587, 0.114])  # noqa: E731
    assert np.corrcoef(lum(e).ravel(), lum(c).ravel())[0, 1] > 0.3
