"""Why eigenvector gradients blow up: close eigenvalues are the rule in large covariances.

Two computations (Wang, Dang, Hu, Fua, Salzmann, "Robust Differentiable SVD", TPAMI 2021):

(a) Fig. 1(a): the probability that a random covariance matrix of dimension d has two eigenvalues closer
    than a threshold, as a function of d. Protocol used here: ``C = X X^T / N`` with ``X`` of shape (d, N),
    i.i.d. N(0, 1) entries, ``N = 2d`` samples (a feature map with as many pixels as twice its channels);
    eigenvalues divided by the largest one, so thresholds are relative; ``--trials`` matrices per d.
(b) The appendix example (eqs. 60-61): the angle between the true 3rd column of
    ``K_ij = 1/(lambda_i - lambda_j)`` (descending eigenvalues, as in the paper) and its degree-9 Taylor
    version, and the clipped one at threshold 100, for the stated spectrum
    ``(1, 0.8, 0.8 - delta, 0.4, 0.2, 0.1)`` (the close pair is the 2nd/3rd eigenvalue; the paper's own
    numbers are not reproduced here), at ``delta = --delta`` and swept over ``delta``; the Padé version
    (wct.linalg ``backward="pade"``) is shown too. (c) the same angles for the relatively well-separated
    spectrum ``c (1, 0.8, 0.6, 0.4, 0.2, 0.1)`` as the scale ``c`` shrinks: clipping acts on absolute gaps,
    Taylor on eigenvalue ratios, so only the clipped direction depends on the scale of the matrix.

Writes ``benchmarks/results/eigengap.png`` and ``benchmarks/results/eigengap.json`` and prints the numbers.

Usage::

    nice -n 19 python benchmarks/eigengap.py            # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wct.linalg import taylor_k  # noqa: E402


def close_pair_probability(dims: list[int], thresholds: list[float], trials: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for d in dims:
        hits = torch.zeros(len(thresholds), dtype=torch.long)
        done = 0
        while done < trials:  # chunks keep the memory small for large d
            b = min(trials - done, max(1, 2**22 // (d * d)))
            x = torch.randn(b, d, 2 * d, generator=g, dtype=torch.float64)
            lam = torch.linalg.eigvalsh(x @ x.mT / (2 * d))
            lam = lam / lam[..., -1:]
            gap = (lam[..., 1:] - lam[..., :-1]).min(-1).values  # ascending: the closest pair is adjacent
            for k, t in enumerate(thresholds):
                hits[k] += int((gap < t).sum())
            done += b
        out[d] = {f"{t:g}": hits[k].item() / trials for k, t in enumerate(thresholds)}
        print(f"(a) d={d:4d}: " + "  ".join(f"P(min gap < {t:g}) = {out[d][f'{t:g}']:.3f}" for t in thresholds),
              flush=True)
    return out


def k_columns(delta: float, scale: float = 1.0, column: int = 2, clip: float = 100.0, degree: int = 9) -> dict:
    lam_desc = scale * torch.tensor([1.0, 0.8, 0.8 - delta, 0.4, 0.2, 0.1], dtype=torch.float64)
    lam = lam_desc.flip(0)  # ascending for wct.linalg
    n = lam.numel()
    # wct.linalg's K[i, j] ~ 1/(lam_j - lam_i) on ascending eigenvalues; the paper's K[i, j] = 1/(lam_i - lam_j)
    # on descending ones. Flip both axes and transpose: same matrix in the paper's convention.
    def paper(k: torch.Tensor) -> torch.Tensor:
        return k.flip(0, 1).T

    exact = paper(taylor_k(lam, backward="exact"))
    taylor = paper(taylor_k(lam, degree=degree, eps=1e-12))
    pade = paper(taylor_k(lam, degree=degree, eps=1e-12, backward="pade"))
    clipped = exact.clamp(-clip, clip)
    col = {name: m[:, column] for name, m in
           (("exact", exact), ("taylor", taylor), ("pade", pade), ("clip", clipped))}

    def angle(u: torch.Tensor, v: torch.Tensor) -> float:
        c = float(u @ v / (u.norm() * v.norm()))
        return math.degrees(math.acos(max(-1.0, min(1.0, c))))

    assert n == 6
    return {"spectrum_descending": lam_desc.tolist(),
            "column": {k: v.tolist() for k, v in col.items()},
            "angle_deg": {k: angle(col["exact"], col[k]) for k in ("taylor", "pade", "clip")}}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", type=int, nargs="+", default=[4, 8, 16, 32, 64, 128, 256])
    p.add_argument("--thresholds", type=float, nargs="+", default=[1e-3, 1e-4, 1e-5])
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--delta", type=float, default=1e-3, help="gap of the close pair in the example (b)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    prob = close_pair_probability(args.dims, args.thresholds, args.trials)
    example = k_columns(args.delta)
    print(f"\n(b) spectrum {example['spectrum_descending']} (descending), 3rd column of K:")
    for k, v in example["column"].items():
        print(f"    {k:7s} " + " ".join(f"{x:10.4g}" for x in v))
    print("    angle to the exact column: " + ", ".join(f"{k} {v:.2f} deg" for k, v in example["angle_deg"].items()))
    deltas = [10 ** (-e / 4) for e in range(4, 25)]  # 1e-1 .. 1e-6
    sweep = {f"{d:.3g}": k_columns(d)["angle_deg"] for d in deltas}
    # the same spectrum with a relative gap of 0.2 (delta = 0.2), scaled: clipping depends on the absolute
    # gap, Taylor only on the ratios lambda_small / lambda_large, so only clip changes direction with scale
    scales = [10 ** (-e / 4) for e in range(0, 17)]  # 1 .. 1e-4
    sweep_scale = {f"{c:.3g}": k_columns(0.2, scale=c)["angle_deg"] for c in scales}
    small = k_columns(0.2, scale=1e-3)
    print(f"\n(b') spectrum {[round(x, 6) for x in small['spectrum_descending']]}: angle to the exact column: "
          + ", ".join(f"{k} {v:.2f} deg" for k, v in small["angle_deg"].items()))

    report = {
        "protocol_a": "C = X X^T / N, X (d, N=2d) i.i.d. N(0,1), eigenvalues / largest, min adjacent gap < t",
        "trials": args.trials, "probability_close_pair": {str(d): v for d, v in prob.items()},
        "example_b": example, "angle_sweep_deg": sweep,
        "example_b_scaled": small, "angle_sweep_scale_deg (delta=0.2)": sweep_scale,
        "note_b": "K_ij = 1/(lambda_i - lambda_j), descending; taylor degree 9; clip at 100; "
                  "spectrum (1, 0.8, 0.8-delta, 0.4, 0.2, 0.1) chosen here (paper's own values not reproduced)",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eigengap.json").write_text(json.dumps(report, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.2))
    for t in args.thresholds:
        ax1.plot(args.dims, [prob[d][f"{t:g}"] for d in args.dims], "o-", label=f"gap < {t:g} x lambda_max")
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("matrix dimension d")
    ax1.set_ylabel("P(two eigenvalues closer than threshold)")
    ax1.set_title(f"(a) random covariances, N = 2d samples, {args.trials} trials")
    ax1.legend()
    ax1.grid(alpha=0.3)
    for k in ("taylor", "pade", "clip"):
        ax2.plot(deltas, [sweep[f"{d:.3g}"][k] for d in deltas], "o-", ms=3, label=k)
    ax2.set_xscale("log")
    ax2.set_xlabel("gap delta of the close pair (0.8, 0.8 - delta)")
    ax2.set_ylabel("angle to the exact 3rd column of K (deg)")
    ax2.set_title("(b) K column direction: Taylor (K=9), Pade, clip (100)")
    ax2.legend()
    ax2.grid(alpha=0.3)
    for k in ("taylor", "pade", "clip"):
        ax3.plot(scales, [sweep_scale[f"{c:.3g}"][k] for c in scales], "o-", ms=3, label=k)
    ax3.set_xscale("log")
    ax3.set_xlabel("scale c of the spectrum c (1, 0.8, 0.6, 0.4, 0.2, 0.1)")
    ax3.set_ylabel("angle to the exact 3rd column of K (deg)")
    ax3.set_title("(c) same, vs the scale of the matrix")
    ax3.legend()
    ax3.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "eigengap.png", dpi=120)
    print(f"\nwrote {args.out / 'eigengap.png'} and {args.out / 'eigengap.json'}")
    return report


if __name__ == "__main__":
    main()
