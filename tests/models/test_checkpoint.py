"""Tests of models.checkpoint: bit-exact round trips, optimiser/RNG state, fp16 storage, refusing pickles."""

from __future__ import annotations

import json
import os
import pickle
import random
import stat

import numpy as np
import pytest
import torch

from models import (
    CheckpointError,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    MultiScaleDiscriminator,
    load_checkpoint,
    save_checkpoint,
)

CFG = GeneratorConfig(width=8, n_res=1, groups=4)


def _assert_same(a, b, path="root"):
    if isinstance(a, dict):  # OrderedDict state dicts come back as plain dicts (same order)
        assert isinstance(b, dict), path
    else:
        assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{path}.{i}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b), path
    else:
        assert a == b, path


def test_training_state_round_trip_is_bit_exact(tmp_path):
    g = Generator(CFG)
    d = MultiScaleDiscriminator(DiscriminatorConfig(width=4, n_scales=1, n_layers=2))
    opt = torch.optim.Adam(list(g.parameters()), lr=1e-4, betas=(0.5, 0.999), weight_decay=1e-4)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    g(x, x).mean().backward()
    opt.step()
    extra = {
        "step": 123,
        "domains": ["photo", "monet"],
        "optimizer_g": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "style_bank": torch.randn(3, 32, 2, 2),
        "style_bank_names": ["a.jpg", "b.jpg", "c.jpg"],
        "odd": {"__tensor__": "not a tag", 7: (1.5, None, True)},
    }
    st, js = save_checkpoint(tmp_path / "run" / "last.safetensors", {"gen_a": g, "dis_a": d.state_dict()},
                             {"generator": CFG, "lr": 1e-4}, extra)
    assert st.name == "last.safetensors" and js.name == "last.json"
    assert sorted(p.name for p in st.parent.iterdir()) == ["last.json", "last.safetensors"]  # no temp files
    ck = load_checkpoint(tmp_path / "run" / "last")
    _assert_same(ck["nets"]["gen_a"], g.state_dict())
    _assert_same(ck["nets"]["dis_a"], d.state_dict())
    _assert_same(ck["extra"], extra)
    assert ck["step"] == 123 and ck["domains"] == ["photo", "monet"] and ck["backward"] == "taylor"
    assert ck["config"]["generator"] == CFG.to_dict() and ck["format_version"] == 1
    meta = json.loads(js.read_text())
    assert meta["step"] == 123 and meta["config"]["generator"]["groups"] == 4

    # the loaded state restores an optimiser and the RNGs exactly
    opt2 = torch.optim.Adam(list(Generator(CFG).parameters()), lr=1.0)
    opt2.load_state_dict(ck["extra"]["optimizer_g"])
    _assert_same(opt2.state_dict(), opt.state_dict())
    torch.set_rng_state(ck["extra"]["rng"]["torch"])
    np.random.set_state(ck["extra"]["rng"]["numpy"])
    random.setstate(ck["extra"]["rng"]["python"])
    torch.set_rng_state(extra["rng"]["torch"])
    a = torch.rand(3)
    torch.set_rng_state(ck["extra"]["rng"]["torch"])
    assert torch.equal(a, torch.rand(3))


