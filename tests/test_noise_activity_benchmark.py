"""The active-units benchmark (benchmarks/noise_activity.py) on a tiny trained run and a snapshot of it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from pyroseq.runs import RunConfig, train_run

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_each_run_appends_a_line_and_gets_a_panel(tmp_path):
    run = tmp_path / "dssm"
    config = RunConfig(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8,
                       batch_size=8, valid_size=8, steps=2, checkpoint_every=2)  # fmt: skip
    train_run(config, run, progress=False)
    snapshot = tmp_path / "snapshots" / "dssm" / "step-000002"
    snapshot.mkdir(parents=True)
    for name in ("config.json", "checkpoint.pt"):
        shutil.copy(run / name, snapshot / name)
    results, png = tmp_path / "activity.jsonl", tmp_path / "activity.png"
    results.write_text('{"an": "earlier line"}\n')
    command = [sys.executable, str(BENCHMARKS / "noise_activity.py"), str(run), str(snapshot), "--words", "8",
               "--samples", "2", "--out", str(png), "--json", str(results)]  # fmt: skip
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300).stdout
    earlier, *records = [json.loads(line) for line in results.read_text().splitlines()]
    assert earlier == {"an": "earlier line"}
    assert [r["name"] for r in records] == ["dssm", "dssm/step-000002"]
    for record in records:
        assert record["state_dim"] == len(record["dimension_activity"]) == 4
        assert record["num_sequences"] == 8 and record["num_samples"] == 2 and record["step"] == 2
        assert f"{record['name']} (step 2): {record['num_active']} of 4 active" in out
    assert records[0]["dimension_activity"] == records[1]["dimension_activity"]  # same words and draws
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Runs measured before are drawn from their recorded lines, not measured again.
    by_step = tmp_path / "by_step.png"
    again = [sys.executable, str(BENCHMARKS / "noise_activity.py"), str(snapshot), "--words", "8",
             "--samples", "2", "--out", str(png), "--json", str(results),
             "--by-step", str(by_step)]  # fmt: skip
    subprocess.run([*again, "--recorded", "dssm"], check=True, capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r.get("name") for r in lines[3:]] == ["dssm/step-000002"]  # one new line: the snapshot measured
    assert by_step.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = subprocess.run([*again, "--recorded", "other"], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "has no line of other" in missing.stderr
