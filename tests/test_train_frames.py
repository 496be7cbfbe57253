"""Training runs on frames (polyphonic music): ``pyroseq train --data polyphonic`` for the DSSM and the
teacher-forced GRU with Bernoulli outputs, validation per frame, resume, the corpus fingerprint, ``pyroseq
evaluate`` (NLL per frame, next-frame accuracy and F1) and ``sample`` on such a run, the commands that refuse
frames, the DMM preset, and the RNN's frame path."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from click.testing import CliRunner

from pyroseq.cli.main import cli
from pyroseq.data.polyphonic import HIGHEST_PITCH, LOWEST_PITCH, NUM_KEYS, load_polyphonic, pad_frames
from pyroseq.data.vocab import Vocabulary
from pyroseq.errors import ConfigError, DataError
from pyroseq.evaluate.frames import frame_prediction, predictive_key_probs
from pyroseq.flows.gated import ConditionalGatedTransition
from pyroseq.guides import FutureGuide, GaussianGuide, LengthAwareRNN
from pyroseq.infer import Trainer
from pyroseq.models import DSSM, RNNLM
from pyroseq.predictive import check_frames, frame_predictive, sample_frames
from pyroseq.runs.config import RunConfig, dmm_config, resolve_objective
from pyroseq.runs.rundir import load_run
from pyroseq.runs.specs import build_from_specs, guide_spec, model_spec
from tests.test_polyphonic import chord, write_pickle

SMALL = ["--state-dim", "4", "--embed-dim", "8", "--batch-size", "3", "--seed", "0"]
DSSM_SIZES = ["--flow-hidden", "8", "--emitter-hidden", "8", "--guide-hidden", "8"]


def music(tmp_path, name="music.pickle"):
    """A tiny corpus in the published layout: 5 training sequences of 2-4 frames, 2 valid, 2 test."""
    g = torch.Generator().manual_seed(0)

    def sequence(n):
        return [chord(*(60 + int(i) for i in torch.randperm(12, generator=g)[:3])) for _ in range(n)]

    data = {
        "train": [sequence(n) for n in (2, 3, 4, 3, 2)],
        "valid": [sequence(3), sequence(2)],
        "test": [sequence(4), sequence(2)],
    }
    return write_pickle(tmp_path, data, name)


def run(*args):
    out = CliRunner().invoke(cli, [str(a) for a in args])
    return out.exit_code, out.output


def train(tmp_path, out, *extra, steps=4):
    sizes = SMALL + ([] if "rnn" in extra else DSSM_SIZES)
    every = ["--valid-every", 2, "--checkpoint-every", 2]
    code, output = run("train", "--data", "polyphonic", "--file", music(tmp_path), *sizes, "--steps", steps,
                       *every, "--out", out, "--no-progress", *extra)  # fmt: skip
    assert code == 0, output
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def last_json(output):
    return json.loads(output.strip().splitlines()[-1])


# --- training ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["dssm", "rnn"])
def test_a_run_on_frames_validates_per_frame_and_records_the_pickle(tmp_path, model):
    metrics = train(tmp_path, tmp_path / "run", "--model", model, "--emitter-bias", "default")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    # per frame: an untrained model puts about log 2 on each of 88 keys; per sequence (2.5 frames) it
    # would be about 150
    valid = [m["valid_loss"] for m in metrics if "valid_loss" in m]
    assert len(valid) == 2 and all(
        0.5 * NUM_KEYS * math.log(2) < v < 1.5 * NUM_KEYS * math.log(2) for v in valid
    )
    # by default the emitter starts at each key's frequency in the training frames: far below log 2 a key
    started = train(tmp_path, tmp_path / "unigram", "--model", model)
    assert all(m["valid_loss"] < 0.5 * NUM_KEYS * math.log(2) for m in started if "valid_loss" in m)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["data"]["sha256"] == hashlib.sha256((tmp_path / "music.pickle").read_bytes()).hexdigest()
    assert state["vocab"] is None
    assert state["model_spec"]["kwargs"]["emission"] == "bernoulli"
    assert state["model_spec"]["kwargs"]["obs_dim"] == NUM_KEYS


def test_a_word_run_keeps_the_spec_it_had_before_emission_families():
    spec = model_spec(RunConfig(state_dim=4), Vocabulary("ab"))
    assert "emission" not in spec["kwargs"] and spec["kwargs"]["vocab_size"] == 5
    assert guide_spec(RunConfig(), Vocabulary("ab"))["kwargs"]["vocab_size"] == 5


def test_the_validation_figure_is_the_objectives_loss_over_the_frames(tmp_path):
    """valid_loss of a run at step 0 equals its objective's loss on the whole valid split over its frames
    (not over its sequences, nor over frames and keys). By IWAE with 64 particles, whose estimate varies by
    about 1% here (a single draw of the ELBO varies by 5%)."""
    # the model hardly moves
    metrics = train(tmp_path, tmp_path / "run", "--lr", "1e-12", "--objective", "iwae", "--particles", "64",
                    steps=2)  # fmt: skip
    loaded = load_run(tmp_path / "run")
    valid = load_polyphonic(tmp_path / "music.pickle").valid.batch()
    trainer = Trainer(loaded.model, loaded.guide, objective="iwae", particles=64)
    per_frame = []
    for seed in range(4):
        torch.manual_seed(seed)
        per_frame.append(trainer.evaluate_loss(valid) * len(valid) / valid.num_frames)
    assert metrics[-1]["valid_loss"] == pytest.approx(np.mean(per_frame), rel=0.02)


@pytest.mark.parametrize("model", ["dssm", "rnn"])
def test_a_resumed_run_on_frames_equals_an_uninterrupted_one(tmp_path, model):
    # schedules set from --steps (the learning rate's decay, the KL warm-up) held alike in both runs
    same = ["--model", model, "--lr-decay", "1", *(["--kl-warmup", "0"] if model == "dssm" else [])]
    whole = train(tmp_path, tmp_path / "whole", *same, steps=4)
    train(tmp_path, tmp_path / "part", *same, steps=2)
    code, output = run("train", "--resume", "--steps", 4, "--out", tmp_path / "part", "--no-progress")
    assert code == 0, output
    resumed = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [m["loss"] for m in resumed] == [m["loss"] for m in whole]


def test_scheduled_sampling_on_frames_trains_and_logs_its_teacher_probability(tmp_path):
    metrics = train(
        tmp_path, tmp_path / "run", "--model", "rnn", "--training", "scheduled", "--schedule", "linear"
    )
    assert metrics[0]["teacher_prob"] > metrics[-1]["teacher_prob"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top", "10"], "--top applies to --data words only"),
        (["--chunk-length", "10"], "--chunk-length applies to --data text only"),
    ],
)
def test_options_that_do_not_serve_frames_are_refused_in_one_line(tmp_path, args, message):
    code, output = run("train", "--data", "polyphonic", "--file", music(tmp_path), "--steps", 2, *args,
                       "--out", tmp_path / "run")  # fmt: skip
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_polyphonic_data_without_a_file_is_refused(tmp_path):
    code, output = run("train", "--data", "polyphonic", "--steps", 2, "--out", tmp_path / "run")
    assert code == 2 and "needs --source, the pickle" in output


# --- evaluate and sample -----------------------------------------------------------------------------


# the runs that evaluate and sample read: the DSSM, the teacher-forced GRU, and the GRU by professor forcing
RUNS = {
    "dssm": ["--model", "dssm"],
    "rnn": ["--model", "rnn"],
    "professor": ["--model", "rnn", "--training", "professor"],
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("frames")
    runs = {}
    for name, options in RUNS.items():
        pyro.clear_param_store()
        train(tmp_path, tmp_path / name, *options, steps=2)
        runs[name] = tmp_path / name
    return tmp_path, runs


def test_professor_forcing_on_frames_trains_its_discriminator_each_step(trained):
    _, runs = trained
    metrics = [json.loads(line) for line in (runs["professor"] / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(0 <= m["disc_accuracy"] <= 1 and m["disc_loss"] > 0 for m in metrics)


@pytest.mark.parametrize("model", list(RUNS))
def test_evaluate_reports_the_nll_per_frame_and_the_next_frame_scores(trained, model):
    _, runs = trained
    code, output = run("evaluate", runs[model], "-k", 3, "--json")
    assert code == 0, output
    result = last_json(output)
    assert result["num_frames"] == 6 and result["num_sequences"] == 2
    assert "NLL per frame" in output and "F1" in output
    if model == "dssm":
        assert result["num_particles"] == 3 and result["nll_iwae_3"] <= result["nll_elbo"] + 0.5
    else:  # exact: one particle
        assert result["num_particles"] == 1 and "nll_iwae_1" not in result
    assert 0 <= result["prediction"]["f1"] <= 1 and result["prediction"]["num_frames"] == 6


def test_evaluate_refuses_a_pickle_changed_since_training(trained):
    """The fingerprint is the file's SHA-256: even a byte after the pickle's end (the same data) counts."""
    data_dir, runs = trained
    pickle_path = data_dir / "music.pickle"
    original = pickle_path.read_bytes()
    try:
        pickle_path.write_bytes(original + b".")
        code, output = run("evaluate", runs["dssm"], "-k", 2)
        assert code == 2 and "changed since the run was trained" in output
    finally:
        pickle_path.write_bytes(original)


@pytest.mark.parametrize("model", list(RUNS))
def test_sample_draws_frames_as_pitch_lists(trained, model):
    _, runs = trained
    code, output = run("sample", runs[model], "-n", 3, "--max-length", 5, "--json")
    assert code == 0, output
    result = last_json(output)
    assert len(result["samples"]) == 3
    for sample in result["samples"]:
        assert len(sample["pitches"]) == 5
        assert all(LOWEST_PITCH <= p <= HIGHEST_PITCH for frame in sample["pitches"] for p in frame)
    # seeded: the same command draws the same frames
    assert last_json(run("sample", runs[model], "-n", 3, "--max-length", 5, "--json")[1]) == result


@pytest.mark.parametrize(
    "args, message",
    [
        (["complete", "{run}", "--prefix", "ab"], "pyroseq complete works on sequences of symbols"),
        (["sample", "{run}", "--decoder", "greedy"], "--decoder: a model of frames draws each frame"),
        (["evaluate", "{run}", "--estimator", "smc"], "a run on frames is scored by its bounds per frame"),
    ],
)
def test_commands_that_cannot_serve_frames_refuse_in_one_line(trained, args, message):
    _, runs = trained
    code, output = run(*(a.format(run=runs["dssm"]) for a in args))
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1


def test_the_library_refuses_to_decode_or_estimate_words_of_a_model_of_frames():
    from pyroseq.decode import decode
    from pyroseq.evaluate import word_log_probs

    model = DSSM(emission="bernoulli", obs_dim=NUM_KEYS, state_dim=4, flow="diagonal")
    with pytest.raises(ConfigError, match="decoding works on sequences of symbols"):
        decode(model, num=2, max_length=3)
    with pytest.raises(ConfigError, match="a word estimator works on sequences of symbols"):
        word_log_probs(model, None, [[3, 2]])


# --- the RNN on frames ------------------------------------------------------------------------------


def rolls(lengths=(3, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    return pad_frames([torch.randint(0, 2, (n, 6), generator=g).float() for n in lengths])


def test_the_frame_rnn_scores_each_frame_given_the_previous_ones():
    """log q(x) = sum_t log Bernoulli(x_t; sigmoid(W GRU(x_0..x_{t-1}))) with x_0 a silent frame, masked."""
    model = RNNLM(emission="bernoulli", obs_dim=6, state_dim=5, embed_dim=4)
    batch = rolls()
    trace = poutine.trace(model).get_trace(batch.frames, batch.mask)
    trace.compute_log_prob()
    scored = sum(site["log_prob"] for name, site in trace.nodes.items() if name.startswith("w_"))  # (B,)
    with torch.no_grad():
        inputs = torch.cat([torch.zeros(2, 1, 6), batch.frames[:, :-1]], dim=1)
        hidden = model.initial_hidden.reshape(1, -1).expand(2, -1)[None].contiguous()
        outputs, _ = model.rnn(model.embed(inputs), hidden)
        law = torch.distributions.Bernoulli(logits=model.emitter(outputs))
        expected = (law.log_prob(batch.frames).sum(-1) * batch.mask).sum(-1)
    torch.testing.assert_close(scored.detach(), expected)
    assert trace.nodes["w_1"]["fn"].event_shape == (6,)


def test_scheduled_sampling_on_frames_feeds_the_truth_or_the_models_own_frame():
    schedule = {"kind": "linear", "k": 1.0, "c": 1.0, "eps_min": 0.0}
    model = RNNLM(emission="bernoulli", obs_dim=6, state_dim=5, embed_dim=4, schedule=schedule)
    batch = rolls(lengths=(4, 4))
    teacher = model._teacher_forced(batch.frames)[1]
    torch.testing.assert_close(model._scheduled(batch.frames, 1.0)[1], teacher)
    torch.manual_seed(0)
    own = model._scheduled(batch.frames, 0.0)[1]
    assert not torch.allclose(own[:, 1:], teacher[:, 1:])
    torch.testing.assert_close(own[:, 0], teacher[:, 0])  # step 1 is fed the silent frame either way


def test_the_frame_rnn_refuses_symbol_ids_and_a_missing_obs_dim():
    model = RNNLM(emission="bernoulli", obs_dim=6, state_dim=5)
    with pytest.raises(DataError, match="got symbol ids"):
        model(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="needs obs_dim"):
        RNNLM(emission="bernoulli", state_dim=5)
    with pytest.raises(DataError, match="an integer tensor of symbol ids, got torch.float32"):
        RNNLM(vocab_size=8)(torch.zeros(2, 3, 8), torch.ones(2, 3, dtype=torch.bool))


# --- next-frame prediction ---------------------------------------------------------------------------


def test_the_autoregressive_predictive_is_the_emissions_mean_fed_the_true_frames():
    model = RNNLM(emission="bernoulli", obs_dim=6, state_dim=5)
    batch = rolls()
    probs = predictive_key_probs(model, batch)
    torch.testing.assert_close(probs, torch.sigmoid(model._teacher_forced(batch.frames)[1]).detach())


def test_the_filter_predicts_each_frame_given_the_frames_before_it():
    """p(x_1) = E_p[sigmoid(g(h_1))] and p(x_2 | x_1) = E_p[p(x_1 | h_1) sigmoid(g(h_2))] / E_p[p(x_1 | h_1)],
    computed here by importance sampling from the prior, on a random walk h_t = h_{t-1} + xi_t (the gated
    flow with its gate shut and unit scale), whose states stay correlated across steps."""
    torch.manual_seed(0)
    model = DSSM(emission="bernoulli", obs_dim=6, state_dim=3, flow="gated")
    with torch.no_grad():
        flow = model.transition_flow
        flow.gate.layers[-1].weight.zero_()
        flow.gate.layers[-1].bias.fill_(-30.0)
        flow.to_scale.weight.zero_()
        flow.to_scale.bias.fill_(math.log(math.e - 1))  # softplus: 1
        model.emitter.net[-1].weight.mul_(3.0)
    batch = pad_frames([torch.tensor([[1.0, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]])])
    predicted = predictive_key_probs(model, batch, num_particles=50_000)[0]  # (2, 6)
    with torch.no_grad():
        states = model.sample_states(50_000, 2)  # (N, 2, D)
        seen = torch.softmax(model.emitter.distribution(states[:, 0]).log_prob(batch.frames[0, 0]), dim=0)
        keys = torch.sigmoid(model.emitter(states))  # (N, 2, 6)
        first, prior_second = keys[:, 0].mean(0), keys[:, 1].mean(0)
        second = (seen[:, None] * keys[:, 1]).sum(0)
    assert (second - prior_second).abs().max() > 0.015  # seeing x_1 matters to x_2 here
    torch.testing.assert_close(predicted[0], first, atol=0.008, rtol=0)
    torch.testing.assert_close(predicted[1], second, atol=0.008, rtol=0)


def test_the_frame_scores_count_keys_of_real_frames_only(monkeypatch):
    truth = torch.tensor([[[1.0, 1, 0, 0], [0, 0, 1, 1]]])  # (1, 2, 4); the second frame is padding
    batch = pad_frames([truth[0, :1]], max_length=2)
    batch = type(batch)(truth, batch.mask, batch.lengths)
    predicted = torch.tensor([[[0.9, 0.1, 0.8, 0.2], [0.9, 0.9, 0.9, 0.9]]])
    monkeypatch.setattr("pyroseq.evaluate.frames.predictive_key_probs", lambda *a, **k: predicted)
    scores = frame_prediction(None, [batch])
    # TP 1 (key 0), FP 1 (key 2), FN 1 (key 1): accuracy 1/3, precision 1/2, recall 1/2
    assert scores["accuracy"] == pytest.approx(1 / 3)
    assert scores["precision"] == scores["recall"] == scores["f1"] == pytest.approx(0.5)
    assert scores["num_frames"] == 1


def test_sample_frames_draws_binary_frames_from_the_model_alone():
    model = DSSM(emission="bernoulli", obs_dim=6, state_dim=3, flow="diagonal")
    with torch.no_grad():
        model.emitter.net[-1].bias.fill_(-20.0)  # every key almost surely off
    frames = sample_frames(model, num=4, length=7)
    assert frames.shape == (4, 7, 6) and frames.sum() == 0
    with pytest.raises(ConfigError, match="emits symbols"):
        sample_frames(DSSM(vocab_size=8, state_dim=3), num=1, length=2)


# --- the DMM configuration ---------------------------------------------------------------------------


def test_the_dmm_preset_builds_krishnans_model_at_pyros_sizes():
    config = dmm_config(source="jsb_chorales.pickle")
    config.validate()
    model, guide = build_from_specs(model_spec(config, None), guide_spec(config, None))
    assert isinstance(model.transition_flow, ConditionalGatedTransition)
    assert model.state_dim == 100 and model.emitter.net[0].out_features == 100
    assert model.emission == "bernoulli" and model.obs_dim == NUM_KEYS
    assert isinstance(guide, GaussianGuide) and guide.posterior_flow is None and guide.rnn_hidden == 600
    # the example's guide RNN: a plain ReLU RNN (a GRU does three times its recurrent arithmetic)
    assert type(guide.future_rnn) is LengthAwareRNN and guide.future_rnn.nonlinearity == "relu"
    assert (config.lr, config.batch_size, config.flow_hidden) == (3e-4, 20, 200)
    # unclipped: a chorale's gradient norm is in the hundreds, and a clip at 10 held the preset back
    assert config.clip_norm == 0
    # the example's Trace_ELBO, one particle: the DSSM's default (DReG, K = 8) would cost several times a step
    assert (config.objective, resolve_objective(config).particles) == ("elbo", 1)
    # another objective named beside the preset gets its own default K, not the ELBO's one particle
    iwae = resolve_objective(dataclasses.replace(config, objective="iwae"))
    assert (iwae.objective, iwae.particles) == ("iwae", 8)


def test_the_preset_is_a_starting_point_that_given_options_override(tmp_path):
    code, output = run("train", "--preset", "dmm", "--file", music(tmp_path), "--state-dim", 3,
                       "--flow-hidden", 4, "--emitter-hidden", 4, "--guide-hidden", 4, "--embed-dim", 4,
                       "--steps", 1, "--out", tmp_path / "run", "--json", "--no-progress")  # fmt: skip
    assert code == 0, output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["flow"], config["guide"], config["state_dim"], config["lr"]) == (
        "gated",
        "gaussian",
        3,
        3e-4,
    )
    code, output = run("train", "--preset", "dmm", "--resume", "--steps", 2, "--out", tmp_path / "run")
    assert code == 2 and "--preset names a new run's configuration" in output


@pytest.mark.parametrize("cell, module", [("gru", torch.nn.GRU), ("relu", LengthAwareRNN)])
def test_the_guide_cell_is_a_run_option_that_a_loaded_run_keeps(tmp_path, cell, module):
    code, output = run("train", "--model", "dssm", "--data", "polyphonic", "--file", music(tmp_path),
                       "--state-dim", 3, "--guide-hidden", 4, "--guide-cell", cell, "--steps", 1,
                       "--out", tmp_path / "run", "--no-progress")  # fmt: skip
    assert code == 0, output
    assert type(load_run(tmp_path / "run").guide.future_rnn) is module


def test_the_emitter_depth_and_nonlinearity_are_run_options_that_a_loaded_run_keeps(tmp_path):
    """Pyro's DMM example's emitter (two ReLU layers): built, saved in the spec, rebuilt on load with the
    same weights; a run of the default emitter keeps the spec it had before the options existed."""
    code, output = run("train", "--model", "dssm", "--data", "polyphonic", "--file", music(tmp_path),
                       "--state-dim", 3, "--emitter-hidden", 5, "--emitter-layers", 2, "--emitter-activation",
                       "relu", "--steps", 1, "--out", tmp_path / "run", "--no-progress")  # fmt: skip
    assert code == 0, output
    net = load_run(tmp_path / "run").model.emitter.net
    assert [type(m) for m in net] == [torch.nn.Linear, torch.nn.ReLU] * 2 + [torch.nn.Linear]
    assert [m.out_features for m in net[::2]] == [5, 5, NUM_KEYS]
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert saved["model_spec"]["kwargs"]["emitter_layers"] == 2
    torch.testing.assert_close(net[2].weight, saved["model"]["emitter.net.2.weight"])
    default = model_spec(RunConfig(data="polyphonic", source="x.pickle"), None)["kwargs"]
    assert "emitter_layers" not in default and "emitter_activation" not in default


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "rnn", "--emitter-layers", "2"], "--emitter-layers applies to --model dssm only"),
        (["--emitter-hidden", "0", "--emitter-activation", "relu"], "no effect on a linear emitter"),
    ],
)
def test_the_emitter_options_are_refused_where_they_have_no_effect(tmp_path, args, message):
    code, output = run("train", "--data", "polyphonic", "--file", music(tmp_path), *args, "--steps", 1,
                       "--out", tmp_path / "run")  # fmt: skip
    assert code == 2 and message in output, output


def test_the_guide_cell_is_refused_where_it_has_no_effect(tmp_path):
    code, output = run("train", "--model", "rnn", "--data", "polyphonic", "--file", music(tmp_path),
                       "--guide-cell", "relu", "--steps", 1, "--out", tmp_path / "run")  # fmt: skip
    assert code == 2 and "--guide-cell" in output and "model dssm only" in output
    with pytest.raises(ConfigError, match="rnn_cell"):
        FutureGuide(obs_dim=6, state_dim=3, rnn_cell="lstm")


# --- predictive checks -------------------------------------------------------------------------------


def full_dssm():
    """A DSSM of 6 keys that almost surely plays all of them, whatever its state."""
    model = DSSM(emission="bernoulli", obs_dim=6, state_dim=3, flow="diagonal")
    with torch.no_grad():
        model.emitter.net[-1].bias.fill_(20.0)
    return model, FutureGuide(obs_dim=6, state_dim=3)


def test_the_frame_check_compares_notes_per_frame_and_polyphony_with_the_data():
    model, guide = full_dssm()
    batch = rolls(lengths=(3, 2))
    summary, idata = check_frames(model, guide, batch, num_samples=4)
    notes = batch.frames.sum(-1)[batch.mask]
    assert summary["kind"] == "posterior" and summary["num_frames"] == 5
    assert summary["observed_mean_notes"] == pytest.approx(float(notes.double().mean()))
    assert summary["observed_mean_polyphony"] == pytest.approx(
        float(batch.frames.sum(-1).amax(-1).double().mean())
    )
    # every real frame replicated with all 6 keys on (the padded step counts for nothing)
    assert summary["replicated_mean_notes"] == 6 and summary["p_value_mean_notes"] == 1
    assert summary["replicated_mean_polyphony"] == 6
    assert idata.posterior_predictive["notes"].shape == (1, 4, 5)  # chain, draw, the real frames
    assert idata.observed_data["polyphony"].shape == (2,)
    assert idata.log_likelihood["sequence"].shape == (1, 4, 2)
    assert idata.posterior["h"].shape == (1, 4, 2, 3, 3)


def test_the_posterior_predictive_of_frames_scores_each_draw_of_the_states():
    model, guide = full_dssm()
    batch = rolls(lengths=(3, 2))
    draws = frame_predictive(model, guide, batch, num_samples=3)
    law = model.emitter.distribution(draws.states)
    expected = (law.log_prob(batch.frames) * batch.mask).sum(-1).double()
    torch.testing.assert_close(draws.log_likelihood, expected)
    assert (draws.frames[:, ~batch.mask] == 0).all()  # nothing after a sequence's end


def test_a_model_without_states_replicates_frames_from_its_prior():
    model = RNNLM(emission="bernoulli", obs_dim=6, state_dim=5)
    draws = frame_predictive(model, None, rolls(lengths=(3, 2)), num_samples=2)
    assert draws.kind == "prior" and draws.log_likelihood is None and draws.frames.shape == (2, 2, 3, 6)


@pytest.mark.parametrize("model", ["dssm", "rnn"])
def test_check_on_a_run_on_frames_plots_notes_per_frame(trained, model):
    _, runs = trained
    code, output = run("check", runs[model], "--words", 2, "--samples", 3, "--json")
    assert code == 0, output
    summary = last_json(output)
    assert summary["num_sequences"] == 2 and "notes per frame" in output
    assert summary["kind"] == ("posterior" if model == "dssm" else "prior")
    assert (runs[model] / f"ppc_{summary['kind']}_notes.png").is_file()


def test_a_run_on_frames_does_not_start_from_a_word_runs_weights(tmp_path):
    words = tmp_path / "words"
    code, output = run("train", "--data", "words", "--source", "sample", "--state-dim", 4, "--steps", 1,
                       "--batch-size", 2, "--out", words)  # fmt: skip
    assert code == 0, output
    code, output = run("train", "--data", "polyphonic", "--file", music(tmp_path), "--init-from", words,
                       "--steps", 1, "--out", tmp_path / "frames")  # fmt: skip
    assert code == 2 and "(29 against frames)" in output, output


def test_a_batch_of_symbols_and_one_of_frames_are_both_sequence_batches():
    from pyroseq.data.batch import SequenceBatch, pad_batch

    words, frames = pad_batch([[3, 2], [4, 5, 2]]), rolls()
    assert isinstance(words, SequenceBatch) and isinstance(frames, SequenceBatch)
    assert words.observations is words.ids and frames.observations is frames.frames


@pytest.mark.parametrize("jit, pad_to", [(False, "batch"), (True, "split")])
def test_a_run_pads_each_batch_to_its_longest_chorale_unless_a_trace_needs_one_shape(tmp_path, jit, pad_to):
    from pyroseq.runs.train import _training_data

    config = RunConfig(data="polyphonic", source=str(music(tmp_path)), jit=jit, batch_size=2)
    sampler, *_ = _training_data(config, load_polyphonic(config.source), torch.device("cpu"), rank=0)
    assert sampler.pad_to == pad_to


@pytest.mark.parametrize("guide_class", [FutureGuide, GaussianGuide])
def test_frames_in_double_precision_score_as_in_single(guide_class):
    """numpy's float64 frames, as a user builds them, give the ELBO of the same frames in float32."""
    model = DSSM(emission="bernoulli", obs_dim=NUM_KEYS, state_dim=3, flow_hidden=4, emitter_hidden=4)
    guide = guide_class(obs_dim=NUM_KEYS, state_dim=3, rnn_hidden=4)
    frames = torch.from_numpy((np.random.default_rng(0).random((2, 5, NUM_KEYS)) < 0.1).astype(np.float64))
    mask = torch.ones(2, 5, dtype=torch.bool)
    losses = []
    for given in (frames, frames.float()):
        pyro.set_rng_seed(0)
        losses.append(pyro.infer.Trace_ELBO().loss(model, guide, given, mask))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
