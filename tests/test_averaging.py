"""Tests of the parameters' moving average (pyroseq.infer.averaging): the recursion's known values, the swap
in and out, plain SVI over Pyro's param store (pyroseq modules and an autoguide), the Trainer's and a run
directory's averaged weights, and a noisy problem whose answer is known."""

from __future__ import annotations

import itertools
import runpy
from pathlib import Path

import pyro
import pyro.optim
import pytest
import torch
from click.testing import CliRunner
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from pyroseq.cli.main import cli
from pyroseq.errors import CheckpointError, ConfigError
from pyroseq.infer import ParameterEMA, Trainer
from pyroseq.runs import RunConfig, load_run, train_run
from tests.test_objectives import BATCH, dssm_and_guide
from tests.test_train import TINY, interrupt_after, params


def test_the_average_follows_the_recursion_with_and_without_the_ramp():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    values = [torch.full((3,), float(v), dtype=torch.float64) for v in (1.0, -2.0, 5.0, 0.5, 3.0)]
    for ramp in (False, True):
        ema = ParameterEMA([torch.nn.ParameterList([p])], decay=0.8, ramp=ramp)
        expected = None
        for n, v in enumerate(values):
            p.data.copy_(v)
            ema.update()
            d = min(0.8, (1 + n) / (10 + n)) if ramp else 0.8
            expected = v.clone() if expected is None else d * expected + (1 - d) * v  # the first: its value
        torch.testing.assert_close(ema.averages["0.0"], expected, rtol=0, atol=1e-12)
        assert ema.num_updates == len(values)


def test_applied_swaps_the_averages_in_and_the_raw_values_back_after_an_exception():
    layer = torch.nn.Linear(2, 2)
    ema = ParameterEMA(layer, decay=0.5, ramp=False)
    ema.update()
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update()
    raw, weight = layer.weight.detach().clone(), layer.weight
    with pytest.raises(RuntimeError, match="inside"), ema.applied():
        assert layer.weight is weight  # in place: optimisers and the param store keep their tensors
        torch.testing.assert_close(layer.weight.detach(), raw - 0.5)
        raise RuntimeError("inside")
    torch.testing.assert_close(layer.weight.detach(), raw, rtol=0, atol=0)


def test_plain_svi_over_the_param_store_averages_a_dssm_and_its_guide():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, guide = dssm_and_guide()
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 1e-2}), Trace_ELBO())
    ema = ParameterEMA(decay=0.9)  # Pyro's param store
    for _ in range(5):
        svi.step(BATCH.ids, BATCH.mask)
        ema.update()
    store = dict(pyro.get_param_store().named_parameters())
    assert set(ema.averages) == set(store) and len(store) == len(list(model.parameters())) + len(
        list(guide.parameters())
    )
    name, avg = next((n, a) for n, a in ema.averages.items() if not torch.equal(a, store[n]))
    with ema.applied():
        # the store's tensors are the modules' own: the modules compute with the averages
        by_id = {id(p): p for p in [*model.parameters(), *guide.parameters()]}
        assert id(store[name]) in by_id
        torch.testing.assert_close(by_id[id(store[name])].detach(), avg, rtol=0, atol=0)
        svi.evaluate_loss(BATCH.ids, BATCH.mask)  # runs on them
    assert not torch.equal(store[name].detach(), avg)


def test_an_autoguides_parameters_join_the_average_when_they_appear():
    pyro.clear_param_store()

    def model(x):
        loc = pyro.sample("loc", pyro.distributions.Normal(0.0, 1.0))
        with pyro.plate("n", len(x)):
            pyro.sample("x", pyro.distributions.Normal(loc, 1.0), obs=x)

    guide = AutoNormal(model)
    ema = ParameterEMA(guide, decay=0.9)
    ema.update()  # before its first call the autoguide has no parameter
    assert ema.averages == {}
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    svi.step(torch.ones(4))
    ema.update()
    assert set(ema.averages) == {name for name, _ in guide.named_parameters()} != set()


