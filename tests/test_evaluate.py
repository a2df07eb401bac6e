"""Tests of evaluate.py: data discovery, offline weights, the inception_v3 domain classifier, stylize-and-score
(generated images and artworks-mini), tables, bar chart and TensorBoard loss curves.

The classifier is trained from random weights (``--weights none``) at 75 px for one step and the generators
are tiny and untrained: these tests check the pipeline and the table layouts, not the numbers.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import evaluate as ev

DOMAINS = ["monet", "ukiyoe", "vangogh"]
COLOURS = {"monet": (200, 120, 80), "ukiyoe": (60, 90, 200), "vangogh": (220, 200, 40), "photo": (100, 160, 100)}


def _write(path: Path, kind: str, rng: np.random.Generator, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.clip(rng.normal(0, 30, (size, size, 3)) + np.array(COLOURS[kind]), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)


pytestmark = pytest.mark.usefixtures("one_thread")  # one intra-op thread (see tests/conftest.py)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Generated Artworks tree, a 1-step classifier, tiny generator checkpoints, LPIPS weights, a TB log."""
    import torchvision
    from torch.utils.tensorboard import SummaryWriter

    from models import Generator, GeneratorConfig, save_checkpoint

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "artworks"
    rng = np.random.default_rng(0)
    for d in DOMAINS:
        for split, n in [("trainA", 2), ("testA", 2), ("trainB", 2), ("testB", 2)]:
            for i in range(n):
                kind = d if split.endswith("A") else "photo"
                _write(data / f"{d}2photo" / split / f"{d}_{split}_{i}.png", kind, rng)
    _write(data / "ukiyoe2photo" / "trainB" / "shared.png", "photo", rng)  # same photo in two pairs
    _write(data / "vangogh2photo" / "trainB" / "shared.png", "photo", rng)

    clf = root / "clf"
    rc = ev.main(["train-classifier", "--data", str(data), "--weights", "none", "--image-size", "75",
                  "--steps", "1", "--batch-size", "2", "--out", str(clf), "--device", "cpu"])
    assert rc == 0

    cfg = GeneratorConfig(width=4, n_res=1, groups=2, style_n_down=2, gdwct_mlp_dim=8, image_size=32)
    gen = Generator(cfg)
    save_checkpoint(root / "monet-tiny.safetensors", {"generator": gen}, cfg)
    save_checkpoint(root / "anydomain.safetensors", {"generator": gen}, cfg)
    save_checkpoint(root / "exported.safetensors", {"generator": gen}, cfg,
                    extra={"direction": "b2a", "train_config": {
                        "name": "run1", "out": str(root / "runs"),
                        "data": {"train_a": str(data / "ukiyoe2photo" / "trainA"), "root": None}}})

    feats = torchvision.models.alexnet(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in feats.items()}, root / "alexnet-random.pth")

    writer = SummaryWriter(str(root / "runs" / "run1"))
    for step in range(20):
        writer.add_scalar("gen/total", 2.0 / (step + 1), step)
        writer.add_scalar("dis/total", 0.5, step)
        writer.add_scalar("perf/sec_per_step", 0.1, step)
    writer.close()
    return {"root": root, "data": data, "clf": clf.with_suffix(".safetensors"), "lpips": root / "alexnet-random.pth"}


# ------------------------------------------------------------------------------------------------ data


def test_discover_domains(work):
    doms = ev.discover_domains(work["data"])
    assert list(doms) == ["monet", "photo", "ukiyoe", "vangogh"]
    assert [len(doms[d].train) for d in DOMAINS] == [2, 2, 2]
    # photos: 2 per pair with distinct names + one file name present in two pairs, counted once
    assert len(doms["photo"].train) == 3 * 2 + 1
    assert len(doms["photo"].test) == 6
    # a single pair folder is accepted as root too
    assert list(ev.discover_domains(work["data"] / "monet2photo")) == ["monet", "photo"]
    with pytest.raises(ev.EvaluationError, match="2photo"):
        ev.discover_domains(work["root"] / "runs")
    with pytest.raises(ev.EvaluationError, match="not found"):
        ev.discover_domains(work["root"] / "nope")


def test_parse_checkpoint_spec():
    assert ev.parse_checkpoint_spec("svd-taylor=runs/monet.safetensors@monet") == ev.RowSpec(
        "svd-taylor", "runs/monet.safetensors", "monet")
    assert ev.parse_checkpoint_spec("color") == ev.RowSpec("color", "color", None)
    assert ev.parse_checkpoint_spec("a/b/gdwct.safetensors") == ev.RowSpec("gdwct", "a/b/gdwct.safetensors", None)
    with pytest.raises(ev.EvaluationError, match="LABEL"):
        ev.parse_checkpoint_spec("x=")


