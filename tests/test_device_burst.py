"""benchmarks/device_burst.sh (the prepared GPU burst) and benchmarks/device_stage.sh, checked on the CPU.

The burst's ``--dry-run`` runs the same stages and packing on the CPU with tiny sizes; the slow test runs the
env and train stages end to end (SIGTERM stop, export, packing) and checks what would come back from the
device machine: summary.md, the stage logs, a tar with a loadable fp16 export, and no more than 8 files.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BURST = ROOT / "benchmarks" / "device_burst.sh"
STAGE = ROOT / "benchmarks" / "device_stage.sh"


def _run(args: list[str], out: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(out), BURST_NICE="")  # not reniced below other jobs: it runs on a budget
    return subprocess.run(["bash", str(BURST), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_help_names_stages_and_budget(tmp_path):
    r = _run(["--help"], tmp_path / "out")
    assert r.returncode == 0, r.stderr
    for word in ("--budget", "--dry-run", "--stages", "summary.md", "timeout -s TERM", "Why parallel"):
        assert word in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--budget", "abc"], "--budget takes whole seconds"),
    (["--budget", "10"], "at least 30 s"),
    (["--stages", "env,nope"], "unknown stage 'nope'"),
    (["--train-mode", "both"], "parallel or sequential"),
    (["--styles", "cezanne"], "no configs/demo-cezanne.yaml"),
    (["--bogus"], "unknown argument '--bogus'"),
])
def test_bad_arguments_exit_2_before_any_work(tmp_path, args, message):
    out = tmp_path / "out"
    r = _run(args, out)
    assert r.returncode == 2 and message in r.stderr
    assert not out.exists()  # nothing was started or written


def test_stage_script_help():
    r = subprocess.run(["bash", str(STAGE), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and ".carry/artworks-mini" in r.stdout and "64 MiB" in r.stdout
    r = subprocess.run(["bash", str(STAGE), "--nope"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown argument" in r.stderr


@pytest.mark.slow
def test_dry_run_trains_exports_and_packs(tmp_path, artworks_mini):
    """~60 s on 2 busy cores: env + one style's training stopped by SIGTERM, export and packing."""
    from models import load_checkpoint

    out = tmp_path / "out"
    r = _run(["--dry-run", "--budget", "55", "--stages", "env,train", "--styles", "monet",
              "--data", str(artworks_mini)], out, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["env.log", "monet.tar", "summary.md", "train.log"]
    summary = (out / "summary.md").read_text()
    assert "| env | 0 |" in summary and "| train | 0 |" in summary
    assert "eigh sanity: OK" in summary
    assert "- train monet: interrupted at step" in summary  # stopped by SIGTERM, checkpoint saved
    assert summary.strip() in r.stdout  # printed last, for the device tool's output tail
    with tarfile.open(out / "monet.tar") as tar:
        names = {Path(n).name for n in tar.getnames()}
        tar.extractall(tmp_path / "x", filter="data")
    assert {"monet.safetensors", "monet.json", "summary.json", "metrics_tail.jsonl", "train_stdout.log"} <= names
    assert any(n.startswith("monet-last-sample-step_") and n.endswith(".png") for n in names)
    ckpt = load_checkpoint(tmp_path / "x" / "monet.safetensors")
    assert ckpt["storage_dtype"] is not None and ckpt["step"] >= 1  # fp16 export of a trained generator