def test_on_a_noisy_quadratic_the_average_is_nearer_the_optimum_than_the_last_iterate():
    """SGD on E[(theta - (mu + noise))^2 / 2] wanders around mu by about lr^(1/2) * sd; the average
    settles nearer: a model fit to data whose answer is known."""
    torch.manual_seed(0)
    mu = torch.linspace(-1.0, 1.0, 50)
    theta = torch.nn.Parameter(torch.zeros(50))
    opt = torch.optim.SGD([theta], lr=0.1)
    ema = ParameterEMA([torch.nn.ParameterList([theta])], decay=0.98)
    for _ in range(2000):
        opt.zero_grad()
        (0.5 * (theta - (mu + torch.randn(50))) ** 2).sum().backward()
        opt.step()
        ema.update()
    last = (theta.detach() - mu).pow(2).mean()
    with ema.applied():
        averaged = (theta.detach() - mu).pow(2).mean()
    assert averaged < 0.3 * last  # lr / (2 - lr) = 0.053 per coordinate, the average's about 0.004


def test_bad_decays_and_states_of_another_model_are_refused():
    for decay in (1.0, -0.1, float("nan"), "0.9", None, True, [0.9]):
        with pytest.raises(ConfigError, match=r"decay must be a number in \[0, 1\), got"):
            ParameterEMA(decay=decay)
    with pytest.raises(ConfigError, match=r"ema must be a number in \[0, 1\) \(0: no average\)"):
        Trainer(*dssm_and_guide(), ema=1.0)
    for ema in (1.5, "0.9"):
        with pytest.raises(ConfigError, match="ema must be a number in"):
            RunConfig(**TINY, ema=ema).validate()
    with pytest.raises(ConfigError, match=r"a sequence holding a Parameter: pass the module itself"):
        ParameterEMA(torch.nn.Linear(2, 2).parameters())
    small, large = torch.nn.Linear(2, 2), torch.nn.Linear(3, 2)
    ema = ParameterEMA(small)
    ema.update()
    with pytest.raises(CheckpointError, match="'weight' has shape \\(2, 2\\), the parameter \\(2, 3\\)"):
        ParameterEMA(large).load_state_dict(ema.state_dict())
    with pytest.raises(CheckpointError, match="not a ParameterEMA state: it has no averages"):
        ParameterEMA(small).load_state_dict({"decay": 0.9})
    with pytest.raises(CheckpointError, match="not a ParameterEMA state: NoneType"):
        ParameterEMA(small).load_state_dict(None)


def test_a_tensor_reached_twice_has_one_average_and_gets_its_raw_value_back():
    shared = torch.nn.Linear(2, 2)
    a, b = torch.nn.Sequential(shared), torch.nn.Sequential(shared, torch.nn.Linear(2, 1))
    ema = ParameterEMA([a, b], decay=0.5, ramp=False)
    ema.update()
    with torch.no_grad():
        shared.weight.fill_(4.0)
    ema.update()
    assert "1.0.weight" not in ema.averages and "0.0.weight" in ema.averages  # one average, the first name
    with ema.applied():
        assert not torch.equal(shared.weight, torch.full((2, 2), 4.0))
    torch.testing.assert_close(shared.weight.detach(), torch.full((2, 2), 4.0), rtol=0, atol=0)


def test_a_generator_of_modules_is_read_once_and_names_must_be_unique():
    lin = torch.nn.Linear(2, 1)
    ema = ParameterEMA((m for m in [lin]), decay=0.5, ramp=False)
    for v in (0.0, 10.0, 20.0):
        with torch.no_grad():
            lin.weight.fill_(v)
        ema.update()
    torch.testing.assert_close(ema.averages["0.weight"], torch.full((1, 2), 12.5))
    a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)  # two modules, the same names
    clash = ParameterEMA(lambda: itertools.chain(a.named_parameters(), b.named_parameters()))
    with pytest.raises(ConfigError, match="two parameters of the source are named 'weight'"):
        clash.update()


def test_the_average_follows_its_parameters_to_another_dtype():
    lin = torch.nn.Linear(2, 1)
    ema = ParameterEMA(lin, decay=0.5, ramp=False)
    ema.update()
    lin.double()
    with torch.no_grad():
        lin.weight.fill_(2.0)
    ema.update()
    assert ema.averages["weight"].dtype == torch.float64
    other = ParameterEMA(lin)
    f32 = torch.nn.Linear(2, 1)
    fresh = ParameterEMA(f32)
    fresh.update()
    other.load_state_dict(fresh.state_dict())
    assert other.averages["weight"].dtype == torch.float64  # the parameter's own dtype
    other.update()