def test_infer_domain(work):
    r = work["root"]
    assert ev.infer_domain(str(r / "monet-tiny.safetensors"), DOMAINS) == "monet"  # file stem
    assert ev.infer_domain(str(r / "exported.safetensors"), DOMAINS) == "ukiyoe"  # train.py export record
    assert ev.infer_domain(str(r / "anydomain.safetensors"), DOMAINS) is None
    assert ev.infer_domain("color", DOMAINS) is None


# --------------------------------------------------------------------------------------- offline weights


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def test_missing_weights_explain_and_never_download(no_network, tmp_path, capsys):
    with pytest.raises(ev.EvaluationError, match=r"inception_v3_google-0cc3c7bd\.pth.*--weights none"):
        ev.resolve_weights("inception_v3", None, download=False, option="--weights")
    with pytest.raises(ev.EvaluationError, match="not found"):
        ev.resolve_weights("alex", str(tmp_path / "missing.pth"), download=False, option="--lpips-weights")
    assert ev.resolve_weights("inception_v3", "none", download=False, option="--weights") is None
    # a copy already in the torch hub cache is pointed to, not used silently
    cached = tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    with pytest.raises(ev.EvaluationError, match=re.escape(str(cached))):
        ev.resolve_weights("alex", None, download=False, option="--lpips-weights")
    # the CLI turns it into a message and exit status 2
    assert ev.main(["train-classifier", "--data", str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    assert "--weights is required" in capsys.readouterr().err


def test_download_only_when_asked(monkeypatch, tmp_path):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ev.EvaluationError):
        ev.resolve_weights("alex", None, download=False, option="--lpips-weights")
    assert calls == []
    path = ev.resolve_weights("alex", None, download=True, option="--lpips-weights")
    assert path == tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth" and path.is_file()
    assert calls == [(ev.WEIGHT_FILES["alex"], "7be5be79")]
    assert ev.resolve_weights("alex", None, download=True, option="--lpips-weights") == path  # cached
    assert len(calls) == 1


def test_build_inception_from_imagenet_state(tmp_path):
    import torchvision

    from wct.metrics import load_state_dict_file

    src = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    torch.save(src.state_dict(), tmp_path / "inception.pth")
    state = load_state_dict_file(tmp_path / "inception.pth")
    small = ev.build_inception(4, image_size=75, imagenet_state=state)  # aux head off below 299 px
    assert not small.aux_logits and small.AuxLogits is None
    assert torch.equal(small.Conv2d_1a_3x3.conv.weight, src.Conv2d_1a_3x3.conv.weight)
    assert torch.equal(small.Mixed_7c.branch_pool.bn.running_var, src.Mixed_7c.branch_pool.bn.running_var)
    assert small.fc.out_features == 4
    full = ev.build_inception(4, image_size=299, imagenet_state=state)
    assert full.aux_logits and full.AuxLogits.fc.out_features == 4
    for head in (small.fc, full.fc, full.AuxLogits.fc):  # new heads start at zero: loss ln(4) at step 0
        assert torch.count_nonzero(head.weight) == 0 and torch.count_nonzero(head.bias) == 0
    scratch = ev.build_inception(4, image_size=75).eval()
    assert torch.count_nonzero(scratch.fc.weight) == 0 and scratch.Conv2d_1a_3x3.conv.weight.std() > 0
    logits = scratch(torch.randn(2, 3, 75, 75))
    assert torch.allclose(torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])), torch.tensor(4.0).log())
    assert torch.equal(full.AuxLogits.conv0.conv.weight, src.AuxLogits.conv0.conv.weight)
    with pytest.raises(ev.EvaluationError, match="not torchvision's inception_v3"):
        ev.build_inception(4, image_size=75, imagenet_state={"fc.weight": torch.zeros(1)})
    with pytest.raises(ev.EvaluationError, match="at least 75 px"):
        ev.build_inception(4, image_size=64)


# ---------------------------------------------------------------------------------------------- classifier


def test_train_classifier_rejects_unknown_optimizer(work, tmp_path):
    with pytest.raises(ev.EvaluationError, match="--optimizer must be 'adam' or 'sgd'"):
        ev.train_classifier(work["data"], tmp_path / "x", weights=None, image_size=75, steps=1, batch_size=2,
                            optimizer="rmsprop")
    assert not (tmp_path / "x.safetensors").exists()


