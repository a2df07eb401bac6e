"""Tests of train.py / models.trainer: tiny runs (32 px, width 8) on CPU."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import train
from models import Generator, load_checkpoint
from models.checkpoint import CheckpointError
from models.trainer import (
    DEFAULT_CONFIG,
    Trainer,
    TrainingDiverged,
    apply_overrides,
    export_generator,
    find_checkpoints,
    fit,
    load_config,
    resolve_config,
    structure_loss,
)

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "gen.width=8", "gen.groups=4", "gen.n_res=1", "gen.style_n_down=2",
    "dis.width=8", "dis.n_layers=2", "dis.n_scales=2",
    "data.load_size=36", "data.crop_size=32", "data.holdout=2",
    "train.log_every=1", "train.print_every=1000", "train.image_every=2", "train.sample_every=2",
    "train.save_every=2", "train.keep_last=2", "train.sample_count=2", "train.style_bank_size=3",
    "cpu_threads=1", "seed=0",
]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than 2 threads on a busy 2-core machine
    yield
    torch.set_num_threads(n)


def _write_images(folder: Path, n: int, seed: int, size=(44, 36)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        base = rng.integers(0, 256, 3)
        arr = np.clip(base + rng.normal(0, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture
def domains(tmp_path):
    return _write_images(tmp_path / "paintings", 6, 1), _write_images(tmp_path / "photos", 7, 2)


def _config(a: Path, b: Path, out: Path, name="run", steps=4, extra=()) -> dict:
    cfg = load_config()
    apply_overrides(cfg, TINY + [f"data.train_a={a}", f"data.train_b={b}", f"out={out}", f"name={name}",
                                 f"train.max_steps={steps}", *extra])
    return resolve_config(cfg)


def _metrics(run: Path) -> dict[int, dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return {json.loads(ln)["step"]: json.loads(ln) for ln in lines}


def test_fit_writes_run_folder_and_export(domains, tmp_path):
    a, b = domains
    summary = fit(_config(a, b, tmp_path / "out", steps=4), log=lambda *_: None)
    run = tmp_path / "out" / "run"
    assert summary["status"] == "completed" and summary["success"] is True
    assert summary["steps_done"] == 4 and summary["nonfinite_steps"] == 0
    saved = json.loads((run / "summary.json").read_text())
    assert saved["steps_done"] == 4 and saved["amp"] is None  # JSON null, not the string "None"
    assert [s for s, _ in find_checkpoints(run / "checkpoints")] == [2, 4]  # keep_last=2
    assert (run / "samples" / "step_00000004.png").is_file()
    samples = [json.loads(ln) for ln in (run / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in samples] == [2, 4]
    for r in samples:  # 32 px samples: sharpness only (ripple needs >= 48 px)
        assert set(r) == {"step", "sharpness_output", "sharpness_content", "luma_corr"}
        assert -1 <= r["luma_corr"] <= 1
        assert r["sharpness_content"] > 0 and math.isfinite(r["sharpness_output"])
    assert list(run.glob("events.out.tfevents.*")) and (run / "config.yaml").is_file()
    m = _metrics(run)
    assert sorted(m) == [1, 2, 3, 4]
    for rec in m.values():
        assert all(math.isfinite(v) for v in rec.values())
        assert rec["gen/recon_x_a"] > 0 and rec["dis/total"] > 0
    ck = load_checkpoint(run / "checkpoints" / "step_00000004.safetensors")
    assert set(ck["nets"]) == {"gen_a", "gen_b", "dis_a", "dis_b"}
    assert ck["extra"]["counters"]["step"] == 4 and ck["config"]["gen"]["width"] == 8
    assert {"torch", "numpy", "python", "sampler"} <= set(ck["extra"]["rng"][0])
    assert ck["extra"]["optim"]["gen"]["state"]  # Adam moments saved

    # export: photo content encoder + painting style encoder/decoder + style bank
    out = export_generator(run, direction="b2a", out=tmp_path / "ship" / "tiny.safetensors", fp16=True,
                           log=lambda *_: None)
    assert out.stat().st_mode & 0o044 and out.with_suffix(".json").stat().st_mode & 0o044  # readable by all
    shipped = load_checkpoint(out)
    bank, names = shipped["extra"]["style_bank"], shipped["extra"]["style_bank_names"]
    assert bank.shape[0] == len(names) == 3 and bank.shape[1] == 32
    assert names == ["Tiny #1", "Tiny #2", "Tiny #3"]
    assert all(n.endswith(".png") for n in shipped["extra"]["style_bank_sources"])
    assert shipped["extra"]["trained_steps"] == 4 and shipped["extra"]["direction"] == "b2a"
    g = Generator.from_pretrained(out)
    sd_a, sd_b = ck["nets"]["gen_a"], ck["nets"]["gen_b"]
    gsd = g.state_dict()
    k_dec = next(k for k in gsd if k.startswith("decoder."))
    k_con = next(k for k in gsd if k.startswith("content_encoder."))
    assert torch.allclose(gsd[k_dec], sd_a[k_dec], atol=1e-3)  # fp16 round trip
    assert torch.allclose(gsd[k_con], sd_b[k_con], atol=1e-3)
    x = torch.rand(1, 3, 40, 52) * 2 - 1
    y = g.decode(g.encode_content(x), bank[:1], size=x.shape[-2:])
    assert y.shape == x.shape and torch.isfinite(y).all()
    from models.inference import load_engine

    engine = load_engine(str(out))
    photo = Image.fromarray((np.random.default_rng(0).random((40, 52, 3)) * 255).astype(np.uint8))
    styled = engine.stylize(photo, None, style_index=1)
    assert styled.size == photo.size and engine.style_names == names
    with pytest.raises(ValueError, match="direction"):
        export_generator(run, direction="x", out=tmp_path / "z.safetensors")


def test_resume_gives_the_same_next_losses(domains, tmp_path):
    a, b = domains  # 4 + 5 training images (2 held out each): epochs of 5 items = 2 batches of 2
    bs2 = ["train.batch_size=2"]
    fit(_config(a, b, tmp_path / "full", steps=5, extra=bs2), log=lambda *_: None)
    # the first sitting loads data in a worker process: the stream does not depend on the worker count
    fit(_config(a, b, tmp_path / "split", steps=3, extra=[*bs2, "data.num_workers=1"]),
        log=lambda *_: None)  # stops inside epoch 1
    with pytest.raises(FileExistsError, match="--resume"):
        fit(_config(a, b, tmp_path / "split", steps=5, extra=bs2), log=lambda *_: None)
    s = fit(_config(a, b, tmp_path / "split", steps=5, extra=bs2), resume=True, log=lambda *_: None)
    assert s["sittings"][-1]["start_step"] == 3 and s["steps_done"] == 5 and len(s["sittings"]) == 2
    assert s["sittings"][0]["end_step"] == 3 and s["wall_time_s"] >= s["sittings"][0]["wall_s"]
    full, split = _metrics(tmp_path / "full" / "run"), _metrics(tmp_path / "split" / "run")
    assert sorted(split) == [1, 2, 3, 4, 5]
    for step in (4, 5):  # step 5 is the first batch of epoch 2
        for key in ("gen/total", "dis/total", "gen/adv_a", "grad_norm/gen"):
            assert split[step][key] == pytest.approx(full[step][key], rel=1e-5, abs=1e-6), (step, key)
    w_full = load_checkpoint(tmp_path / "full/run/checkpoints/step_00000005.safetensors")["nets"]["gen_a"]
    w_split = load_checkpoint(tmp_path / "split/run/checkpoints/step_00000005.safetensors")["nets"]["gen_a"]
    assert all(torch.allclose(w_full[k], w_split[k], atol=1e-6) for k in w_full)


def test_forced_nan_skips_rolls_back_and_stops(domains, tmp_path):
    a, b = domains
    cfg = _config(a, b, tmp_path / "out", steps=20, extra=["train.max_nonfinite=3"])
    seen, before = [], {}

    def inject(trainer, info):
        if trainer.step >= 3 and info["update"] == "gen":  # iterations 4, 5, 6 (0-based step 3, 4, 5)
            if not seen:
                before.update({k: v.clone() for k, v in trainer.gen_a.state_dict().items()})
            seen.append(trainer.step)
            return info["loss"] * float("nan")
        return None

    with pytest.raises(TrainingDiverged, match=r"3 non-finite steps in a row.*rolled back.*step 4\)"):
        fit(cfg, fault_hook=inject, log=lambda *_: None)
    run = tmp_path / "out" / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["success"] is False and summary["status"] == "diverged"
    assert summary["nonfinite_steps"] == 3 and seen == [3, 4, 5]
    assert summary["steps_done"] == 4  # rolled back to the last checkpoint (written mid-streak: finite)
    # the non-finite steps were skipped: the step-4 checkpoint holds the finite state after step 3
    ckpts = find_checkpoints(run / "checkpoints")
    assert [s for s, _ in ckpts] == [2, 4]
    ck4 = load_checkpoint(ckpts[-1][1])
    assert ck4["extra"]["counters"]["nonfinite_total"] == 1
    assert all(torch.isfinite(t).all() for t in ck4["nets"]["gen_a"].values())
    assert all(torch.equal(ck4["nets"]["gen_a"][k], v) for k, v in before.items())  # step 4 was skipped
    m = _metrics(run)
    assert m[4]["nonfinite"] == 1.0 and m[3]["nonfinite"] == 0.0


def test_sigterm_finishes_the_step_saves_and_stops(domains, tmp_path):
    a, b = domains

    def term_at_3(trainer, info):
        if trainer.step == 2 and info["update"] == "dis":  # during iteration 3
            os.kill(os.getpid(), signal.SIGTERM)

    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    s = fit(_config(a, b, tmp_path, steps=50, extra=["train.save_every=100"]), fault_hook=term_at_3,
            log=lambda *_: None)
    assert s["status"] == "interrupted" and "SIGTERM" in s["message"] and s["steps_done"] == 3
    assert [st for st, _ in find_checkpoints(tmp_path / "run" / "checkpoints")] == [3]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # restored


def test_corrupt_and_odd_files_train_and_warn_exactly(tmp_path):
    a = _write_images(tmp_path / "A", 3, 3)
    Image.open(a / "img00.png").convert("LA").save(a / "la.png")  # textured grey + alpha
    Image.open(a / "img02.png").convert("L").save(a / "grey.png")
    Image.open(a / "img01.png").convert("RGB").save(tmp_path / "full.jpg")
    jpg = (tmp_path / "full.jpg").read_bytes()
    (a / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (a / "zero.png").write_bytes(b"")
    (a / "readme.txt").write_text("a text file")
    b = _write_images(tmp_path / "B", 4, 4)
    ta, tb = _write_images(tmp_path / "TA", 1, 5), _write_images(tmp_path / "TB", 2, 6)
    (ta / "held_zero.png").write_bytes(b"")  # an unreadable held-out image is listed too
    cfg = _config(a, b, tmp_path / "out", steps=8, extra=["data.holdout=0", "train.sample_every=100",
                                                         "data.shuffle=false", f"data.test_a={ta}",
                                                         f"data.test_b={tb}"])
    with pytest.warns(UserWarning, match="unreadable image file") as rec:
        summary = fit(cfg, log=lambda *_: None)
    assert summary["status"] == "completed" and summary["nonfinite_steps"] == 0
    warned = sorted(Path(str(w.message).split("skipping unreadable image file ")[1].split(":")[0]).name
                    for w in rec if "unreadable image file" in str(w.message))
    assert warned == ["held_zero.png", "truncated.jpg", "zero.png"]
    assert sorted(Path(p).name for p in summary["bad_files"]) == ["held_zero.png", "truncated.jpg", "zero.png"]


def test_config_files_are_complete_and_commented():
    from dataclasses import fields

    from models import DiscriminatorConfig, GeneratorConfig

    default = yaml.safe_load(DEFAULT_CONFIG.read_text())
    # every network option is exposed (image_size is filled from data.crop_size)
    assert set(default["gen"]) == {f.name for f in fields(GeneratorConfig)} - {"image_size"}
    assert set(default["dis"]) == {f.name for f in fields(DiscriminatorConfig)}
    default_keys = _flat_keys(default)
    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(files) >= 5
    for f in files:
        data = yaml.safe_load(f.read_text())
        assert _flat_keys(data) == default_keys, f.name  # every config lists every key
        for ln in f.read_text().splitlines():
            if ln.strip() and not ln.lstrip().startswith("#"):
                assert "#" in ln, f"{f.name}: key without a comment: {ln!r}"
        resolve_config(apply_overrides(load_config(f), ["data.train_a=.", "data.train_b=."]))


def _flat_keys(d, prefix=""):
    keys = set()
    for k, v in d.items():
        keys |= _flat_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
    return keys


def test_config_errors_are_clear(tmp_path):
    cfg = load_config()
    with pytest.raises(ValueError, match="did you mean optim.lr"):
        apply_overrides(cfg, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides(cfg, ["optim.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_stepz: 3\n")
    with pytest.raises(ValueError, match="max_stepz"):
        load_config(bad)
    with pytest.raises(ValueError, match="no training data"):
        resolve_config(load_config())
    with pytest.raises(ValueError, match="divisible"):
        resolve_config(apply_overrides(load_config(), ["data.train_a=.", "data.train_b=.", "gen.groups=7"]))
    assert train.main(["--config", str(bad)]) == 2


def test_missing_data_folders_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "configs" / "monet2photo.yaml")
    with pytest.raises(ValueError, match=r"data.root: 'nowhere/monet' does not exist \(tried .*nowhere/monet"
                                         r".* or .*nowhere/monet\); pass data.root=/path/"):
        resolve_config(apply_overrides(cfg, ["data.root=nowhere/monet"]))
    (tmp_path / "pair").mkdir()
    with pytest.raises(ValueError, match="has no trainA/ or trainB/ folder"):
        resolve_config(apply_overrides(load_config(), [f"data.root={tmp_path / 'pair'}"]))
    # --style-dir that does not exist: a clean error and rc 2, no traceback
    a = _write_images(tmp_path / "photos", 1, 0)
    assert train.main(["--style-dir", str(tmp_path / "nope"), "--photo-dir", str(a)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: data.train_a (--style-dir):") and "does not exist" in err
    assert "Traceback" not in err


def test_image_size_below_discriminator_minimum_is_refused_first(tmp_path, capsys):
    a, b = _write_images(tmp_path / "A", 1, 0), _write_images(tmp_path / "B", 1, 1)
    rc = train.main(["--style-dir", str(a), "--photo-dir", str(b), "--out", str(tmp_path / "o"),
                     "--image-size", "32"])
    assert rc == 2 and not (tmp_path / "o").exists()  # nothing created
    err = capsys.readouterr().err
    assert err.startswith("error: data.crop_size (--image-size) is 32 px") and "at least 64 px" in err
    cfg = apply_overrides(load_config(), [f"data.train_a={a}", f"data.train_b={b}", "data.crop_size=32",
                                          "data.load_size=36", "dis.n_layers=2", "dis.n_scales=2"])
    assert resolve_config(cfg)["data"]["crop_size"] == 32  # 2**(2+2-1) = 8 px is the minimum there


def test_warnings_print_as_one_line(capsys):
    with train.one_line_warnings():
        warnings.warn("skipping unreadable image file x.png:\n  truncated", UserWarning, stacklevel=1)
        warnings.warn("slow path", RuntimeWarning, stacklevel=1)
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: skipping unreadable image file x.png: truncated",
                   "warning: slow path [RuntimeWarning]"]


def test_default_config_uses_one_cpu_thread():
    assert load_config()["cpu_threads"] == 1  # 2 threads are ~10x slower on 2 busy cores (README, Training)


def test_cli_new_domain_and_resume(domains, tmp_path, capsys):
    a, b = domains
    common = ["--style-dir", str(a), "--photo-dir", str(b), "--out", str(tmp_path / "o"), "--max-steps", "2",
              "--image-size", "32", "--width", "8", "--batch-size", "1", "--device", "cpu", "--seed", "1"]
    tiny = [t for t in TINY if not t.startswith(("gen.width", "dis.width", "data.load_size", "data.crop_size"))]
    assert train.main(common + tiny) == 0
    run = tmp_path / "o" / "paintings"  # default name: the style folder's name
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["crop_size"] == 32 and saved["gen"]["width"] == 8 and saved["seed"] == 1
    # resume with only --out/--name/--max-steps: the saved config is used
    assert train.main(["--out", str(tmp_path / "o"), "--name", "paintings", "--max-steps", "3", "--resume"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps_done"] == 3
    # changing the network on resume is refused with a clear message
    assert train.main(["--out", str(tmp_path / "o"), "--name", "paintings", "--max-steps", "4", "--resume",
                       "gen.n_res=2"]) == 2
    assert "gen.n_res" in capsys.readouterr().err


def test_artworks_mini_few_steps(artworks_mini, tmp_path):
    rc = train.main(["--config", str(ROOT / "configs" / "monet2photo.yaml"), "--out", str(tmp_path),
                     "--max-steps", "2", "--image-size", "32", "--width", "8", "gen.groups=4", "gen.n_res=1",
                     "gen.style_n_down=2", "dis.n_layers=2", "dis.n_scales=2", "train.save_every=2",
                     "train.sample_every=2", "cpu_threads=1", "train.sample_count=2"])
    assert rc == 0
    s = json.loads((tmp_path / "monet2photo" / "summary.json").read_text())
    assert s["steps_done"] == 2 and s["success"] and all(
        math.isfinite(v) for v in s["last_losses"].values())
    assert (tmp_path / "monet2photo" / "samples" / "step_00000002.png").is_file()


def _run_cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_sigkill_then_resume_loses_at_most_one_interval(domains, tmp_path):
    a, b = domains
    args = ["--style-dir", str(a), "--photo-dir", str(b), "--out", str(tmp_path), "--name", "k",
            "--image-size", "32", "--width", "8", *[t for t in TINY if "width" not in t and "_size" not in t]]
    p = _run_cli([*args, "--max-steps", "400", "train.save_every=3"])
    ckdir = tmp_path / "k" / "checkpoints"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and (not find_checkpoints(ckdir) or find_checkpoints(ckdir)[-1][0] < 3):
            assert p.poll() is None, p.stdout.read()
            time.sleep(0.2)
        time.sleep(0.7)  # land somewhere inside the next interval (possibly inside a save)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
    killed_at = max(_metrics(tmp_path / "k"))
    ckpts = find_checkpoints(ckdir)
    for _, path in ckpts:  # every complete checkpoint loads: nothing corrupt
        load_checkpoint(path)
    last = ckpts[-1][0]
    assert killed_at - last <= 3  # at most one save interval lost
    # what a kill between the two renames / during the write would leave: never used, cleaned up
    (ckdir / "step_99999999.safetensors").write_bytes(b"half a pair")
    (ckdir / "step_99999999.json.123.tmp").write_bytes(b"{")
    q = _run_cli([*args, "--max-steps", str(last + 1), "train.save_every=3", "--resume"])
    out, _ = q.communicate(timeout=240)
    assert q.returncode == 0, out
    s = json.loads((tmp_path / "k" / "summary.json").read_text())
    assert s["sittings"][-1]["start_step"] == last and s["steps_done"] == last + 1 and s["success"]
    assert sorted(_metrics(tmp_path / "k")) == list(range(1, last + 2))  # no duplicated records
    assert not list(ckdir.glob("step_99999999*"))


@pytest.mark.slow
def test_torchrun_two_gloo_processes(domains, tmp_path):
    a, b = domains
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "train.py"), "--style-dir", str(a), "--photo-dir", str(b), "--out", str(tmp_path),
           "--name", "ddp", "--max-steps", "4", "--image-size", "32", "--width", "8", "--device", "cpu",
           *[t for t in TINY if "width" not in t and "_size" not in t]]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "ddp"
    s = json.loads((run / "summary.json").read_text())
    assert s["world_size"] == 2 and s["steps_done"] == 4 and s["success"]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0 alone logs
    assert sorted(_metrics(run)) == [1, 2, 3, 4]  # one record per step: rank 0 alone writes
    assert [st for st, _ in find_checkpoints(run / "checkpoints")] == [2, 4]
    ck = load_checkpoint(run / "checkpoints" / "step_00000004.safetensors")
    assert len(ck["extra"]["rng"]) == 2  # both ranks' RNG states, gathered by rank 0
    assert r.stdout.count("completed at step 4") == 1


def test_amp_bf16_autocast_path_on_cpu(domains, tmp_path, monkeypatch):
    """CPU autocast runs the same mixed-precision code path; the eigendecompositions stay float64."""
    import wct.linalg

    a, b = domains
    dtypes = []
    real = wct.linalg.eigh

    def spy(x, *args, **kw):
        out = real(x, *args, **kw)
        dtypes.append(out[0].dtype)
        return out

    monkeypatch.setattr(wct.linalg, "eigh", spy)
    t = Trainer(_config(a, b, tmp_path, extra=["train.amp=bf16"]))
    assert t.amp_dtype == torch.bfloat16
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    out = t.train_step(x, x.flip(-1))
    assert out["nonfinite"] == 0.0 and all(math.isfinite(v) for k, v in out.items() if k != "images")
    assert out["images"]["x_ab"].dtype == torch.bfloat16  # the convolutions really ran in bf16
    assert dtypes and all(d == torch.float64 for d in dtypes)  # eigh ran, in float64, under autocast


@pytest.mark.gpu
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda(domains, tmp_path, amp):
    a, b = domains
    cfg = _config(a, b, tmp_path / "o", steps=3, extra=["device=cuda", f"train.amp={amp}"])
    s = fit(cfg, log=lambda *_: None)
    assert s["amp"] == {"bf16": "torch.bfloat16", "fp16": "torch.float16"}[amp]
    assert s["success"] and s["nonfinite_steps"] == 0 and s["steps_done"] == 3
    assert all(math.isfinite(v) for v in s["last_losses"].values())


def test_trainer_rejects_bad_images(domains, tmp_path):
    a, b = domains
    t = Trainer(_config(a, b, tmp_path))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        t.gen_update(torch.zeros(1, 1, 32, 32), torch.zeros(1, 3, 32, 32))


def test_sample_scores_flag_ripple_in_outputs():
    from models.trainer import sample_scores

    g = torch.Generator().manual_seed(0)
    content = torch.rand(2, 3, 64, 64, generator=g)
    xx = torch.arange(64.0).expand(64, 64)
    stripes = (0.5 + 0.3 * torch.sin(2 * math.pi * xx / 5)).expand(2, 3, 64, 64)
    rows = torch.stack([content, content, (0.5 * content + stripes).clamp(0, 1)], dim=1)  # (N, 3, 3, H, W)
    s = sample_scores(rows)
    assert set(s) == {"ripple_output", "ripple_content", "sharpness_output", "sharpness_content", "luma_corr"}
    assert s["ripple_output"] > 10 * s["ripple_content"]
    clean = sample_scores(torch.stack([content, content, content], dim=1))
    assert clean["ripple_output"] == pytest.approx(clean["ripple_content"])
    assert clean["luma_corr"] == pytest.approx(1.0, abs=1e-6)
    inverted = sample_scores(torch.stack([content, content, 1 - content], dim=1))
    assert inverted["luma_corr"] == pytest.approx(-1.0, abs=1e-6)



# ---- structure loss (luminance-layout preservation) and fine-tuning from another run ------------------

def _luma_corr_oracle(x: torch.Tensor, y: torch.Tensor, pool: int) -> np.ndarray:
    """NumPy oracle: BT.601 luma, pool x pool block means, np.corrcoef per image."""
    w = np.array([0.299, 0.587, 0.114])
    out = []
    for xi, yi in zip(x.numpy(), y.numpy(), strict=True):
        lum = [np.tensordot(w, im, axes=1) for im in (xi, yi)]
        h, wd = lum[0].shape[0] // pool, lum[0].shape[1] // pool
        blocks = [v[: h * pool, : wd * pool].reshape(h, pool, wd, pool).mean((1, 3)).ravel() for v in lum]
        out.append(np.corrcoef(blocks[0], blocks[1])[0, 1])
    return np.array(out)


def test_structure_loss_matches_numpy_correlation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 18, 22, generator=g, dtype=torch.float64)
    y = torch.rand(3, 3, 18, 22, generator=g, dtype=torch.float64) + 0.5 * x  # partly correlated
    want = np.mean(1 - _luma_corr_oracle(x, y, 4))
    assert structure_loss(x, y, pool=4, eps=0).item() == pytest.approx(want, rel=1e-10)
    assert structure_loss(x, y, pool=1, eps=0).item() == pytest.approx(np.mean(1 - _luma_corr_oracle(x, y, 1)))
    # invariant to a positive affine map of the translation (colour/contrast free), maximal when inverted
    assert structure_loss(x, 0.3 * x - 0.7, eps=0).item() == pytest.approx(0.0, abs=1e-12)
    assert structure_loss(x, 1 - x, eps=0).item() == pytest.approx(2.0, abs=1e-12)
    # half precision inputs are computed in float32
    assert structure_loss(x.half(), y.half()).dtype == torch.float32


def test_structure_loss_gradcheck_and_flat_images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: structure_loss(a, b, pool=2), (x, y))
    # a flat (constant) translation: loss 1, finite gradients (the eps keeps 0/0 away)
    flat = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64, requires_grad=True)
    loss = structure_loss(x, flat)
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and torch.isfinite(flat.grad).all() and torch.isfinite(x.grad).all()


def test_structure_loss_rejects_bad_shapes():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        structure_loss(x, torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        structure_loss(x[:, :1], x[:, :1])
    with pytest.raises(ValueError, match="pool"):
        structure_loss(x, x, pool=32)
    with pytest.raises(ValueError, match="pool"):
        structure_loss(x, x, pool=0)


def test_init_from_starts_a_new_run_from_another_runs_networks(domains, tmp_path):
    a, b = domains
    fit(_config(a, b, tmp_path / "src", steps=2), log=lambda *_: None)
    src = tmp_path / "src" / "run" / "checkpoints" / "step_00000002.safetensors"
    src_nets = load_checkpoint(src)["nets"]
    # load_weights copies all four networks and nothing else
    cfg = _config(a, b, tmp_path / "ft", extra=["loss.structure=1.0", "seed=5"])
    t = Trainer(cfg)
    assert not torch.equal(t.gen_a.state_dict()[next(iter(src_nets["gen_a"]))],
                           src_nets["gen_a"][next(iter(src_nets["gen_a"]))])  # seed 5 init differs
    assert t.load_weights(src) == 2 and t.step == 0
    for name, net in t.nets().items():
        assert all(torch.equal(v, src_nets[name][k]) for k, v in net.state_dict().items()), name
    # fit with train.init_from: a new run at step 0, the structure loss logged, the origin recorded
    lines: list[str] = []
    cfg = _config(a, b, tmp_path / "ft", steps=2, extra=["loss.structure=1.0", f"train.init_from={src}"])
    s = fit(cfg, log=lines.append)
    assert s["steps_done"] == 2 and s["sittings"][0]["start_step"] == 0
    assert s["init_from"] == {"path": str(src), "step": 2}
    assert any("initialised from" in ln for ln in lines)
    m = _metrics(tmp_path / "ft" / "run")
    assert all(0 <= m[i]["gen/structure_a"] <= 2 and 0 <= m[i]["gen/structure_b"] <= 2 for i in (1, 2))
    ck = load_checkpoint(tmp_path / "ft" / "run" / "checkpoints" / "step_00000002.safetensors")
    assert ck["extra"]["init_from"]["step"] == 2 and ck["extra"]["optim"]["gen"]["state"]
    # --resume continues the fine-tuned run (init_from is not applied again) and keeps the record
    s = fit(_config(a, b, tmp_path / "ft", steps=3, extra=["loss.structure=1.0", f"train.init_from={src}"]),
            resume=True, log=lambda *_: None)
    assert s["steps_done"] == 3 and s["init_from"]["step"] == 2


def test_init_from_errors_are_clear(domains, tmp_path, capsys):
    a, b = domains
    with pytest.raises(ValueError, match=r"train.init_from \(--init-from\).*does not exist"):
        _config(a, b, tmp_path, extra=[f"train.init_from={tmp_path / 'nope.safetensors'}"])
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        fit(_config(a, b, tmp_path / "o", extra=[f"train.init_from={bad}"]), log=lambda *_: None)
    # the CLI flag, and a network of another width: one clear line, exit code 2 (no traceback)
    fit(_config(a, b, tmp_path / "w8", steps=1), log=lambda *_: None)
    src = tmp_path / "w8" / "run" / "checkpoints" / "step_00000001.safetensors"
    tiny = [t for t in TINY if not t.startswith(("gen.width", "dis.width"))]
    argv = ["--style-dir", str(a), "--photo-dir", str(b), "--out", str(tmp_path / "w16"), "--max-steps", "1",
            "--width", "16", "--init-from", str(src), *tiny]
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert "does not match this network" in err and "Traceback" not in err


def test_cli_fine_tune_resume_and_export_without_the_init_file(domains, tmp_path):
    a, b = domains
    fit(_config(a, b, tmp_path / "src", steps=1), log=lambda *_: None)
    init = tmp_path / "init.safetensors"
    src = tmp_path / "src" / "run" / "checkpoints" / "step_00000001"
    for suffix in (".safetensors", ".json"):
        init.with_suffix(suffix).write_bytes(src.with_suffix(suffix).read_bytes())
    common = ["--style-dir", str(a), "--photo-dir", str(b), "--out", str(tmp_path / "o"), "--name", "ft", *TINY]
    assert train.main([*common, "--max-steps", "2", "--init-from", str(init), "loss.structure=1"]) == 0
    init.unlink()  # the run's checkpoints, not the init file, are what a resume needs
    assert train.main(["--out", str(tmp_path / "o"), "--name", "ft", "--max-steps", "3", "--resume"]) == 0
    summary = json.loads((tmp_path / "o" / "ft" / "summary.json").read_text())
    assert summary["steps_done"] == 3 and summary["init_from"] == {"path": str(init), "step": 1}
    out = export_generator(tmp_path / "o" / "ft", out=tmp_path / "ft.safetensors", log=lambda *_: None)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["extra"]["init_from"]["step"] == 1 and meta["extra"]["trained_steps"] == 3
