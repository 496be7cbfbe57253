"""The reference run of Pyro's DMM example beside a pyroseq run (benchmarks/dmm_reference.py), with a stand-in
for the example that logs as it does."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
JSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsb_chorales.pickle"

STAND_IN = """
import argparse, logging
import pyro.contrib.examples.polyphonic_data_loader as poly
p = argparse.ArgumentParser(); p.add_argument("-n", type=int); p.add_argument("-l")
args = p.parse_args()
logging.basicConfig(level=logging.DEBUG, format="%(message)s", filename=args.l, filemode="w")
data = poly.load_data(None)  # the shim's: the chorales of --file
assert data["train"]["sequences"].shape[0] == 229 and data["test"]["sequences"].shape[-1] == 88
for epoch in range(args.n):
    logging.info("[training epoch %04d]  %.4f \\t\\t\\t\\t(dt = %.3f sec)" % (epoch, 20.0, 0.01))
    if epoch > 0 and epoch % 50 == 0:
        logging.info("[val/test epoch %04d]  %.4f  %.4f" % (epoch, 10.0 - epoch / 100, 11.0 - epoch / 100))
"""


@pytest.mark.skipif(not JSB.is_file(), reason="needs ../shared/data/jsb_chorales.pickle")
def test_the_examples_curve_is_read_and_set_beside_the_runs_nearest_validations(tmp_path):
    dmm = tmp_path / "dmm.py"
    dmm.write_text(STAND_IN)
    run = tmp_path / "run"
    run.mkdir()
    records = [{"step": s, "loss": 1.0} for s in range(1, 5)]
    records += [
        {"step": 588, "valid_loss": 9.4},
        {"step": 1200, "valid_loss": 8.9},
        {"step": 1332, "valid_loss": 1},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "reference.jsonl"
    command = [sys.executable, str(BENCHMARKS / "dmm_reference.py"), "--dmm", str(dmm), "--file", str(JSB),
               "--epochs", "150", "--run", str(run), "--out", str(out)]  # fmt: skip
    printed = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["epochs"] == 150 and row["pyro"] == [[50, 9.5, 10.5], [100, 9.0, 10.0], [150, 8.5, 9.5]]
    # the run's validation nearest each epoch, within 10 epochs (12 steps an epoch): 49 for 50, 100 for 100,
    # and none for 150 (its last validation, at epoch 111, is too far)
    assert row["pyroseq"] == [[50, 49.0, 9.4], [100, 100.0, 8.9]]
    assert row["pyro_seconds"] > 0 and "  100       9.000     10.000          8.900" in printed

    figure = tmp_path / "reference.png"
    replot = [sys.executable, str(BENCHMARKS / "dmm_reference.py"), "--replot", "--out", str(out)]
    subprocess.run([*replot, "--plot", str(figure), "--also", str(run)], check=True)
    assert figure.read_bytes()[:4] == b"\x89PNG"
    refused = subprocess.run(replot, capture_output=True, text=True)
    assert refused.returncode == 2 and "--replot draws --plot" in refused.stderr


@pytest.mark.skipif(not JSB.is_file(), reason="needs ../shared/data/jsb_chorales.pickle")
def test_a_kept_log_outlasts_the_run_and_its_curve_so_far_is_recorded(tmp_path):
    dmm = tmp_path / "dmm.py"
    dmm.write_text(STAND_IN)
    log, out = tmp_path / "kept" / "dmm.log", tmp_path / "reference.jsonl"
    script = [sys.executable, str(BENCHMARKS / "dmm_reference.py"), "--out", str(out), "--log", str(log)]
    subprocess.run([*script, "--dmm", str(dmm), "--file", str(JSB), "--epochs", "100"], check=True)
    assert "[val/test epoch 0100]" in log.read_text()
    # a run cut off after epoch 50: its log, recorded as it stands
    log.write_text(log.read_text().split("[training epoch 0051]")[0])
    subprocess.run([*script, "--from-log"], check=True)
    first, cut = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["pyro"] == [[50, 9.5, 10.5], [100, 9.0, 10.0]]
    assert cut["epochs"] == 50 and cut["pyro"] == [[50, 9.5, 10.5]] and cut["log"] == str(log)
    log.write_text("[training epoch 0000]  20.0\n")
    refused = subprocess.run([*script, "--from-log"], capture_output=True, text=True)
    assert refused.returncode == 2 and "holds no validation yet" in refused.stderr
