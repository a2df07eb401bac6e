"""Speed and memory of stylisation on CPU, per engine, and batched vs one-by-one CLI throughput.

Measures, in one run:

1. seconds and peak RSS to stylise 256^2, 512^2, 1024^2 and 4K (3840 x 2160) content images per engine
   (``color`` and an SVD-WCT network). Each case runs in a fresh subprocess so that its peak RSS
   (``ru_maxrss``) is its own; the RSS after imports and model loading is reported as the baseline. 4K runs
   the network tiled (``--tile``, default 1024 px, global statistics from a 1024 px thumbnail) and, for
   comparison, untiled (``--untiled-4k``).
2. CLI throughput: ``stylize.main`` on a folder of same-size images with ``--batch-size 1`` and
   ``--batch-size B``, interleaved and repeated; the ratio batched / one-by-one (target >= 1.5x).

The network engine uses the first checkpoint in ``checkpoints/`` when there is one; otherwise a
**randomly initialised** generator (``--width``, default 16, n_res 4) saved to a temporary checkpoint
(the speed of a network does not depend on its weights; the pictures are meaningless). The output says
which.

Usage::

    nice -n 19 python benchmarks/bench_stylize.py            # writes benchmarks/results/stylize.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {"256": (256, 256), "512": (512, 512), "1024": (1024, 1024), "4K": (3840, 2160)}


def _image(w: int, h: int, seed: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child(args: argparse.Namespace) -> None:
    """One case in this process; prints a JSON line."""
    import torch

    from models.inference import load_engine

    torch.set_num_threads(args.threads)
    eng = load_engine(args.model)
    w, h = SIZES[args.size]
    content = _image(w, h, 0)
    style = eng.prepare_style(_image(256, 256, 1))
    eng.stylize(_image(64, 64, 2), style)  # warm-up (allocator, kernels)
    base = _rss_mb()
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        out = eng.stylize(content, style, tile=args.tile or None, tile_overlap=64)
        times.append(time.perf_counter() - t)
    assert out.size == (w, h)
    if args.save:
        out.save(args.save)
    print(json.dumps({"seconds": statistics.median(times), "all_seconds": times, "rss_base_mb": base,
                      "rss_peak_mb": _rss_mb()}))


def run_case(model: str, size: str, tile: int, reps: int, threads: int, save: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", model, "--size", size, "--tile", str(tile),
           "--reps", str(reps), "--threads", str(threads), "--save", save]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def throughput(model: str, n: int, size: int, batch: int, rounds: int, threads: int, tmp: Path) -> dict:
    import torch

    import stylize

    torch.set_num_threads(threads)
    cdir = tmp / f"contents_{size}"
    if not cdir.is_dir():
        cdir.mkdir()
        for i in range(n):
            _image(size, size, 100 + i).save(cdir / f"img{i:03d}.png")
        _image(256, 256, 1).save(tmp / "style.png")
    res: dict[int, list[float]] = {1: [], batch: []}
    for r in range(rounds):
        for bs in (1, batch) if r % 2 == 0 else (batch, 1):
            out = tmp / f"out_{model.replace('/', '_')}_{bs}_{r}"
            t = time.perf_counter()
            rc = stylize.main(["--content", str(cdir), "--style", str(tmp / "style.png"), "--output", str(out),
                               "--model", model, "--batch-size", str(bs), "--quiet", "--style-size", "0",
                               "--threads", str(threads)])
            res[bs].append(time.perf_counter() - t)
            if rc != 0:
                raise RuntimeError(f"stylize.py failed (rc {rc}) for {model}")
    one, bat = statistics.median(res[1]), statistics.median(res[batch])
    return {"images": n, "size": size, "batch_size": batch, "threads": threads, "seconds_one_by_one": one, "seconds_batched": bat,
            "images_per_s_one_by_one": n / one, "images_per_s_batched": n / bat, "ratio": one / bat,
            "all_seconds": {str(k): v for k, v in res.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None)
    p.add_argument("--size", default="256", choices=list(SIZES))
    p.add_argument("--tile", type=int, default=0)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--save", default="", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--width", type=int, default=16, help="width of the random generator (no checkpoint)")
    p.add_argument("--tile-4k", type=int, default=1024, help="tile size for 4K with the network")
    p.add_argument("--untiled-4k", action="store_true", help="also run the network untiled at 4K")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--batch", type=int, default=8, help="batch size of the throughput comparison")
    p.add_argument("--n-images", type=int, default=16, help="images in the throughput comparison")
    p.add_argument("--tp-size", type=int, default=256, help="side of the throughput images")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput comparison")
    p.add_argument("--tp-threads", type=int, nargs="+", default=[1, 2],
                   help="torch threads of the throughput comparison (one comparison per value)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stylize"))
    args = p.parse_args()
    if args.child:
        child(args)
        return

    import torch

    from models import Generator, GeneratorConfig, save_checkpoint
    from models.inference import available_engines

    tmp = Path(tempfile.mkdtemp(prefix="bench_stylize_"))
    names = available_engines()
    if len(names) > 1:
        net_model, net_note = names[1], f"shipped checkpoint checkpoints/{names[1]}.safetensors"
    else:
        torch.manual_seed(0)
        cfg = GeneratorConfig(width=args.width)
        net_model = str(tmp / "random.safetensors")
        save_checkpoint(net_model, {"generator": Generator(cfg)}, {"generator": cfg})
        net_note = (f"RANDOMLY INITIALISED generator (no checkpoint in checkpoints/): width {cfg.width}, "
                    f"n_res {cfg.n_res}, groups {cfg.groups}, transform {cfg.transform}; speed only")
    print(f"network engine: {net_note}", flush=True)
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
           "threads": args.threads, "loadavg_start": os.getloadavg(), "network": net_note,
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    rows = []
    for engine, model in (("color", "color"), ("network", net_model)):
        for size in args.sizes:
            variants = [0]
            if size == "4K" and engine == "network":
                variants = [args.tile_4k] + ([0] if args.untiled_4k else [])
            for tile in variants:
                reps = 3 if size in ("256", "512") else 1
                save = str(tmp / f"{engine}_{size}_{tile}.png") if size == "4K" else ""
                r = run_case(model, size, tile, reps, args.threads, save)
                row = {"engine": engine, "size": size, "pixels": SIZES[size][0] * SIZES[size][1],
                       "tile": tile or None, **r}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.untiled_4k and "4K" in args.sizes:
        import numpy as np
        from PIL import Image

        a = np.asarray(Image.open(tmp / f"network_4K_{args.tile_4k}.png"), np.float64)
        b = np.asarray(Image.open(tmp / "network_4K_0.png"), np.float64)
        mse = float(((a - b) ** 2).mean())
        env["psnr_4k_tiled_vs_untiled_db"] = 10 * np.log10(255.0**2 / max(mse, 1e-12))
        print(f"4K network, tiled vs untiled: PSNR {env['psnr_4k_tiled_vs_untiled_db']:.1f} dB", flush=True)
    tp = {}
    for engine, model in (("color", "color"), ("network", net_model)):
        for th in args.tp_threads:
            key = f"{engine}, {th} thread{'s' if th > 1 else ''}"
            tp[key] = throughput(model, args.n_images, args.tp_size, args.batch, args.rounds, th, tmp)
            print(key, json.dumps(tp[key]), flush=True)
    env["loadavg_end"] = os.getloadavg()
    result = {"env": env, "cases": rows, "throughput": tp}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    md = [f"# Stylisation speed and memory (CPU, {args.threads} torch threads)", "",
          f"{env['date']}; Python {env['python']}, torch {env['torch']}, {env['cpus']} CPUs, load average "
          f"{env['loadavg_start'][0]:.1f} at start (the machine is shared: absolute times are pessimistic).",
          "", f"Network engine: {net_note}.", "",
          "| engine | image | tile | seconds | peak RSS (MB) | RSS before (MB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['engine']} | {r['size']} | {r['tile'] or '-'} | error: {r['error']} | | |")
        else:
            md.append(f"| {r['engine']} | {r['size']} | {r['tile'] or '-'} | {r['seconds']:.2f} | "
                      f"{r['rss_peak_mb']:.0f} | {r['rss_base_mb']:.0f} |")
    if "psnr_4k_tiled_vs_untiled_db" in env:
        md += ["", f"4K network output, tiled ({args.tile_4k} px tiles, 64 px overlap, thumbnail statistics) vs "
               f"untiled: PSNR {env['psnr_4k_tiled_vs_untiled_db']:.1f} dB."]
    md += ["", f"CLI throughput, {args.n_images} images of {args.tp_size}^2 (load + stylise + save), median "
           f"of {args.rounds} interleaved rounds:", "",
           "| engine, torch threads | one by one (img/s) | batch (img/s) | batch size | ratio (target >= 1.5) |",
           "|---|---|---|---|---|"]
    for engine, t in tp.items():
        md.append(f"| {engine} | {t['images_per_s_one_by_one']:.2f} | {t['images_per_s_batched']:.2f} | "
                  f"{t['batch_size']} | {t['ratio']:.2f}x |")
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
