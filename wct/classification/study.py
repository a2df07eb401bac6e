"""Run the seed paper's stability study: backward methods × ZCA group sizes × runs.

``python -m wct.classification.study --config configs/classification/digits_mini.yaml \\
    --methods exact,pi,power_iteration,clip,taylor,pade,spectral --group-sizes 4,8,16 --runs 3 \\
    --out benchmarks/results/classification_ministudy``

For every (method, group size d, run r) it trains one model (``wct.classification.train.train`` with
``model.method``, ``model.group_size`` and ``seed = base seed + r``) and records whether the run succeeded
(no non-finite loss/gradient/parameter: the paper's "gradient explosion") and its final test error. It writes,
in the layout of the seed's Tables III-VI (Wang et al., TPAMI 2021): per method and d the success rate and
the min and mean test error of the successful runs, as

- ``OUT.json``: every run (status, reason, errors, max gradient norm, time) plus the table and the command;
  rewritten after every run, so an interrupted study loses nothing (``--resume`` skips finished runs);
- ``OUT.md``: the markdown table;
- ``OUT.png``: success rate and mean/min error against d for each method.

A run that raises an unexpected exception is recorded with ``status: "error"`` (not counted as a success,
listed separately) and the study continues.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch

from wct.classification.models import METHODS, PAPER_NAMES
from wct.classification.train import TrainConfig, load_config, train

__all__ = ["main", "run_study", "summarize", "write_markdown", "write_plot"]


def _code_version() -> str:
    """Short hash of the numerical code a run depends on (wct/linalg.py, functional.py, nn.py, pi.py)."""
    import hashlib

    import wct

    root = Path(wct.__file__).parent
    h = hashlib.sha1()
    for name in ("linalg.py", "functional.py", "nn.py", "classification/pi.py", "classification/models.py"):
        f = root / name
        h.update(f.read_bytes() if f.is_file() else b"")
    return h.hexdigest()[:10]


def _cell_key(method: str, d: int, run: int) -> str:
    return f"{method}|{d}|{run}"


def summarize(runs: list[dict], methods: Sequence[str], group_sizes: Sequence[int]) -> list[dict]:
    """Per (method, d): ``{"method", "group_size", "runs", "successes", "success_rate", "min_error",
    "mean_error", "errors"}``; min/mean over the successful runs' final test errors (None if none)."""
    table = []
    for m in methods:
        for d in group_sizes:
            cell = [r for r in runs if r["method"] == m and r["group_size"] == d]
            ok = [r["final_error"] for r in cell if r["status"] == "ok" and r["final_error"] is not None]
            table.append({
                "method": m,
                "group_size": d,
                "runs": len(cell),
                "successes": len(ok),
                "success_rate": (len(ok) / len(cell)) if cell else None,
                "min_error": min(ok) if ok else None,
                "mean_error": sum(ok) / len(ok) if ok else None,
                "errors": sum(r["status"] == "error" for r in cell),
            })
    return table