def test_adam_fits_a_colour_cue_from_scratch():
    # the default optimiser: from random init, AdamW 1e-3 fits 8 fixed 75 px images of 2 classes
    # (a colour cue) in 15 steps; the cross-entropy must fall well below ln 2
    torch.manual_seed(0)
    x = torch.rand(8, 3, 75, 75) * 0.5
    x[4:, 0] += 0.5  # class 1: redder
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    model = ev.build_inception(2, image_size=75).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.dropout.p = 0.0  # deterministic training loss (batch-norm running stats need far more than 15 steps)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(ev.preprocess_normalised(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(2)) < 1e-5  # zero head: uniform prediction at the start
    assert max(losses[-3:]) < 0.35, losses


def test_trained_classifier_checkpoint(work):
    meta = json.loads(work["clf"].with_suffix(".json").read_text())
    assert meta["config"]["classes"] == ["monet", "photo", "ukiyoe", "vangogh"]
    assert meta["config"]["image_size"] == 75 and meta["config"]["aux_logits"] is False
    assert meta["step"] == 1
    assert set(meta["extra"]["test_accuracy"]) == {"monet", "photo", "ukiyoe", "vangogh"}
    model, cfg = ev.load_classifier(work["clf"])
    pred = ev.classify(model, cfg, torch.rand(3, 3, 40, 56))
    assert pred.shape == (3,) and pred.dtype == torch.int64 and ((pred >= 0) & (pred < 4)).all()
    with pytest.raises(ev.EvaluationError, match="not a domain classifier"):
        ev.load_classifier(work["root"] / "anydomain.safetensors")


@pytest.mark.slow
def test_train_classifier_299px_with_aux_head(work, tmp_path):
    # the paper's setting: 299 px, where inception_v3's aux head is active and trained (loss + 0.4 * aux loss)
    # one pair folder (monet, photo): 4 test images to score at 299 px instead of 12
    path = ev.train_classifier(work["data"] / "monet2photo", tmp_path / "clf299", weights=None, image_size=299,
                               steps=1, batch_size=2, device="cpu", eval_batch_size=4)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["config"]["aux_logits"] is True and meta["config"]["image_size"] == 299
    assert meta["config"]["classes"] == ["monet", "photo"] and set(meta["extra"]["test_accuracy"]) == {"monet", "photo"}
    model, cfg = ev.load_classifier(path)
    assert model.AuxLogits is not None and model.AuxLogits.fc.out_features == 2
    # the aux head was trained: its weights moved (SGD skips parameters the loss does not reach)
    torch.manual_seed(0)  # train_classifier seeds with seed=0 right before building the model
    init = ev.build_inception(2, image_size=299)
    assert torch.count_nonzero(init.fc.weight) == 0  # the head starts at zero (uniform prediction)
    step = (model.fc.weight - init.fc.weight).abs().max()
    assert 0 < step < 0.02  # one AdamW (lr 1e-3) step away from the same init
    assert meta["config"]["optimizer"] == "adam" and meta["config"]["lr"] == 1e-3
    assert not torch.equal(model.AuxLogits.fc.weight, init.AuxLogits.fc.weight)
    assert ev.classify(model, cfg, torch.rand(1, 3, 64, 64)).shape == (1,)


# ----------------------------------------------------------------------------------------- stylize-and-score


