"""Demo-checkpoint visual checks: PNG grids (content | style | output | colour transfer) and a grid-artefact score.

Sub-commands::

    # 6 test photos x each shipped checkpoint, with colour transfer beside every output
    python benchmarks/demo_grid.py grid --checkpoint checkpoints/monet.safetensors \\
        --checkpoint checkpoints/vangogh.safetensors --data ../shared/data/artworks-mini \\
        --out benchmarks/results/demo_grid

    # checkerboard check of the artefact options at initialisation (random weights, no training)
    python benchmarks/demo_grid.py artefacts --data ../shared/data/artworks-mini --out benchmarks/results/demo_artefacts

``grid`` writes ``<out>_<name>.png`` per checkpoint, ``<out>.png`` (every checkpoint side by side, smaller
tiles, for the README) and ``<out>.json`` / ``<out>.md`` with per-image and mean sharpness and grid scores
of the content photo, the colour transfer and the network output, over ``--max-images`` test photos of the
checkpoint's domain (the grid shows the first ``--rows``). Each photo gets a style exemplar from the domain's
held-out paintings (``testA``), drawn with ``random.Random(f"{seed}:{domain}")`` exactly as
``evaluate.py stylize-and-score`` does, so the pictures match the scored pairs.

Grid score (:func:`grid_score`): how much the luminance spectrum peaks on the lattice of frequencies
``(i H/8, j W/8)`` (periods of 8, 4, 8/3 and 2 pixels: what stride-2 layers at up to three levels print
as a checkerboard/diamond pattern) relative to the spectrum right around those frequencies. Natural
photos and paintings of artworks-mini score 0.97-1.5; a 3 % 4-px checkerboard added to a photo scores 22-2700. It is a heuristic detector, not a paper
metric: compare it between images of the same size, e.g. output vs its content photo.

Ripple score (:func:`ripple_score`): the same idea for oriented stripes at any period of 3-12 px and any
angle (the pattern the demo runs learned, which the lattice-only grid score misses): the strongest spectral
peaks in that band divided by the median power of their frequency ring.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wct.metrics import grid_score, ripple_score  # noqa: E402  (re-exported: the detectors live in the library)


def _pairs(data: Path, domain: str, seed: int, max_images: int | None) -> list[tuple[Path, Path]]:
    """(test photo, exemplar) pairs as in ``evaluate.stylize_and_score``."""
    from evaluate import style_domains

    paintings, photos = style_domains(data)[domain]
    rng = random.Random(f"{seed}:{domain}")
    photos = photos[:max_images] if max_images else photos
    return [(c, rng.choice(paintings)) for c in photos]


def _domain_of(ckpt: Path, domains: list[str]) -> str:
    from evaluate import infer_domain

    d = infer_domain(str(ckpt), domains)
    if d is None:
        raise SystemExit(f"cannot tell the target domain of {ckpt}; name it <domain>.safetensors")
    return d


def _tile(img, size: int):
    from PIL import Image

    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    return img.crop(((w - size) // 2, (h - size) // 2, (w - size) // 2 + size, (h - size) // 2 + size))


def _label_row(labels: list[str], size: int, height: int = 22):
    from PIL import Image, ImageDraw

    bar = Image.new("RGB", (size * len(labels), height), "white")
    draw = ImageDraw.Draw(bar)
    for k, text in enumerate(labels):
        draw.text((k * size + 4, 5), text, fill="black")
    return bar


def _stack(rows: list, header=None):
    from PIL import Image

    parts = ([header] if header is not None else []) + rows
    w = max(p.size[0] for p in parts)
    canvas = Image.new("RGB", (w, sum(p.size[1] for p in parts)), "white")
    y = 0
    for p in parts:
        canvas.paste(p, (0, y))
        y += p.size[1]
    return canvas


def _hcat(tiles: list):
    from PIL import Image

    canvas = Image.new("RGB", (sum(t.size[0] for t in tiles), max(t.size[1] for t in tiles)), "white")
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.size[0]
    return canvas


def cmd_grid(a: argparse.Namespace) -> int:
    from evaluate import style_domains
    from models.inference import load_engine
    from wct.io import load_image, pil_to_tensor
    from wct.metrics import sharpness

    torch.set_num_threads(a.threads)
    data = Path(a.data)
    domains = list(style_domains(data))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    color = load_engine("color")
    report: dict = {"settings": {"data": str(data), "seed": a.seed, "max_images": a.max_images, "rows": a.rows,
                                 "alpha": a.alpha, "grid_score": "benchmarks/demo_grid.py:grid_score",
                                 "ripple_score": "benchmarks/demo_grid.py:ripple_score"},
                    "checkpoints": {}}
    combined_cols = []
    for ck in a.checkpoint:
        ck = Path(ck)
        dom = _domain_of(ck, domains)
        eng = load_engine(str(ck))
        pairs = _pairs(data, dom, a.seed, a.max_images)
        per = []
        rows = []
        col_tiles = []
        for i, (cp, sp) in enumerate(pairs):
            content, style = load_image(cp), load_image(sp)
            res = eng.stylize(content, style, alpha=a.alpha)
            ct = color.stylize(content, style)
            tc, tr, tt = (pil_to_tensor(im) for im in (content, res, ct))
            m = {"photo": cp.name, "exemplar": sp.name}
            for key, t in (("content", tc), ("output", tr), ("color", tt)):
                m[f"sharpness_{key}"] = float(sharpness(t))
                m[f"grid_{key}"] = float(grid_score(t))
                m[f"ripple_{key}"] = float(ripple_score(t))
            m["mean_abs_diff_output_content"] = float((tr - tc).abs().mean())
            m["mean_abs_diff_output_color"] = float((tr - tt).abs().mean())
            per.append(m)
            if i < a.rows:
                tiles = [_tile(im, a.tile) for im in (content, style, res, ct)]
                rows.append(_hcat(tiles))
                col_tiles.append(tiles)
        header = _label_row(["content photo", f"{dom} exemplar (testA)", f"{ck.stem} (network)",
                             "colour transfer"], a.tile)
        grid = _stack(rows, header)
        gpath = out.parent / f"{out.name}_{ck.stem}.png"
        grid.save(gpath, optimize=True)
        keys = [k for k in per[0] if k.startswith(("sharpness_", "grid_", "ripple_", "mean_abs"))]
        mean = {k: sum(m[k] for m in per) / len(per) for k in keys}
        frac = {"output_sharper_than_color": sum(m["sharpness_output"] > m["sharpness_color"] for m in per) / len(per),
                "output_ripple_above_3x_content": sum(m["ripple_output"] > 3 * m["ripple_content"] for m in per) / len(per),
                "output_grid_above_2x_content": sum(m["grid_output"] > 2 * m["grid_content"] for m in per) / len(per)}
        import json as _json

        meta = _json.loads(ck.with_suffix(".json").read_text())
        extra = meta.get("extra", meta)
        report["checkpoints"][ck.stem] = {
            "path": str(ck), "domain": dom, "n": len(per), "mean": mean, "fractions": frac,
            "trained_steps": extra.get("trained_steps"), "grid_png": str(gpath), "images": per,
        }
        print(f"[{ck.stem}] domain {dom}, {len(per)} photos: " + ", ".join(f"{k} {v:.4f}" for k, v in mean.items()))
        combined_cols.append((ck.stem, dom, col_tiles))
    # combined README grid: (content, exemplar, output, colour) per checkpoint, smaller tiles
    if combined_cols:
        small = a.tile * 2 // 3
        labels, rows = [], []
        n = min(len(c[2]) for c in combined_cols)
        for r in range(n):
            tiles = []
            for _name, _dom, cols in combined_cols:
                c, s, o, t = (x.resize((small, small)) for x in cols[r])
                tiles += [c, s, o, t]
            rows.append(_hcat(tiles))
        for name, dom, _ in combined_cols:
            labels += [f"{dom} photo (testB)", f"{dom} exemplar", f"{name}", "colour transfer"]
        combined = _stack(rows, _label_row(labels, small))
        combined.save(out.with_suffix(".png"), optimize=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out.with_suffix(".md").write_text(_markdown(report))
    print(f"wrote {out.with_suffix('.png')}, {out.with_suffix('.json')}, {out.with_suffix('.md')}")
    return 0


def _markdown(report: dict) -> str:
    lines = ["| checkpoint | steps | n | sharpness content / colour / output | grid score content / colour / output "
             "| ripple score content / colour / output | output sharper than colour | grid > 2x content "
             "| ripple > 3x content | mean abs diff to content / colour |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in report["checkpoints"].items():
        m, f = r["mean"], r["fractions"]
        lines.append(
            f"| {name} | {r['trained_steps']} | {r['n']} | {m['sharpness_content']:.4f} / {m['sharpness_color']:.4f}"
            f" / {m['sharpness_output']:.4f} | {m['grid_content']:.2f} / {m['grid_color']:.2f} / "
            f"{m['grid_output']:.2f} | {m['ripple_content']:.0f} / {m['ripple_color']:.0f} / {m['ripple_output']:.0f} "
            f"| {f['output_sharper_than_color']:.0%} | {f['output_grid_above_2x_content']:.0%} "
            f"| {f['output_ripple_above_3x_content']:.0%} "
            f"| {m['mean_abs_diff_output_content']:.3f} / {m['mean_abs_diff_output_color']:.3f} |")
    lines.append("")
    lines.append("Sharpness: wct.metrics.sharpness (mean luma gradient per pixel). Grid score: "
                 "benchmarks/demo_grid.py:grid_score (spectral peaks at periods 8/4/2 px vs their "
                 "neighbourhood; photos ~1). Ripple score: benchmarks/demo_grid.py:ripple_score (strongest "
                 "spectral peaks at periods 3-12 px, any orientation, vs the median of their frequency ring; "
                 "artworks-mini photos/paintings ~15-160). Means over the photos; pixel values in [0, 1].")
    return "\n".join(lines) + "\n"


def cmd_artefacts(a: argparse.Namespace) -> int:
    """Grid score of randomly initialised generators per artefact option (no training; a cheap check that
    the layers themselves do not print a lattice)."""
    from evaluate import style_domains
    from models import Generator, GeneratorConfig
    from wct.io import load_image, pil_to_tensor

    torch.set_num_threads(a.threads)
    data = Path(a.data)
    dom = a.domain
    paintings, photos = style_domains(data)[dom]
    photos, paintings = photos[: a.n], paintings[: a.n]
    xs = torch.cat([pil_to_tensor(_tile(load_image(p), a.size)) for p in photos])
    ss = torch.cat([pil_to_tensor(_tile(load_image(p), a.size)) for p in paintings])
    variants = {
        "nearest+conv4 (GDWCT)": dict(upsample="nearest", downsample="conv4"),
        "nearest+blurpool": dict(upsample="nearest", downsample="blurpool"),
        "bilinear+conv4": dict(upsample="bilinear", downsample="conv4"),
        "bilinear+blurpool (demo)": dict(upsample="bilinear", downsample="blurpool"),
    }
    res = {"content": float(grid_score(xs).mean())}
    print(f"content photos: grid score {res['content']:.2f}")
    for name, kw in variants.items():
        scores = []
        for seed in range(a.seeds):
            torch.manual_seed(seed)
            gen = Generator(GeneratorConfig(width=32, n_res=2, groups=8, **kw)).eval()
            with torch.no_grad():
                y = (gen(xs * 2 - 1, ss * 2 - 1).clamp(-1, 1) + 1) / 2
            scores.append(float(grid_score(y).mean()))
        res[name] = {"mean": sum(scores) / len(scores), "per_seed": scores}
        print(f"{name}: grid score {res[name]['mean']:.2f} (seeds {[round(s, 2) for s in scores]})")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"domain": dom, "n": len(photos), "size": a.size,
                                                    "seeds": a.seeds, "results": res}, indent=1) + "\n")
    print(f"wrote {out.with_suffix('.json')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("grid", help="content | style | output | colour transfer grids and scores")
    g.add_argument("--checkpoint", action="append", required=True, help="a .safetensors checkpoint (repeat)")
    g.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "artworks-mini"))
    g.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_grid"),
                   help="output stem (writes STEM.png/.json/.md and STEM_<name>.png)")
    g.add_argument("--rows", type=int, default=6, help="photos shown in the grid")
    g.add_argument("--max-images", type=int, default=50, help="photos scored per checkpoint")
    g.add_argument("--tile", type=int, default=192, help="tile side in the PNG (px)")
    g.add_argument("--alpha", type=float, default=None, help="style strength (default: learned)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--threads", type=int, default=1)
    g.set_defaults(func=cmd_grid)
    r = sub.add_parser("artefacts", help="grid score of random-init generators per artefact option")
    r.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "artworks-mini"))
    r.add_argument("--domain", default="monet")
    r.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_artefacts"))
    r.add_argument("--n", type=int, default=4)
    r.add_argument("--size", type=int, default=128)
    r.add_argument("--seeds", type=int, default=3)
    r.add_argument("--threads", type=int, default=1)
    r.set_defaults(func=cmd_artefacts)
    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    raise SystemExit(main())
