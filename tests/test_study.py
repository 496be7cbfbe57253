"""The study harness's plateau rule and configuration selection (benchmarks/study.py)."""

import runpy
from pathlib import Path

import pytest

STUDY = runpy.run_path(str(Path(__file__).parent.parent / "benchmarks" / "study.py"))


def test_plateau_needs_patience_validations_without_a_real_improvement():
    plateaued = STUDY["plateaued"]
    falling = [(i * 250, 20.0 - i) for i in range(10)]
    assert not plateaued(falling, patience=3, tolerance=0.02)
    flat = falling + [(2500 + i * 250, 11.0 - 0.005 * i) for i in range(3)]  # gains below the tolerance
    assert plateaued(flat, patience=3, tolerance=0.02)
    assert not plateaued(flat, patience=3, tolerance=0.001)  # the same gains count at a finer tolerance
    assert not plateaued(flat[:3], patience=3, tolerance=0.02)  # too few validations to judge


def test_selection_by_name_and_group_and_every_flow_name_exists():
    from pyroseq.flows import FLOWS

    select, configs = STUDY["select"], STUDY["CONFIGS"]
    assert [c.name for c in select(["dssm-tri-d16"])] == ["dssm-tri-d16"]
    flows = select(["flows"])
    assert flows and all("flows" in c.groups for c in flows)
    with pytest.raises(SystemExit, match="neither a configuration nor a group"):
        select(["nonsense"])
    for config in configs.values():
        args = list(config.args)
        if "--flow" in args:
            assert all(part in FLOWS for part in args[args.index("--flow") + 1].split("+"))


def test_grid_table_has_one_run_per_cell_and_leaves_out_other_emitters_and_rates():
    grid_table = STUDY["_grid_table"]
    rows = [
        {"name": "dssm-cp4-elbo-kw-d16", "ce": 13.029},
        {"name": "dssm-cp4-elbo-kw-lr6-d16", "ce": 13.495},  # same flows, another learning rate
        {"name": "dssm-cp4-elbo-kw-linear-d16", "ce": 13.364},  # same flows, a linear emitter
        {"name": "dssm-tri-elbo-kw-d16", "ce": 13.413},
        {"name": "dssm-cp4-elbo-kw-d8", "ce": 13.139},  # another state size
    ]
    table = grid_table(rows, "ELBO, KL warm-up 1000 steps")
    assert "| coupling+coupling (h64) | 13.029 |" in table
    assert "| triangular (h64) | 13.413 |" in table
    assert "13.495" not in table and "13.364" not in table and "13.139" not in table
    with pytest.raises(ValueError, match="two runs for the grid cell"):
        grid_table([*rows, {"name": "dssm-cp4-elbo-kw-d16", "ce": 1.0}], "ELBO, KL warm-up 1000 steps")


def test_a_configuration_started_from_another_names_its_run_and_waits_for_it(tmp_path, capsys):
    import argparse

    configs = STUDY["CONFIGS"]
    started = [c for c in configs.values() if c.init_from is not None]
    assert started and all(c.init_from in configs for c in started)
    config = configs["dssm-cp4-iwae64-from16-d16"]
    command = config.train_command(tmp_path / config.name, resume=False)
    assert command[command.index("--init-from") + 1] == str(tmp_path / "dssm-cp4-iwae16-kw-long-d16")
    args = argparse.Namespace(root=tmp_path, names=[config.name], minutes=None, jobs=1, max_steps=None,
                              lr_decay=None, poll=0.01, snapshot_every=0, patience=6,
                              tolerance=0.02)  # fmt: skip
    STUDY["run"](args)  # its source has not run here: nothing may start
    out = capsys.readouterr().out
    assert "skipped until dssm-cp4-iwae16-kw-long-d16" in out and "started at step" not in out