def test_from_pretrained_reproduces_the_generator(tmp_path):
    g = Generator(CFG).eval()
    x = torch.rand(1, 3, 20, 24) * 2 - 1
    save_checkpoint(tmp_path / "gen.safetensors", {"generator": g}, CFG)
    g2 = Generator.from_pretrained(tmp_path / "gen.safetensors")
    assert not g2.training and g2.config == CFG
    with torch.no_grad():
        assert torch.equal(g(x, x), g2(x, x))
    # training checkpoints: nested config, several nets, pick one by name
    save_checkpoint(tmp_path / "train", {"gen_a": g, "gen_b": Generator(CFG)}, {"generator": CFG.to_dict()})
    with pytest.raises(ValueError, match="cannot pick"):
        Generator.from_pretrained(tmp_path / "train")
    g3 = Generator.from_pretrained(tmp_path / "train.json", name="gen_a")
    with torch.no_grad():
        assert torch.equal(g(x, x), g3(x, x))
    # a composed photo -> Monet translator round-trips like any generator
    gb = Generator(CFG).eval()
    tr = Generator.compose(g, gb).eval()
    with torch.no_grad():
        ref = gb.decode(g.encode_content(x), gb.encode_style(x), size=x.shape[-2:])
        assert torch.equal(tr(x, x), ref)
    save_checkpoint(tmp_path / "tr", {"generator": tr}, tr.config)
    with torch.no_grad():
        assert torch.equal(Generator.from_pretrained(tmp_path / "tr")(x, x), ref)
    save_checkpoint(tmp_path / "bad", {"generator": g}, GeneratorConfig(width=8, n_res=2, groups=4))
    with pytest.raises(ValueError, match="do not fit"):
        Generator.from_pretrained(tmp_path / "bad")


def test_fp16_storage_loads_back_as_float32(tmp_path):
    g = Generator(CFG)
    bank = torch.randn(2, 32, 2, 2)
    st16, _ = save_checkpoint(tmp_path / "half", {"generator": g}, CFG, {"style_bank": bank},
                              dtype=torch.float16)
    st32, _ = save_checkpoint(tmp_path / "full", {"generator": g}, CFG, {"style_bank": bank})
    assert st16.stat().st_size < 0.6 * st32.stat().st_size
    ck = load_checkpoint(st16)
    sd = g.state_dict()
    for k, v in ck["nets"]["generator"].items():
        assert v.dtype == sd[k].dtype
        torch.testing.assert_close(v, sd[k], rtol=1e-3, atol=1e-4)
    assert ck["extra"]["style_bank"].dtype == torch.float32
    assert ck["storage_dtype"] == torch.float16 and load_checkpoint(st32)["storage_dtype"] is None
    assert Generator.from_pretrained(st16).decoder.wcts[0].alpha.p.dtype == torch.float32


def test_pickled_files_are_refused_without_unpickling(tmp_path, monkeypatch):
    g = Generator(CFG)
    torch.save(g.state_dict(), tmp_path / "weights.pth")
    torch.save(g.state_dict(), tmp_path / "evil.safetensors")
    (tmp_path / "evil.json").write_text("{}")
    with open(tmp_path / "raw.safetensors", "wb") as f:
        pickle.dump({"a": 1}, f)
    (tmp_path / "raw.json").write_text("{}")

    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    for name in ("weights.pth", "evil.safetensors", "raw.safetensors"):
        with pytest.raises(CheckpointError, match="pickled"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="pickled"):
        Generator.from_pretrained(tmp_path / "evil.safetensors")
    save_checkpoint(tmp_path / "ok", {"generator": g}, CFG)  # a real checkpoint still loads with them patched
    assert load_checkpoint(tmp_path / "ok")["nets"]["generator"].keys() == g.state_dict().keys()


def test_missing_mismatched_and_unsupported(tmp_path):
    g = Generator(CFG)
    with pytest.raises(FileNotFoundError, match="X.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")
    save_checkpoint(tmp_path / "a", {"generator": g}, CFG)
    save_checkpoint(tmp_path / "b", {"generator": g}, CFG)
    (tmp_path / "a.json").write_bytes((tmp_path / "b.json").read_bytes())
    with pytest.raises(CheckpointError, match="do not belong together"):
        load_checkpoint(tmp_path / "a")
    (tmp_path / "b.json").write_text("not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "b")
    with pytest.raises(CheckpointError, match="cannot save"):
        save_checkpoint(tmp_path / "c", {"generator": g}, CFG, {"obj": object()})
    with pytest.raises(CheckpointError, match="sparse|dense"):
        save_checkpoint(tmp_path / "c", {}, None, {"t": torch.eye(3).to_sparse()})
    assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        st, js = save_checkpoint(tmp_path / "m.safetensors", {"net": torch.nn.Linear(2, 2)})
    finally:
        os.umask(old)
    for f in (st, js):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