@torch.no_grad()
def eigengap_diagnostics(base: TrainConfig, group_sizes: Sequence[int]) -> list[dict]:
    """Spectrum of the ZCA layer's input covariance at initialisation, per group size d.

    For each d: the model of ``base`` (seed ``base.seed``) is built, the first training batch goes through
    the stem convolution, and the per-group covariance over ``B·H·W`` positions (as ZCANorm2d computes it)
    is decomposed. Reported, over all groups: the smallest gap between consecutive eigenvalues relative to
    the mean eigenvalue ``tr(Σ)/d``, the number of eigenvalues below ``1e-6·tr(Σ)/d`` (numerically zero:
    after the layer's ``eps·tr(Σ)/d`` regulariser they are all equal), and ``B·H·W``. Equal or nearly equal
    eigenvalues are where the exact gradient ``1/(λi − λj)`` is unbounded (seed paper Sec. 3).
    """
    from wct import linalg
    from wct.classification.data import build_datasets
    from wct.classification.models import build_model

    train_ds, _, info = build_datasets(base.data)
    n = min(base.optim.batch_size, len(train_ds))
    x = torch.stack([train_ds[i][0] for i in range(n)])
    out = []
    for d in group_sizes:
        cfg = copy.deepcopy(base)
        cfg.model.group_size, cfg.model.method = int(d), "exact"
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, num_classes=info["num_classes"], in_channels=info["in_channels"])
        if not hasattr(model, "conv1"):
            continue
        f = model.conv1(x).double()
        b, c, h, w = f.shape
        if c % d:
            continue
        fg = f.transpose(0, 1).reshape(c // d, d, b * h * w)
        fc = fg - fg.mean(-1, keepdim=True)
        cov = fc @ fc.mT / fg.shape[-1]
        lam, _ = linalg.eigh(cov, backward="exact")
        scale = lam.mean(-1, keepdim=True)
        rel = lam / scale
        out.append({"group_size": int(d), "groups": c // int(d), "positions": b * h * w,
                    "stem_inputs": model.conv1.in_channels * model.conv1.kernel_size[0] * model.conv1.kernel_size[1],
                    "min_relative_gap": float((rel[..., 1:] - rel[..., :-1]).min()),
                    "zero_eigenvalues_per_group": float((rel < 1e-6).sum(-1).double().mean()),
                    "min_relative_eigenvalue": float(rel.min())})
    return out


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:.0f}%" if pct else f"{v:.2f}"


def write_markdown(path: Path, report: dict) -> None:
    """The table in the seed's layout (rows: methods; per d: success rate, min and mean error in %)."""
    ds, methods = report["group_sizes"], report["methods"]
    cells = {(c["method"], c["group_size"]): c for c in report["table"]}
    lines = [f"# {report['title']}", ""]
    lines += report.get("preamble", [])
    lines += ["", "Success rate = runs without non-finite loss/gradient/parameters; min / mean = test error (%) "
              "of the successful runs at the end of training.", ""]
    head = "| Method | " + " | ".join(f"d={d} success | d={d} min | d={d} mean" for d in ds) + " |"
    lines += [head, "|" + "---|" * (1 + 3 * len(ds))]
    for m in methods:
        row = [f"{PAPER_NAMES.get(m, m)} (`{m}`)"]
        for d in ds:
            c = cells[(m, d)]
            sr = f"{c['successes']}/{c['runs']}" if c["runs"] else "—"
            if c["errors"]:
                sr += f" ({c['errors']} error)"
            row += [sr, _fmt(c["min_error"]), _fmt(c["mean_error"])]
        lines.append("| " + " | ".join(row) + " |")
    failed = [r for r in report["runs"] if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed runs", "", "| Method | d | run | status | at (epoch, step) | reason |",
                  "|---|---|---|---|---|---|"]
        for r in failed:
            at = r.get("failed_at") or {}
            lines.append(f"| {r['method']} | {r['group_size']} | {r['run']} | {r['status']} | "
                         f"{at.get('epoch', '—')}, {at.get('step', '—')} | {str(r.get('reason'))[:160]} |")
    for key, what in (("max_grad_norm", "total gradient norm"),
                      ("max_stem_grad_norm", "gradient norm of the stem convolution (behind the ZCA layer)")):
        if not any(r.get(key) is not None for r in report["runs"]):
            continue
        lines += ["", f"## Largest {what} during training (median over runs)", "",
                  "| Method | " + " | ".join(f"d={d}" for d in ds) + " |", "|" + "---|" * (1 + len(ds))]
        for m in methods:
            row = [m]
            for d in ds:
                g = sorted(r[key] for r in report["runs"]
                           if r["method"] == m and r["group_size"] == d and r.get(key) is not None)
                row.append(f"{g[len(g) // 2]:.3g}" if g else "—")
            lines.append("| " + " | ".join(row) + " |")
    diag = report.get("eigengap_diagnostics") or []
    if diag:
        lines += ["", "## Spectrum of the ZCA layer's input at initialisation (first training batch)", "",
                  "| d | groups | B·H·W | stem inputs (C_in·3·3) | eigenvalues ≈ 0 per group | "
                  "min gap / mean eigenvalue | min eigenvalue / mean |", "|---|---|---|---|---|---|---|"]
        for g in diag:
            lines.append(f"| {g['group_size']} | {g['groups']} | {g['positions']} | {g['stem_inputs']} | "
                         f"{g['zero_eigenvalues_per_group']:.1f} | {g['min_relative_gap']:.2e} | "
                         f"{g['min_relative_eigenvalue']:.2e} |")
    versions = sorted({r.get("code_version") for r in report["runs"] if r.get("code_version")})
    if len(versions) > 1:
        lines += ["", f"Note: the runs were made with {len(versions)} versions of the numerical code "
                  f"({', '.join(versions)}; see `code_version` per run in the JSON)."]
    lines += report.get("postscript", [])
    lines += ["", "Reproduce:", "", "```bash", report["command"], "```", "",
              f"Total wall time {report['wall_seconds']:.0f} s, CPU time {report['cpu_seconds']:.0f} s "
              f"({report['environment']})."]
    path.write_text("\n".join(lines) + "\n")


