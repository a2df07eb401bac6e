"""Study runner: a 2x2 grid with 1 run each writes the table; a forced failure is recorded and the study goes on."""

from __future__ import annotations

import json

import pytest
import yaml

from wct.classification import study


def test_study_grid_table_and_forced_failure(tiny_config, tmp_path):
    def inject(cfg, method, d, run):
        if method == "exact" and d == 8:
            cfg.fault_nonfinite_grad_step = 0  # this run's gradient is NaN at its first step
        return cfg

    out = tmp_path / "study"
    report = study.run_study(tiny_config, methods=["exact", "taylor"], group_sizes=[4, 8], runs=1, out=out,
                             command="test", configure=inject, title="tiny")
    assert not report["partial"]
    runs = {(r["method"], r["group_size"]): r for r in report["runs"]}
    assert len(runs) == 4
    assert runs[("exact", 8)]["status"] == "failed" and "non-finite gradient" in runs[("exact", 8)]["reason"]
    for key in [("exact", 4), ("taylor", 4), ("taylor", 8)]:  # the study continued after the failure
        assert runs[key]["status"] == "ok" and runs[key]["final_error"] is not None
    cells = {(c["method"], c["group_size"]): c for c in report["table"]}
    assert cells[("exact", 8)]["success_rate"] == 0.0 and cells[("exact", 8)]["mean_error"] is None
    assert cells[("taylor", 8)]["success_rate"] == 1.0
    assert cells[("taylor", 8)]["min_error"] == cells[("taylor", 8)]["mean_error"] == runs[("taylor", 8)]["final_error"]

    assert json.loads(out.with_suffix(".json").read_text())["table"] == report["table"]
    md = out.with_suffix(".md").read_text()
    assert "| SVD (`exact`) | 1/1 |" in md and "| 0/1 | — | — |" in md and "## Failed runs" in md
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_study_cli_resume_and_errors(tiny_config, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config.to_dict()))
    out = tmp_path / "s"
    args = ["--config", str(cfg), "--methods", "pi,clip", "--group-sizes", "8", "--runs", "1", "--out", str(out)]
    assert study.main(args) == 0
    first = json.loads(out.with_suffix(".json").read_text())
    assert [r["status"] for r in first["runs"]] == ["ok", "ok"]
    assert first["command"].startswith("python -m wct.classification.study --config")
    assert study.main(args + ["--resume"]) == 0  # nothing to redo: the same runs are reused
    second = json.loads(out.with_suffix(".json").read_text())
    assert second["runs"] == first["runs"] and "--resume" not in second["command"]
    with pytest.raises(SystemExit):
        study.main(["--config", str(cfg), "--methods", "svd", "--out", str(out)])
    assert "unknown methods" in capsys.readouterr().err


def test_eigengap_diagnostics_rank_of_the_stem(tiny_config):
    # a 3x3 stem on 1-channel images has 9 inputs: its 16 outputs span at most 9 dimensions
    cfg = tiny_config
    cfg.model.width = 16
    diag = {g["group_size"]: g for g in study.eigengap_diagnostics(cfg, [4, 16])}
    assert diag[16]["stem_inputs"] == 9 and diag[16]["zero_eigenvalues_per_group"] == 7
    assert diag[16]["min_relative_gap"] < 1e-10
    assert diag[4]["zero_eigenvalues_per_group"] == 0 and diag[4]["min_relative_gap"] > 1e-4


def test_report_only_rebuilds_from_json(tiny_config, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config.to_dict()))
    out = tmp_path / "s"
    base = ["--config", str(cfg), "--methods", "taylor", "--group-sizes", "4", "--runs", "1", "--out", str(out)]
    with pytest.raises(SystemExit):
        study.main(base + ["--report-only"])  # no JSON yet: a clear error
    assert study.main(base) == 0
    notes = tmp_path / "notes.md"
    notes.write_text("Setup notes here.")
    assert study.main(base + ["--report-only", "--notes", str(notes), "--diagnostics"]) == 0
    md = out.with_suffix(".md").read_text()
    assert "Setup notes here." in md and "Spectrum of the ZCA layer" in md and "| SVD-Taylor (`taylor`) | 1/1 |" in md
