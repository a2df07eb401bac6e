"""Forward + backward time of every ``wct.linalg.eigh`` backward mode, side by side with torch.linalg.eigh.

For each matrix size n and batch size B, a batch of random covariances ``(B, n, n)`` (float64, 2n samples) is
decomposed and ``loss = sum(G_v * V) + sum(g_l * lambda)`` is backpropagated. All methods of one (n, B) cell
are timed in the same run, interleaved in a shuffled order on every repetition, and the median is reported,
so that the ratios compare like with like on a shared machine. Printed and written:

* ``benchmarks/results/eigh.json``: every timing (ms) and the target ratios;
* ``benchmarks/results/eigh.md``: the table.

Targets (issue 2): taylor backward <= 1.0x the exact backward at n = 32, B = 512; taylor >= 5x faster than
power_iteration at n = 32. "exact backward" is reported both as torch.linalg.eigh's autograd backward and as
``backward="exact"`` of wct.linalg (same formula, same code path as taylor).

power_iteration costs O(B n^3 K) per backward and is sequential in the eigenvector index; cells with
``B * n^3 > --pi-max-work`` are skipped (listed in the output). On CPU, (n=256, B=512) is skipped for every
method by default (one forward eigh alone takes tens of seconds on one core); pass ``--full`` to run it.

Usage::

    nice -n 19 python benchmarks/bench_eigh.py            # CPU (and CUDA when present), ~5 min on 2 cores
    python benchmarks/bench_eigh.py --sizes 32 --batches 512 --reps 20
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wct import linalg  # noqa: E402

METHODS = ("torch",) + linalg.BACKWARDS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_once(method: str, a: torch.Tensor, gv: torch.Tensor, gl: torch.Tensor) -> tuple[float, ...]:
    """(forward, backward) wall-clock ms and (forward, backward) process CPU ms of one run."""
    device = a.device
    x = a.detach().clone().requires_grad_(True)
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "torch":
        lam, v = torch.linalg.eigh(x)
    else:
        lam, v = linalg.eigh(x, backward=method)
    loss = (v * gv).sum() + (lam * gl).sum()
    _sync(device)
    t1, c1 = time.perf_counter(), time.process_time()
    loss.backward()
    _sync(device)
    t2, c2 = time.perf_counter(), time.process_time()
    if not bool(torch.isfinite(x.grad).all()):
        raise RuntimeError(f"{method}: non-finite gradient in the benchmark")
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (c1 - c0) * 1e3, (c2 - c1) * 1e3


def bench_cell(n: int, b: int, device: torch.device, methods: list[str], reps: int, budget_s: float) -> dict:
    g = torch.Generator().manual_seed(n * 1000 + b)
    x = torch.randn(b, n, 2 * n, generator=g, dtype=torch.float64)
    a = (x @ x.mT / (2 * n)).to(device)
    gv = torch.randn(b, n, n, generator=g, dtype=torch.float64).to(device)
    gl = torch.randn(b, n, generator=g, dtype=torch.float64).to(device)
    for m in methods:  # warm-up, and an estimate of the time per repetition
        _run_once(m, a, gv, gl)
    fast = [m for m in methods if m != "power_iteration"]
    t0 = time.perf_counter()
    _run_once("torch", a, gv, gl)
    per_rep = (time.perf_counter() - t0) * len(fast)
    reps_fast = max(3, min(reps, int(budget_s / max(per_rep, 1e-9))))
    times: dict[str, list[tuple[float, ...]]] = {m: [] for m in methods}
    rng = random.Random(n * 7 + b)
    for _ in range(reps_fast):  # interleaved, shuffled: every method sees the same machine load
        order = list(fast)
        rng.shuffle(order)
        for m in order:
            times[m].append(_run_once(m, a, gv, gl))
    if "power_iteration" in methods:  # 100x slower: its own (fewer) repetitions, still next to taylor
        t0 = time.perf_counter()
        _run_once("power_iteration", a, gv, gl)
        reps_pi = max(3, min(reps, int(budget_s / max(time.perf_counter() - t0, 1e-9))))
        for _ in range(reps_pi):
            times["power_iteration"].append(_run_once("power_iteration", a, gv, gl))
    out = {}
    for m, ts in times.items():
        out[m] = {
            "forward_ms": statistics.median(t[0] for t in ts),
            "backward_ms": statistics.median(t[1] for t in ts),
            "total_ms": statistics.median(t[0] + t[1] for t in ts),
            "forward_cpu_ms": statistics.median(t[2] for t in ts),
            "backward_cpu_ms": statistics.median(t[3] for t in ts),
            "total_cpu_ms": statistics.median(t[2] + t[3] for t in ts),
            "reps": len(ts),
        }
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 16, 32, 64, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512])
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    p.add_argument("--reps", type=int, default=15, help="max repetitions per cell (median reported)")
    p.add_argument("--cell-budget-s", type=float, default=6.0, help="time budget per cell for repetitions")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    p.add_argument("--pi-max-work", type=float, default=2.0e7, help="skip power_iteration if B*n^3 exceeds")
    p.add_argument("--full", action="store_true", help="also run (n=256, B=512) on CPU")
    p.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                   help="CPU devices: compare process CPU time (robust to other load on a shared machine) or "
                        "wall-clock time; CUDA always uses wall-clock time (both are written to the JSON)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)

    def key(dev: str, what: str) -> str:  # what: backward / total
        return f"{what}_cpu_ms" if (dev == "cpu" and args.clock == "cpu") else f"{what}_ms"

    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    results, skipped = [], []
    for dev in devices:
        device = torch.device(dev)
        for n in args.sizes:
            for b in args.batches:
                if device.type == "cpu" and not args.full and n >= 256 and b >= 512:
                    skipped.append({"device": dev, "n": n, "B": b, "method": "all",
                                    "why": "CPU: one forward eigh takes tens of seconds (use --full)"})
                    continue
                methods = list(METHODS)
                if device.type == "cpu" and b * n**3 > args.pi_max_work:
                    methods.remove("power_iteration")
                    skipped.append({"device": dev, "n": n, "B": b, "method": "power_iteration",
                                    "why": f"B*n^3 = {b * n**3:.2g} > --pi-max-work {args.pi_max_work:.2g}"})
                cell = bench_cell(n, b, device, methods, args.reps, args.cell_budget_s)
                for m, r in cell.items():
                    results.append({"device": dev, "n": n, "B": b, "method": m, **r})
                kb = key(dev, "backward")
                t = cell["taylor"][kb]
                line = (f"[{dev}] n={n:4d} B={b:4d}  bwd {kb}: "
                        + "  ".join(f"{m}={cell[m][kb]:.3g}" for m in methods)
                        + f"  | taylor/torch bwd={t / cell['torch'][kb]:.2f}"
                        + f"  taylor/exact bwd={t / cell['exact'][kb]:.2f}")
                if "power_iteration" in cell:
                    line += f"  pi/taylor bwd={cell['power_iteration'][kb] / t:.1f}"
                print(line, flush=True)

    def get(dev, n, b, m, what="backward"):
        for r in results:
            if (r["device"], r["n"], r["B"], r["method"]) == (dev, n, b, m):
                return r[key(dev, what)]
        return None

    ratios = {}
    for dev in devices:
        t, tt, te = get(dev, 32, 512, "taylor"), get(dev, 32, 512, "torch"), get(dev, 32, 512, "exact")
        if t is not None:
            ratios[f"{dev}: taylor/torch.linalg.eigh backward, n=32 B=512 (target <= 1.0)"] = t / tt
            ratios[f"{dev}: taylor/exact-mode backward, n=32 B=512 (target <= 1.0)"] = t / te
        for b in args.batches:
            pi, ta = get(dev, 32, b, "power_iteration"), get(dev, 32, b, "taylor")
            if pi is not None and ta is not None:
                ratios[f"{dev}: power_iteration/taylor backward, n=32 B={b} (target >= 5)"] = pi / ta
                pit, tat = get(dev, 32, b, "power_iteration", "total"), get(dev, 32, b, "taylor", "total")
                ratios[f"{dev}: power_iteration/taylor forward+backward, n=32 B={b}"] = pit / tat
    print("\nTarget ratios (medians, same run):")
    for k, v in ratios.items():
        print(f"  {k}: {v:.3f}")
    for s in skipped:
        print(f"  skipped [{s['device']}] n={s['n']} B={s['B']} {s['method']}: {s['why']}")

    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "threads": args.threads, "dtype": "float64",
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "loss": "sum(G_v * V) + sum(g_l * lambda)", "statistic": "median over interleaved repetitions",
            "clock": args.clock}
    report = {"meta": meta, "results": results, "ratios": ratios, "skipped": skipped}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eigh.json").write_text(json.dumps(report, indent=2))

    lines = ["# wct.linalg.eigh: forward + backward time (ms, median)", "",
             f"torch {meta['torch']}, {args.threads} CPU thread(s), float64, random covariances (B, n, n) of 2n "
             "samples; loss = sum(G_v * V) + sum(g_l * lambda). Cells show `backward (forward+backward)` in ms, "
             f"median of interleaved repetitions; CPU rows use {'process CPU time' if args.clock == 'cpu' else 'wall-clock time'} "
             "(the JSON has both), CUDA rows wall-clock time. "
             "`torch` = torch.linalg.eigh + autograd. Generated by `benchmarks/bench_eigh.py`.", ""]
    for dev in devices:
        lines += [f"## {dev}", "", "| n | B | " + " | ".join(METHODS) + " | taylor/torch bwd | taylor/exact bwd |",
                  "|---|---|" + "---|" * (len(METHODS) + 2)]
        for n in args.sizes:
            for b in args.batches:
                if get(dev, n, b, "taylor") is None:
                    continue
                cells = []
                for m in METHODS:
                    bw = get(dev, n, b, m)
                    cells.append("skipped" if bw is None else f"{bw:.3g} ({get(dev, n, b, m, 'total'):.3g})")
                t = get(dev, n, b, "taylor")
                lines.append(f"| {n} | {b} | " + " | ".join(cells)
                             + f" | {t / get(dev, n, b, 'torch'):.2f} | {t / get(dev, n, b, 'exact'):.2f} |")
        lines.append("")
    lines += ["## Target ratios", ""] + [f"- {k}: **{v:.3f}**" for k, v in ratios.items()] + [""]
    if skipped:
        lines += ["## Skipped", ""] + [f"- [{s['device']}] n={s['n']} B={s['B']} {s['method']}: {s['why']}"
                                       for s in skipped] + [""]
    (args.out / "eigh.md").write_text("\n".join(lines))
    print(f"\nwrote {args.out / 'eigh.json'} and {args.out / 'eigh.md'}")
    return report


if __name__ == "__main__":
    main()