def test_a_finished_run_is_recorded_in_the_results_file_with_its_figures(tmp_path):
    import json

    results = tmp_path / "results" / "study.jsonl"
    STUDY["main"](["--root", str(tmp_path / "root"), "run", "rnn-default-d8", "--max-steps", "3", "--poll",
                   "0.2", "--snapshot-every", "0", "--record", "--results", str(results)])  # fmt: skip
    (row,) = [json.loads(line) for line in results.read_text().splitlines()]
    assert row["name"] == "rnn-default-d8" and row["steps"] == 3 and row["done"] == "max_steps"
    assert row["estimator"] == "exact" and 10.0 < row["ce"] < 30.0 and 0.0 <= row["real_words"] <= 1.0
    assert row["args"][:8] == ["--data", "words", "--top", "10000", "--model", "rnn", "--state-dim", "8"]
    assert row["seconds"] > 0 and 0 < row["cpu_seconds"] < 4 * row["seconds"]


def test_a_run_with_a_budget_stops_there_done_under_its_longer_learning_rate_horizon(tmp_path):
    import json

    config = STUDY["Config"]("t-budget", ("--model", "rnn", "--state-dim", "4"), ("t",), 100_000, budget=20)
    STUDY["CONFIGS"][config.name] = config
    try:
        STUDY["main"](["--root", str(tmp_path), "run", config.name, "--poll", "0.2", "--snapshot-every", "0"])
    finally:
        del STUDY["CONFIGS"][config.name]
    progress = json.loads((tmp_path / "t-budget.study.json").read_text())
    assert progress["done"] and progress["reason"] == "budget"
    assert 20 <= progress["segments"][-1]["end_step"] < 100_000
    run_config = json.loads((tmp_path / "t-budget" / "config.json").read_text())
    assert run_config["steps"] == 100_000  # the horizon the learning rate decays over


def test_a_continuing_configuration_copies_the_finished_run_and_resumes_it_under_its_own_budget(tmp_path):
    import dataclasses
    import json

    first = STUDY["Config"]("t-first", ("--model", "rnn", "--state-dim", "4"), ("t",), 100_000, budget=20)
    later = dataclasses.replace(first, name="t-later", budget=400, continues="t-first")
    STUDY["CONFIGS"].update({first.name: first, later.name: later})
    run = ["--root", str(tmp_path), "run", "--poll", "0.2", "--snapshot-every", "0"]
    try:
        STUDY["main"]([*run, later.name])  # its source has not run: nothing starts
        assert not (tmp_path / "t-later").exists()
        STUDY["main"]([*run, first.name])
        STUDY["main"]([*run, later.name])
    finally:
        del STUDY["CONFIGS"][first.name], STUDY["CONFIGS"][later.name]
    read = STUDY["read_metrics"]
    first_steps = [r["step"] for r in read(tmp_path / "t-first") if "loss" in r]
    later_steps = [r["step"] for r in read(tmp_path / "t-later") if "loss" in r]
    assert 20 <= first_steps[-1] < 400 <= later_steps[-1]  # the source is left as it was
    assert later_steps[: len(first_steps)] == first_steps  # a continuation, not a new run
    assert later_steps == list(range(1, later_steps[-1] + 1))
    progress = json.loads((tmp_path / "t-later.study.json").read_text())
    assert progress["reason"] == "budget" and len(progress["segments"]) == 2
    assert progress["segments"][1]["start_step"] == first_steps[-1]  # resumed where the source stopped
    assert progress["segments"][0] == json.loads((tmp_path / "t-first.study.json").read_text())["segments"][0]


def test_a_resumed_preset_run_is_not_given_its_preset_again(tmp_path):
    config = STUDY["CONFIGS"]["jsb-dmm-long"]
    fresh = config.train_command(tmp_path, resume=False)
    resumed = config.train_command(tmp_path, resume=True)
    assert fresh[fresh.index("--preset") + 1] == "dmm"
    assert "--preset" not in resumed and resumed[-1] == "--resume"
    assert [a for a in fresh if a != "dmm" and a != "--preset"] == resumed[:-1]