def _check_results(out: Path, domains: list[str], labels: list[str], covered: dict[str, list[str]]):
    res = json.loads((out / "results.json").read_text())
    assert res["domains"] == domains
    assert [r["label"] for r in res["rows"]] == ["real paintings", "content photos", *labels]
    real = res["rows"][0]
    keys = {"n", "accuracy", "accuracy_drop", "sharpness", "sharpness_std", "lpips", "lpips_std",
            "seconds_per_image"}
    for r in res["rows"]:
        assert sorted(r["domains"]) == sorted(covered.get(r["label"], domains))
        for d, cell in r["domains"].items():
            assert set(cell) == keys
            assert cell["n"] == res["settings"]["n_pairs"][d] or r["label"] == "real paintings"
            assert 0.0 <= cell["accuracy"] <= 1.0
            assert cell["sharpness"] > 0
            if r["kind"] == "reference":
                assert cell["lpips"] is None and cell["seconds_per_image"] is None
            else:
                assert cell["lpips"] >= 0 and cell["seconds_per_image"] > 0
                drop = real["domains"][d]["accuracy"] - cell["accuracy"]
                assert cell["accuracy_drop"] == pytest.approx(drop)
        assert set(r["mean"]) == {"accuracy", "accuracy_drop", "sharpness", "lpips", "seconds_per_image",
                                  "images_per_second"}
    md = (out / "results.md").read_text()
    for title in ("Table VIII", "Table IX", "Table X", "LPIPS"):
        assert title in md
    tables = md.split("## ")[1:]
    assert len(tables) == 4
    for t in tables:
        rows = [ln for ln in t.splitlines() if ln.startswith("| ") and not ln.startswith("| Method")]
        head = next(ln for ln in t.splitlines() if ln.startswith("| Method"))
        if "Table X" in t:
            assert head == "| Method | s / image | images / s |"
            assert [ln.split(" | ")[0][2:] for ln in rows] == labels
        else:
            assert head == "| Method | " + " | ".join(domains) + " | mean |"
            expected = labels if t.startswith("LPIPS") else ["real paintings", "content photos", *labels]
            assert [ln.split(" | ")[0][2:] for ln in rows] == expected
            assert all(ln.count("|") == len(domains) + 3 for ln in rows)
    for png in ("results.png",):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 100
    return res


def test_stylize_and_score_generated(work, capsys):
    r, out = work["root"], work["root"] / "out"
    argv = ["stylize-and-score", "--data", str(work["data"]), "--out", str(out), "--classifier", str(work["clf"]),
            "--lpips-weights", str(work["lpips"]), "--seed", "3", "--save-samples", "1",
            "--checkpoint", f"svd-tiny={r / 'monet-tiny.safetensors'}",
            "--checkpoint", f"svd-tiny={r / 'exported.safetensors'}",  # same row, domain ukiyoe
            "--checkpoint", f"any={r / 'anydomain.safetensors'}",
            "--checkpoint", "color"]
    assert ev.main(argv) == 0
    res = _check_results(out, DOMAINS, ["svd-tiny", "any", "color"], {"svd-tiny": ["monet", "ukiyoe"]})
    assert "| svd-tiny |" in capsys.readouterr().out  # the tables are printed too
    # same model under two rows -> identical sharpness on the shared domain (same seeded pairs)
    rows = {row["label"]: row for row in res["rows"]}
    assert rows["svd-tiny"]["domains"]["monet"]["sharpness"] == pytest.approx(
        rows["any"]["domains"]["monet"]["sharpness"], rel=1e-6)
    assert sorted(p.parent.name for p in (out / "samples" / "svd-tiny").rglob("*.png")) == ["monet", "ukiyoe"]
    # loss curves from the TensorBoard run recorded in the exported checkpoint
    with Image.open(out / "losses.png") as im:
        assert im.format == "PNG"
    # seeded exemplars: a second run (one row, one domain) gives the same numbers, timings aside
    out2 = r / "out2"
    assert ev.main(["stylize-and-score", "--data", str(work["data"]), "--out", str(out2), "--classifier",
                    str(work["clf"]), "--seed", "3", "--save-samples", "0", "--domains", "monet",
                    "--checkpoint", f"any={r / 'anydomain.safetensors'}"]) == 0
    res2 = json.loads((out2 / "results.json").read_text())
    for a, b in zip(res["rows"][:2] + [rows["any"]], res2["rows"], strict=True):
        assert a["domains"]["monet"]["sharpness"] == b["domains"]["monet"]["sharpness"]
        assert a["domains"]["monet"]["accuracy"] == b["domains"]["monet"]["accuracy"]


def test_stylize_and_score_artworks_mini(work, artworks_mini):
    out = work["root"] / "out-mini"
    assert ev.main(["stylize-and-score", "--data", str(artworks_mini), "--out", str(out),
                    "--classifier", str(work["clf"]), "--lpips-weights", str(work["lpips"]),
                    "--checkpoint", f"tiny={work['root'] / 'anydomain.safetensors'}", "--checkpoint", "color",
                    "--max-images", "1", "--size", "48", "--save-samples", "0", "--logdir",
                    f"run={work['root'] / 'runs'}"]) == 0
    _check_results(out, ["monet", "ukiyoe", "vangogh"], ["tiny", "color"], {})
    assert (out / "losses.png").is_file()


