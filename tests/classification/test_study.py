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