def write_plot(path: Path, report: dict) -> None:
    """PNG: success rate (left) and mean test error with min as markers (right) against d, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = report["group_sizes"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    n = len(report["methods"])
    for i, m in enumerate(report["methods"]):
        cells = [next(c for c in report["table"] if c["method"] == m and c["group_size"] == d) for d in ds]
        jitter = (i - (n - 1) / 2) * 0.015  # keep overlapping lines visible (log-x offset)
        xs = [d * (1 + jitter) for d in ds]
        sr = [100 * c["success_rate"] if c["success_rate"] is not None else math.nan for c in cells]
        mean = [c["mean_error"] if c["mean_error"] is not None else math.nan for c in cells]
        mn = [c["min_error"] if c["min_error"] is not None else math.nan for c in cells]
        label = PAPER_NAMES.get(m, m)
        (line,) = a1.plot(xs, sr, marker="o", label=label)
        a2.plot(xs, mean, marker="o", color=line.get_color(), label=label)
        a2.scatter(xs, mn, marker="v", color=line.get_color(), s=18)
    for a in (a1, a2):
        a.set_xscale("log", base=2)
        a.set_xticks(ds, [str(d) for d in ds])
        a.set_xlabel("ZCA group size d")
        a.grid(alpha=0.3)
    a1.set_ylabel("success rate (%)")
    a1.set_ylim(-5, 105)
    a2.set_ylabel("test error (%) — line: mean, ▼: min")
    a2.legend(fontsize=8)
    fig.suptitle(report["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_study(base: TrainConfig, *, methods: Sequence[str], group_sizes: Sequence[int], runs: int,
              out: str | os.PathLike, command: str = "", resume: bool = False, title: str | None = None,
              configure: Callable[[TrainConfig, str, int, int], TrainConfig] | None = None,
              preamble: Sequence[str] = (), postscript: Sequence[str] = (), diagnostics: bool = False) -> dict:
    """Run the grid and write ``out.json``, ``out.md`` and ``out.png``.

    Args:
        base: the config every run starts from (its ``model.method``, ``model.group_size`` and ``seed`` are
            replaced per run; ``out_dir`` is set to None, so runs write no checkpoints).
        methods: backward methods (each in :data:`wct.classification.models.METHODS`).
        group_sizes: ZCA group sizes d.
        runs: runs per cell (seeds ``base.seed + 0 .. runs - 1``).
        out: output path without suffix.
        command: the command line that reproduces the study (recorded in the report).
        resume: reuse finished runs from an existing ``out.json`` (only runs made with the same numerical
            code, see ``code_version`` in the report; the others are rerun).
        title: report title.
        configure: optional ``(cfg, method, d, run) -> cfg`` hook applied to each run's config (e.g. fault
            injection in tests).
        preamble / postscript: extra markdown lines before / after the table.
        diagnostics: add :func:`eigengap_diagnostics` for every group size to the report.

    Returns:
        The report dict (as written to ``out.json``).

    Raises:
        ValueError: unknown method, empty grid or ``runs < 1``.
    """
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown methods {bad}; expected a subset of {', '.join(METHODS)}")
    if not methods or not group_sizes or runs < 1:
        raise ValueError("need at least one method, one group size and runs >= 1")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    done: dict[str, dict] = {}
    if resume and json_path.is_file():
        old = json.loads(json_path.read_text())
        done = {_cell_key(r["method"], r["group_size"], r["run"]): r for r in old.get("runs", [])}
        print(f"resuming: {len(done)} finished runs in {json_path}")
    wall0, cpu0 = time.time(), time.process_time()
    prev_wall = sum(r.get("seconds", 0.0) for r in done.values())
    prev_cpu = sum(r.get("cpu_seconds", 0.0) for r in done.values())
    report = {
        "title": title or "Classification stability study",
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "methods": list(methods),
        "group_sizes": [int(d) for d in group_sizes],
        "runs_per_cell": runs,
        "base_config": base.to_dict(),
        "environment": f"torch {torch.__version__}, {base.threads or torch.get_num_threads()} thread(s), "
                       f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "preamble": list(preamble),
        "postscript": list(postscript),
        "runs": [],
        "table": [],
        "partial": True,
    }
    total = len(methods) * len(group_sizes) * runs
    version = _code_version()
    report["code_version"] = version
    i = 0
    # run-major order: every cell gets its first run before any cell gets its second (an interrupted study
    # still covers the whole grid)
    for r in range(runs):
        for d in group_sizes:
            for m in methods:
                i += 1
                key = _cell_key(m, int(d), r)
                if key in done and done[key].get("code_version") == version:
                    report["runs"].append(done[key])
                    continue
                cfg = copy.deepcopy(base)
                cfg.model.method, cfg.model.group_size, cfg.seed = m, int(d), base.seed + r
                cfg.out_dir, cfg.tensorboard, cfg.progress = None, False, False
                if configure is not None:
                    cfg = configure(cfg, m, int(d), r)
                t0, c0 = time.time(), time.process_time()
                try:
                    res = train(cfg)
                except Exception as e:  # a bug or a bad cell must not stop the study
                    res = {"status": "error", "reason": f"{type(e).__name__}: {e}", "failed_at": None,
                           "final_error": None, "best_error": None, "max_grad_norm": None, "history": [],
                           "traceback": traceback.format_exc(limit=5)}
                res = dict(res, method=m, group_size=int(d), run=r, seed=cfg.seed, seconds=time.time() - t0,
                           cpu_seconds=time.process_time() - c0, code_version=version)
                report["runs"].append(res)
                fe = res["final_error"]
                print(f"[{i}/{total}] {m:16s} d={d:<3d} run {r}: {res['status']:6s} "
                      f"final error {fe if fe is None else round(fe, 2)}  ({res['seconds']:.1f} s)"
                      + (f"  reason: {res['reason']}" if res["status"] != "ok" else ""), flush=True)
                report["table"] = summarize(report["runs"], methods, group_sizes)
                report["wall_seconds"] = prev_wall + time.time() - wall0
                report["cpu_seconds"] = prev_cpu + time.process_time() - cpu0
                json_path.write_text(json.dumps(report, indent=1))
    report["table"] = summarize(report["runs"], methods, group_sizes)
    report["wall_seconds"] = prev_wall + time.time() - wall0
    report["cpu_seconds"] = prev_cpu + time.process_time() - cpu0
    report["partial"] = False
    if diagnostics:
        report["eigengap_diagnostics"] = eigengap_diagnostics(base, group_sizes)
    json_path.write_text(json.dumps(report, indent=1))
    write_markdown(out.with_suffix(".md"), report)
    write_plot(out.with_suffix(".png"), report)
    return report


def rebuild_report(out: str | os.PathLike, *, base: TrainConfig | None = None, title: str | None = None,
                   preamble: Sequence[str] | None = None, diagnostics: bool = False) -> dict:
    """Rewrite ``out.md`` and ``out.png`` (and the table in ``out.json``) from the runs in ``out.json``.

    Raises:
        FileNotFoundError: ``out.json`` does not exist.
    """
    json_path = Path(out).with_suffix(".json")
    if not json_path.is_file():
        raise FileNotFoundError(f"{json_path} not found (run the study first)")
    report = json.loads(json_path.read_text())
    report["table"] = summarize(report["runs"], report["methods"], report["group_sizes"])
    n_expected = len(report["methods"]) * len(report["group_sizes"]) * report["runs_per_cell"]
    report["partial"] = len(report["runs"]) < n_expected
    if title:
        report["title"] = title
    if preamble is not None:
        report["preamble"] = list(preamble)
    if base is not None and base.threads:  # the runs used the config's thread count
        report["environment"] = re.sub(r"\d+ thread\(s\)", f"{base.threads} thread(s)", report["environment"])
    if diagnostics and base is not None:
        report["eigengap_diagnostics"] = eigengap_diagnostics(base, report["group_sizes"])
    report.setdefault("wall_seconds", sum(r.get("seconds", 0.0) for r in report["runs"]))
    report.setdefault("cpu_seconds", sum(r.get("cpu_seconds", 0.0) for r in report["runs"]))
    json_path.write_text(json.dumps(report, indent=1))
    write_markdown(json_path.with_suffix(".md"), report)
    write_plot(json_path.with_suffix(".png"), report)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m wct.classification.study", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="base YAML config (configs/classification/)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--group-sizes", default="4,8,16,32,64", help="comma-separated ZCA group sizes d")
    ap.add_argument("--runs", type=int, default=3, help="runs per cell (seeds seed .. seed+runs-1)")
    ap.add_argument("--out", required=True, help="output path without suffix (writes .json, .md, .png)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a base-config key, e.g. --set optim.epochs=4")
    ap.add_argument("--resume", action="store_true", help="skip runs already in OUT.json")
    ap.add_argument("--title", help="report title")
    ap.add_argument("--notes", help="markdown file whose text goes above the table (setup, reasoning)")
    ap.add_argument("--diagnostics", action="store_true",
                    help="add the ZCA input spectrum at initialisation (eigengaps) per group size")
    ap.add_argument("--report-only", action="store_true",
                    help="only rebuild OUT.md / OUT.png from the runs in OUT.json (runs nothing)")
    args = ap.parse_args(argv)
    try:
        base = load_config(args.config, args.overrides)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        group_sizes = [int(d) for d in args.group_sizes.split(",") if d.strip()]
    except (FileNotFoundError, ValueError) as e:
        ap.error(str(e))
    preamble = None
    if args.notes:
        notes = Path(args.notes)
        if not notes.is_file():
            ap.error(f"notes file {notes} not found")
        preamble = notes.read_text().splitlines()
    if args.report_only:
        try:
            report = rebuild_report(args.out, base=base, title=args.title, preamble=preamble,
                                    diagnostics=args.diagnostics)
        except FileNotFoundError as e:
            ap.error(str(e))
        print(f"rebuilt {Path(args.out).with_suffix('.md')} and .png from {len(report['runs'])} runs")
        return 0
    argv_ = [a for a in (argv if argv is not None else sys.argv[1:]) if a not in ("--resume", "--report-only")]
    command = "python -m wct.classification.study " + " ".join(shlex.quote(a) for a in argv_)
    try:
        report = run_study(base, methods=methods, group_sizes=group_sizes, runs=args.runs, out=args.out,
                           command=command, resume=args.resume, title=args.title, preamble=preamble or (),
                           diagnostics=args.diagnostics)
    except ValueError as e:
        ap.error(str(e))
    for c in report["table"]:
        print(f"{c['method']:16s} d={c['group_size']:<3d} success {c['successes']}/{c['runs']}  "
              f"min {_fmt(c['min_error'])}  mean {_fmt(c['mean_error'])}")
    print(f"wrote {Path(args.out).with_suffix('.json')}, .md, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