def test_stylize_and_score_errors(work, capsys):
    base = ["stylize-and-score", "--out", str(work["root"] / "bad"), "--classifier", "none"]
    assert ev.main([*base, "--data", str(work["root"] / "nope"), "--checkpoint", "color"]) == 2
    assert "not found" in capsys.readouterr().err
    assert ev.main([*base, "--data", str(work["data"]), "--checkpoint", "color", "--domains", "cezanne"]) == 2
    assert "cezanne" in capsys.readouterr().err
    assert ev.main([*base, "--data", str(work["data"]), "--checkpoint", "color@cezanne"]) == 2
    assert "cezanne" in capsys.readouterr().err
    assert ev.main([*base, "--data", str(work["data"]), "--checkpoint", str(work["root"] / "missing.safetensors")]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    assert ev.main([*base, "--data", str(work["data"]), "--checkpoint", "color", "--checkpoint", "color"]) == 2
    assert "two checkpoints" in capsys.readouterr().err
    assert ev.main([*base, "--data", str(work["data"]), "--checkpoint", "color", "--size", "8"]) == 2
    assert "no usable test photo (testB) for domain 'monet'" in capsys.readouterr().err
    assert ev.main([*base[:-1], str(work["root"] / "anydomain.safetensors"), "--data", str(work["data"]),
                    "--checkpoint", "color"]) == 2
    assert "not a domain classifier" in capsys.readouterr().err
    if not torch.cuda.is_available():  # a CUDA request without a GPU is a clean CLI error, not a traceback
        assert ev.main([*base, "--data", str(work["data"]), "--checkpoint", "color", "--device", "cuda"]) == 2
        assert "no CUDA GPU is available" in capsys.readouterr().err


def test_without_classifier_and_lpips_tables_say_so(work):
    out = work["root"] / "out-min"
    assert ev.main(["stylize-and-score", "--data", str(work["data"]), "--out", str(out), "--classifier", "none",
                    "--checkpoint", "color", "--domains", "monet", "--save-samples", "0"]) == 0
    res = json.loads((out / "results.json").read_text())
    cell = res["rows"][-1]["domains"]["monet"]
    assert cell["accuracy"] is None and cell["lpips"] is None and cell["sharpness"] > 0
    assert "Not computed: no `--lpips-weights`" in (out / "results.md").read_text()


def test_unreadable_and_tiny_images_are_skipped_not_fatal(work, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(work["data"] / "monet2photo", data / "monet2photo")
    (data / "monet2photo" / "testB" / "zz_empty.png").write_bytes(b"")
    (data / "monet2photo" / "testA" / "aa_garbage.jpg").write_bytes(b"not an image")
    Image.new("RGB", (8, 8)).save(data / "monet2photo" / "testB" / "tiny.png")
    out = tmp_path / "out"
    assert ev.main(["stylize-and-score", "--data", str(data), "--out", str(out), "--classifier", "none",
                    "--checkpoint", "color", "--save-samples", "0", "--seed", "1"]) == 0
    res = json.loads((out / "results.json").read_text())
    skipped = res["settings"]["skipped_files"]
    assert sorted(Path(s.split(":")[0]).name for s in skipped) == ["aa_garbage.jpg", "tiny.png", "zz_empty.png"]
    assert res["settings"]["n_pairs"] == {"monet": 2}
    assert res["rows"][0]["domains"]["monet"]["n"] == 2  # the two readable paintings
    # the classifier's data set replaces an unreadable file by the next one, once reported
    items = [(data / "monet2photo" / "testA" / "aa_garbage.jpg", 0), *[(p, 1) for p in
             sorted((data / "monet2photo" / "testA").glob("monet_*.png"))]]
    ds = ev._ClassifierData(items, 75, train=False)
    x, y = ds[0]
    assert x.shape == (3, 75, 75) and y == 1 and ds.bad == {items[0][0]}


# ------------------------------------------------------------------------------------------------- losses


def test_read_scalars_and_plot_losses(work, tmp_path, capsys):
    series = ev.read_scalars(work["root"] / "runs")
    steps, vals = series["run1/gen/total"]
    assert steps == list(range(20)) and vals[0] == pytest.approx(2.0) and vals[-1] == pytest.approx(0.1)
    png = tmp_path / "losses.png"
    assert ev.main(["plot-losses", "--logdir", f"a={work['root'] / 'runs' / 'run1'}", "--out", str(png)]) == 0
    with Image.open(png) as im:
        assert im.format == "PNG"
    with pytest.raises(ev.EvaluationError, match="no scalar tag"):
        ev.plot_losses({"a": work["root"] / "runs"}, png, pattern="^nothing$")
    assert ev.main(["plot-losses", "--logdir", str(tmp_path), "--out", str(png)]) == 2
    assert "no TensorBoard event files" in capsys.readouterr().err