def test_the_trainer_validates_and_saves_the_averages_and_resumes_from_the_raw_weights():
    pyro.set_rng_seed(0)
    model, guide = dssm_and_guide()
    trainer = Trainer(model, guide, ema=0.5, kl_warmup=0, total_steps=10)
    for _ in range(3):
        trainer.step(BATCH)
    state = trainer.state_dict()
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(state["raw"]["model"][k], raw[k]) for k in raw)
    assert any(not torch.equal(state["model"][k], raw[k]) for k in raw)  # the averages
    with trainer.averaged():
        assert all(torch.equal(model.state_dict()[k], state["model"][k]) for k in raw)
        pyro.set_rng_seed(1)
        by_hand = float(trainer.loss.loss(model, guide, BATCH.ids, BATCH.mask)) / len(BATCH)
    pyro.set_rng_seed(1)
    assert trainer.evaluate_loss(BATCH) == pytest.approx(by_hand, rel=1e-6)
    assert all(torch.equal(model.state_dict()[k], raw[k]) for k in raw)  # swapped back

    with trainer.averaged():  # a checkpoint written inside the block still resumes from the raw weights
        inside = trainer.state_dict()
    assert all(torch.equal(inside["raw"]["model"][k], raw[k]) for k in raw)
    assert all(torch.equal(inside["model"][k], state["model"][k]) for k in raw)
    assert all(torch.equal(model.state_dict()[k], raw[k]) for k in raw)

    grad_enabled = []
    loss = trainer.loss.loss
    trainer.loss.loss = lambda *a, **k: (grad_enabled.append(torch.is_grad_enabled()), loss(*a, **k))[1]
    trainer.evaluate_loss(BATCH)
    trainer.loss.loss = loss
    assert grad_enabled == [False]  # validation builds no graph

    other_model, other_guide = dssm_and_guide()
    resumed = Trainer(other_model, other_guide, ema=0.5, kl_warmup=0, total_steps=10)
    resumed.load_state_dict(state)
    assert all(torch.equal(other_model.state_dict()[k], raw[k]) for k in raw)  # trains on from the raw
    assert resumed.ema.num_updates == 3
    no_ema = Trainer(*dssm_and_guide(), kl_warmup=0, total_steps=10)
    assert "raw" not in no_ema.state_dict() and "ema" not in no_ema.state_dict()


def test_a_run_with_ema_resumes_as_it_would_have_gone_on_and_its_directory_loads_the_averages(
    tmp_path, monkeypatch
):
    config = {**TINY, "ema": 0.7}
    train_run(RunConfig(model="dssm", **config), tmp_path / "full", progress=False)
    restore = interrupt_after(monkeypatch, 3)
    train_run(RunConfig(model="dssm", **{**config, "checkpoint_every": 0}), tmp_path / "half", progress=False)
    restore()
    train_run(None, tmp_path / "half", resume=True, progress=False)
    a, run = params(tmp_path / "full")
    b, _ = params(tmp_path / "half")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    state = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    loaded = load_run(tmp_path / "full").model.state_dict()
    assert all(torch.equal(loaded[k], state["model"][k]) for k in loaded)
    assert any(not torch.equal(loaded[k], state["raw"]["model"][k]) for k in loaded)


def test_pyroseq_train_ema_trains_and_records_it(tmp_path):
    args = ["train", "--model", "rnn", "--source", "sample", "--state-dim", "4", "--batch-size", "8",
            "--steps", "3", "--valid-size", "8", "--ema", "0.9", "--out", str(tmp_path / "run")]  # fmt: skip
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 0, out.output
    assert load_run(tmp_path / "run").config.ema == 0.9
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert state["ema"]["num_updates"] == 3 and state["ema"]["decay"] == 0.9


def test_the_plain_svi_example_draws_from_the_averaged_model():
    main = runpy.run_path(str(Path(__file__).parent.parent / "examples" / "dssm_svi.py"))["main"]
    store = pyro.get_param_store()
    loss = main(["--smoke", "--ema", "0.9"])
    assert 0 < loss < float("inf") and len(store) > 0
