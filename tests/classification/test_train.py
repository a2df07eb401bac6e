"""Training CLI: tiny CPU runs, non-finite detection, checkpoint/resume, TensorBoard, config errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from wct.classification import train as train_mod
from wct.classification.data import DataConfig, build_datasets, load_digits
from wct.classification.train import load_config, train


def test_digits_data():
    tr, te = load_digits(image_size=12, test_fraction=0.25, split_seed=3)
    assert len(tr) + len(te) == 1797 and abs(len(te) - 0.25 * 1797) < 10
    x, y = tr[0]
    assert x.shape == (1, 12, 12) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(te.tensors[1].tolist()) == set(range(10))  # stratified: every class in the test split
    tr2, te2 = load_digits(image_size=12, test_fraction=0.25, split_seed=3)
    assert torch.equal(te.tensors[0], te2.tensors[0])  # the seeded split is reproducible
    # no test image is also a training image
    flat_tr = {tuple(v.tolist()) for v in tr.tensors[0].flatten(1)[:, ::7]}
    assert sum(tuple(v.tolist()) in flat_tr for v in te.tensors[0].flatten(1)[:, ::7]) < 5  # (digits has duplicates)
    with pytest.raises(ValueError, match="image_size"):
        load_digits(image_size=4)


def test_missing_datasets_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--download"):
        build_datasets(DataConfig(name="cifar10", root=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="ImageFolder"):
        build_datasets(DataConfig(name="imagenet", root=str(tmp_path)))
    with pytest.raises(ValueError, match="unknown data set"):
        build_datasets(DataConfig(name="mnist"))


def test_tiny_imagenet_official_layout(tmp_path):
    from PIL import Image

    for wnid in ("n01", "n02"):
        d = tmp_path / "train" / wnid / "images"
        d.mkdir(parents=True)
        Image.new("RGB", (64, 64), (10, 20, 30)).save(d / f"{wnid}_0.JPEG")
    (tmp_path / "val" / "images").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(tmp_path / "val" / "images" / "val_0.JPEG")
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t63\t63\n")
    tr, te, info = build_datasets(DataConfig(name="tiny_imagenet", root=str(tmp_path)))
    assert info == {"num_classes": 2, "in_channels": 3, "image_size": 64}
    assert len(tr) == 2 and len(te) == 1 and te[0][1] == 1 and te[0][0].shape == (3, 64, 64)


def test_tiny_run_succeeds(tiny_config):
    res = train(tiny_config)
    assert res["status"] == "ok" and res["reason"] is None and res["steps"] == 2
    assert res["epochs_done"] == 1 and 0.0 <= res["final_error"] <= 100.0
    assert res["max_grad_norm"] > 0


def test_forced_nonfinite_gradient_is_a_failed_run_not_a_crash(tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg.fault_nonfinite_grad_step = 1
    res = train(cfg)
    assert res["status"] == "failed" and "non-finite gradient" in res["reason"]
    assert res["failed_at"] == {"epoch": 1, "step": 1} and res["final_error"] is None


def test_checkpoint_resume_reproduces_uninterrupted_run(tiny_config, tmp_path):
    cfg = copy.deepcopy(tiny_config)
    cfg.max_steps = None
    cfg.data.test_fraction = 0.93  # ~125 training images: one step of 64 per epoch
    cfg.optim.epochs = 2
    full = copy.deepcopy(cfg)
    full.out_dir = str(tmp_path / "full")
    res_full = train(full)

    part = copy.deepcopy(cfg)
    part.out_dir = str(tmp_path / "part")
    part.optim.epochs = 1
    train(part)
    meta = json.loads((tmp_path / "part" / "ckpt.json").read_text())
    assert meta["epoch"] == 1 and (tmp_path / "part" / "ckpt.safetensors").is_file()
    part.optim.epochs = 2
    res_resumed = train(part, resume=True)
    assert res_resumed["steps"] == res_full["steps"] == 2
    a = load_file(str(tmp_path / "full" / "ckpt.safetensors"))
    b = load_file(str(tmp_path / "part" / "ckpt.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert res_resumed["history"] == res_full["history"]


def test_cli_tensorboard_and_exit_codes(tiny_config, tmp_path, capsys):
    import yaml

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config.to_dict()))
    out = tmp_path / "run"
    rc = train_mod.main(["--config", str(cfg_path), "--out-dir", str(out), "--set", "tensorboard=true",
                         "--set", "model.method=exact"])
    assert rc == 0
    assert json.loads((out / "result.json").read_text())["status"] == "ok"
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["method"] == "exact"
    rc = train_mod.main(["--config", str(cfg_path), "--set", "fault_nonfinite_grad_step=0"])
    assert rc == 3
    assert '"status": "failed"' in capsys.readouterr().out


def test_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="unknown top-level config keys"):
        load_config(None, ["sed=1"])
    with pytest.raises(ValueError, match="unknown optim config keys"):
        load_config(None, ["optim.learning_rate=0.1"])
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(None, ["model.method"])
    cfg = load_config(None, ["model.group_size=8", "optim.epochs=3"])
    assert cfg.model.group_size == 8 and cfg.optim.epochs == 3 and cfg.optim.lr == 0.1


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs" / "classification"
    paths = sorted(root.glob("*.yaml"))
    assert paths
    for p in paths:
        load_config(p)


def test_eval_every_skips_intermediate_evaluations(tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg.max_steps, cfg.data.test_fraction, cfg.optim.epochs, cfg.eval_every = None, 0.93, 2, 2
    res = train(cfg)
    assert [h["test_error"] is None for h in res["history"]] == [True, False]
    assert res["final_error"] == res["best_error"] == res["history"][-1]["test_error"]


@pytest.mark.gpu
def test_cuda_bfloat16_autocast_run(tiny_config):
    cfg = copy.deepcopy(tiny_config)
    cfg.device, cfg.amp = "cuda", True
    res = train(cfg)
    assert res["status"] == "ok" and res["steps"] == 2
