"""pyroseq used as a Pyro user would: plain SVI, several models in one process, the param store, any guide
in the Trainer, and clear errors for bad inputs."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoNormal
from pyro.optim import Adam

from pyroseq.data import pad_batch
from pyroseq.data.words import load_words
from pyroseq.errors import ConfigError, DataError, NonFiniteError
from pyroseq.guides import FutureGuide
from pyroseq.infer import Trainer, make_objective
from pyroseq.models import DSSM, RNNLM


@pytest.fixture(scope="module")
def corpus():
    return load_words("sample")


def dssm_and_guide(V):
    return (
        DSSM(vocab_size=V, state_dim=4, flow_hidden=8, emitter_hidden=8),
        FutureGuide(vocab_size=V, state_dim=4, flow_hidden=8, embed_dim=4, rnn_hidden=8),
    )


def snapshot(*modules):
    return [p.detach().clone() for m in modules for p in m.parameters()]


def least_change(before, *modules):
    """The smallest over parameters of the largest absolute change of each."""
    after = [p.detach() for m in modules for p in m.parameters()]
    return min(float((a - b).abs().max()) for a, b in zip(after, before, strict=True))


def test_instances_have_their_own_pyro_names(corpus):
    V = len(corpus.vocab)
    (m1, g1), (m2, g2) = dssm_and_guide(V), dssm_and_guide(V)
    names = [m._pyro_name for m in (m1, g1, m2, g2)]
    assert len(set(names)) == 4
    assert all(n.startswith(role) for n, role in zip(names, ["model", "guide"] * 2, strict=True))


def test_two_models_in_one_process_train_independently_under_plain_svi(corpus):
    """Before instances had names of their own, the second model's parameters never moved."""
    V = len(corpus.vocab)
    batch = corpus.batch(range(16))
    pairs = [dssm_and_guide(V), dssm_and_guide(V), (RNNLM(vocab_size=V, state_dim=4), lambda ids, mask: None)]
    for model, guide in pairs:
        before = snapshot(model)
        svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
        for _ in range(2):
            svi.step(batch.ids, batch.mask)
        assert least_change(before, model) > 0, type(model).__name__
        # Adam moves a parameter by at most about lr per step: nothing was copied in from another model
        after = [p.detach() for p in model.parameters()]
        assert max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True)) < 2.5e-2


def test_param_store_save_and_load_restore_a_model(corpus, tmp_path):
    V = len(corpus.vocab)
    model, guide = dssm_and_guide(V)
    batch = corpus.batch(range(8))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    svi.step(batch.ids, batch.mask)
    trained = snapshot(model, guide)
    pyro.get_param_store().save(tmp_path / "params.pt")
    # A model built afresh in another process has other values under the same names: scramble them.
    with torch.no_grad():
        for p in [*model.parameters(), *guide.parameters()]:
            p.add_(1.0)
    pyro.clear_param_store()
    pyro.get_param_store().load(tmp_path / "params.pt")
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    with poutine.block():
        poutine.trace(guide).get_trace(batch.ids, batch.mask)  # the first call restores the guide
        poutine.trace(model).get_trace(batch.ids, batch.mask)
    restored = [p for m in (model, guide) for p in m.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(restored, trained, strict=True))
    # ... and training goes on with the module's own tensors, which the store holds again.
    svi.step(batch.ids, batch.mask)
    assert least_change(trained, model, guide) > 0
    store = dict(pyro.get_param_store().named_parameters())
    assert store[f"{model._pyro_name}.h_0"] is model.h_0


def test_loading_a_store_of_another_configuration_is_a_clear_error(corpus, tmp_path):
    V = len(corpus.vocab)
    model, _ = dssm_and_guide(V)
    batch = corpus.batch(range(4))
    pyro.param(f"{model._pyro_name}.h_0", torch.zeros(7))
    with pytest.raises(Exception, match=r"param store holds .*h_0.* shape \(7,\)"):
        model(batch.ids, batch.mask)


def test_name_is_the_param_store_prefix_of_models_and_guides(corpus):
    V = len(corpus.vocab)
    modules = [
        DSSM(vocab_size=V, state_dim=4, name="words_dssm"),
        FutureGuide(vocab_size=V, state_dim=4, name="words_guide"),
        RNNLM(vocab_size=V, name="words_gru"),
    ]
    batch = corpus.batch(range(4))
    for module in modules:
        trace = poutine.trace(module).get_trace(batch.ids, batch.mask)
        params = [n for n, site in trace.nodes.items() if site["type"] == "param"]
        assert params and all(n.startswith(f"{module._pyro_name}.") for n in params)
        assert module._pyro_name.startswith("words_")
    with pytest.raises(ConfigError, match="name must be a non-empty string without '.'"):
        RNNLM(vocab_size=V, name="a.b")


SAVE_IN_ANOTHER_PROCESS = """
import pyro
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from pyroseq.data.words import load_words
from pyroseq.guides import empty_guide
from pyroseq.models import RNNLM
pyro.set_rng_seed(0)
batch = load_words("sample").batch(range(8))
model = RNNLM(vocab_size={V}, state_dim=4, name="lm")
svi = SVI(model, empty_guide, Adam({{"lr": 5e-2}}), Trace_ELBO())
for _ in range(30):
    svi.step(batch.ids, batch.mask)
print(svi.evaluate_loss(batch.ids, batch.mask))
pyro.get_param_store().save({path!r})
"""


def test_a_named_model_loads_a_store_saved_by_another_process_after_other_models(corpus, tmp_path):
    """The counter names (model, model_2, ...) depend on what a process built before; name= does not."""
    import subprocess
    import sys

    from pyroseq.guides import empty_guide

    V = len(corpus.vocab)
    path = tmp_path / "params.pt"
    code = SAVE_IN_ANOTHER_PROCESS.format(V=V, path=str(path))
    saved = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout)
    RNNLM(vocab_size=V, state_dim=4)  # other models built first
    RNNLM(vocab_size=V, state_dim=4, name="other")
    model = RNNLM(vocab_size=V, state_dim=4, name="lm")
    pyro.clear_param_store()
    pyro.get_param_store().load(path)
    batch = corpus.batch(range(8))
    assert Trace_ELBO().loss(model, empty_guide, batch.ids, batch.mask) == pytest.approx(saved, rel=1e-5)


def test_loading_a_store_saved_under_another_name_warns(corpus, tmp_path):
    V = len(corpus.vocab)
    batch = corpus.batch(range(4))
    saved = DSSM(vocab_size=V, state_dim=4, name="saved_as")
    poutine.trace(saved).get_trace(batch.ids, batch.mask)
    pyro.get_param_store().save(tmp_path / "params.pt")
    pyro.clear_param_store()
    del saved
    model = DSSM(vocab_size=V, state_dim=4, name="loaded_as")
    pyro.get_param_store().load(tmp_path / "params.pt")
    with pytest.warns(UserWarning, match="under 'saved_as' but none under .*'loaded_as'.* name='saved_as'"):
        poutine.trace(model).get_trace(batch.ids, batch.mask)


def test_two_live_models_in_one_store_do_not_warn(corpus):
    import warnings

    V = len(corpus.vocab)
    batch = corpus.batch(range(4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for model in (DSSM(vocab_size=V, state_dim=4), DSSM(vocab_size=V, state_dim=4)):
            poutine.trace(model).get_trace(batch.ids, batch.mask)


def per_step_guide(ids, mask):
    """A guide written like Pyro's examples/dmm.py: one site per step."""
    loc = pyro.param("ps_loc", torch.zeros(4))
    with pyro.plate("seqs", mask.shape[0], dim=-1):
        for t in range(mask.shape[1]):
            pyro.sample(f"h_{t + 1}", dist.Normal(loc, 1.0).to_event(1))


def misspelt_guide(ids, mask):
    with pyro.plate("seqs", mask.shape[0], dim=-1):
        pyro.sample("hh", dist.Normal(0.0, 1.0).expand([mask.shape[1], 4]).to_event(2))


@pytest.mark.parametrize("guide", [per_step_guide, misspelt_guide], ids=["per-step h_t", "misspelt"])
def test_a_guide_without_the_models_site_h_is_refused_in_one_line(corpus, guide):
    V = len(corpus.vocab)
    model, _ = dssm_and_guide(V)
    batch = corpus.batch(range(4))
    T = batch.ids.shape[1]
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    with pytest.raises(ConfigError) as info:
        svi.step(batch.ids, batch.mask)
    message = str(info.value).splitlines()[0]  # Pyro's trace adds the (empty) trace shapes below it
    assert f"latent site 'h', the whole state trajectory of shape (4, {T}, 4)" in message
    assert ("'h_1'" if guide is per_step_guide else "'hh'") in message


def test_a_guide_with_no_latent_site_proposes_from_the_prior(corpus):
    """Not refused: the model draws h from its own transition, a valid (loose) bound."""
    V = len(corpus.vocab)
    model, _ = dssm_and_guide(V)
    batch = corpus.batch(range(4))
    assert math.isfinite(
        Trace_ELBO(max_plate_nesting=1).loss(model, lambda ids, mask: None, batch.ids, batch.mask)
    )


def test_a_non_finite_parameter_is_named_with_the_step_and_the_remedy(corpus):
    V = len(corpus.vocab)
    model, guide = dssm_and_guide(V)
    batch = corpus.batch(range(4))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    svi.step(batch.ids, batch.mask)
    with torch.no_grad():
        model.h_0[1] = math.nan
    with pytest.raises(
        NonFiniteError,
        match=r"DSSM .*parameter 'h_0' is not finite after 1 optimisation "
        r"steps: training diverged; lower the learning rate",
    ):
        svi.step(batch.ids, batch.mask)


def test_a_non_finite_guide_sample_is_named_at_the_models_site(corpus):
    V = len(corpus.vocab)
    model, _ = dssm_and_guide(V)
    batch = corpus.batch(range(4))
    loc = torch.full((batch.ids.shape[1], 4), math.inf, requires_grad=True)

    def guide(ids, mask):
        with pyro.plate("seqs", mask.shape[0], dim=-1):
            pyro.sample("h", dist.Delta(loc, event_dim=2))

    with pytest.raises(NonFiniteError, match=r"the guide's sample at site 'h' is not finite after 0 "):
        Trace_ELBO(max_plate_nesting=1).differentiable_loss(model, guide, batch.ids, batch.mask)


def function_guide(ids, mask):
    """A hand-written guide whose parameters live in the param store: q(h_t) = N(loc_t, scale_t)."""
    B, T = mask.shape
    loc = pyro.param("fg_loc", torch.zeros(T, 4))
    scale = pyro.param("fg_scale", torch.ones(T, 4), constraint=dist.constraints.positive)
    with pyro.plate("seqs", B, dim=-1):
        pyro.sample("h", dist.Normal(loc, scale).to_event(2))  # the DSSM's trajectory site, (T, D)


@pytest.mark.parametrize("kind", ["function", "AutoNormal", "AutoDelta"])
def test_trainer_trains_function_guides_and_autoguides(corpus, kind):
    """The Trainer collected parameters from modules only: a function guide and an autoguide stayed frozen."""
    V = len(corpus.vocab)
    model, _ = dssm_and_guide(V)
    batch = corpus.batch(range(8))
    guide = {"function": lambda: function_guide, "AutoNormal": lambda: AutoNormal(model),
             "AutoDelta": lambda: AutoDelta(model)}[kind]()  # fmt: skip
    trainer = Trainer(model, guide, lr=1e-2)
    trainer.step(batch)  # creates the guide's parameters
    names = [n for n in pyro.get_param_store().keys() if not n.startswith(model._pyro_name)]
    before = {n: pyro.get_param_store().get_param(n).detach().clone() for n in names}
    assert before
    for _ in range(2):
        trainer.step(batch)
    store = pyro.get_param_store()
    # at steps of the first word (padded steps of a masked site get no gradient)
    assert all(
        float((store.get_param(n).detach() - v).abs().max()) > 0
        for n, v in before.items()
        if n.endswith(("h_1", "fg_loc", "fg_scale"))
    )


def test_trainer_refuses_a_guide_it_cannot_train(corpus):
    V = len(corpus.vocab)
    model, _ = dssm_and_guide(V)
    hidden = torch.zeros(4, requires_grad=True)  # a tensor no Pyro statement declares

    def guide(ids, mask):
        with pyro.plate("seqs", mask.shape[0], dim=-1):
            pyro.sample("h", dist.Normal(hidden, 1.0).expand([mask.shape[1], 4]).to_event(2))

    trainer = Trainer(model, guide)
    with pytest.raises(ConfigError, match="no parameter the trainer can see"):
        trainer.step(corpus.batch(range(4)))


BAD_INPUTS = {
    "float mask": (lambda b: (b.ids, b.mask.float()), "mask must be bool"),
    "shape mismatch": (lambda b: (b.ids[:, :-1], b.mask), r"ids \(4, \d+\) and mask \(4, \d+\)"),
    "left padding": (lambda b: (b.ids, b.mask.flip(1)), "is not a prefix of Trues"),
    "unknown id": (lambda b: (b.ids.masked_fill(b.mask, 999), b.mask), "not a symbol of a vocabulary"),
    "PAD on a real step": (lambda b: (b.ids.masked_fill(b.mask, 0), b.mask), "PAD=0"),
    "float ids": (lambda b: (b.ids.float(), b.mask), "ids must be an integer tensor"),
    "mask of 2s": (lambda b: (b.ids, b.mask.long() * 2), "only 0 and 1"),
    # PyTorch's ignore_index habit, and any other id outside the vocabulary on padded steps
    "padding -100": (
        lambda b: (b.ids.masked_fill(~b.mask, -100), b.mask),
        r"ids\[\d+, \d+\] = -100 on a padded step .* pad with PAD = 0",
    ),
    "padding 999": (lambda b: (b.ids.masked_fill(~b.mask, 999), b.mask), r"= 999 on a padded step"),
    "B = 0": (lambda b: (b.ids[:0], b.mask[:0]), r"the batch is empty \(mask \(0, \d+\)\)"),
    "T = 0": (lambda b: (b.ids[:, :0], b.mask[:, :0]), r"no steps \(mask \(4, 0\)\)"),
    "words without EOS": (
        lambda b: (b.ids.masked_fill(b.ids == 2, 3), b.mask),
        r"word (\d+) ends with ids\[\1, \d+\] = 3, not EOS \(2\)",
    ),
    "mask one column too many": (
        lambda b: (b.ids, torch.cat([b.mask, b.mask[:, :1]], dim=1)),
        r"ids \(4, (\d+)\) and mask \(4, \d+\) must have the same shape",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("who", ["DSSM", "FutureGuide", "RNNLM"])
def test_models_and_guides_reject_bad_inputs_with_one_clear_error(corpus, case, who):
    V = len(corpus.vocab)
    model, guide = dssm_and_guide(V)
    fn = {"DSSM": model, "FutureGuide": guide, "RNNLM": RNNLM(vocab_size=V, state_dim=4)}[who]
    make, message = BAD_INPUTS[case]
    ids, mask = make(corpus.batch(range(4)))
    with pytest.raises(DataError, match=message) as info:
        fn(ids, mask)
    assert str(info.value).startswith(f"{who}: ")


def test_svi_reports_the_guides_input_error_first(corpus):
    """The guide runs before the model: its message must be as clear as the model's."""
    V = len(corpus.vocab)
    model, guide = dssm_and_guide(V)
    batch = corpus.batch(range(4))
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    with pytest.raises(DataError, match="FutureGuide: mask must be bool"):
        svi.step(batch.ids, batch.mask.float())


def test_a_mask_of_0_1_integers_is_the_bool_mask(corpus):
    V = len(corpus.vocab)
    model, guide = dssm_and_guide(V)
    batch = corpus.batch(range(4))
    elbo = Trace_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(0)
    as_bool = elbo.loss(model, guide, batch.ids, batch.mask)
    pyro.set_rng_seed(0)
    assert elbo.loss(model, guide, batch.ids, batch.mask.long()) == as_bool


def test_the_jit_objective_traces_again_for_another_length():
    """Pyro's JitTrace_ELBO keeps one trace per argument count: a longer T was silently cut to the
    traced length, a shorter one ended in a TorchScript error."""
    from pyroseq.data import Vocabulary

    words = ["ab", "abc", "b", "abcab"]
    vocab = Vocabulary.from_texts(words)
    model = DSSM(vocab_size=len(vocab), state_dim=2, flow="diagonal", flow_hidden=4, emitter_hidden=None)
    guide = FutureGuide(vocab_size=len(vocab), state_dim=2, flow=None, embed_dim=2, rnn_hidden=4)
    short = pad_batch([vocab.encode(w) for w in words[:3]])  # T = 4
    long = pad_batch([vocab.encode(w) for w in words[1:]])  # T = 6, the same B

    def jit_loss(objective, batch):
        pyro.set_rng_seed(1)
        return objective.loss_and_grads(model, guide, batch.ids, batch.mask)

    loss = make_objective("elbo", jit=True)
    jit_loss(loss, short)
    # the first call of a new trace draws as a fresh objective's first call does
    assert jit_loss(loss, long) == pytest.approx(jit_loss(make_objective("elbo", jit=True), long))
    assert math.isfinite(jit_loss(loss, short))
    assert len(loss._traces_by_shape) == 2


def test_check_inputs_hands_forward_long_ids_and_a_bool_mask():
    from pyroseq.checks import check_inputs

    ids, mask = check_inputs(
        torch.tensor([[3, 2]], dtype=torch.int32), torch.tensor([[1, 1]]), vocab_size=4, who="m"
    )
    assert ids.dtype == torch.long and mask.dtype == torch.bool


def test_save_run_writes_a_run_that_the_commands_accept(corpus, tmp_path):
    """A model trained with plain SVI in a script becomes a run directory for evaluate / sample / check."""
    from click.testing import CliRunner

    from pyroseq.cli.main import cli
    from pyroseq.runs import RunConfig, load_run, save_run

    V = len(corpus.vocab)
    model = DSSM(vocab_size=V, state_dim=4, flow_hidden=8, emitter_hidden=8)
    guide = FutureGuide(vocab_size=V, state_dim=4, flow_hidden=8, rnn_hidden=8)
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO(max_plate_nesting=1))
    batches = corpus.sampler(8, seed=0)
    for _ in range(2):
        batch = next(batches)
        svi.step(batch.ids, batch.mask)
    config = RunConfig(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8)
    save_run(tmp_path / "run", model, guide, config=config, vocab=corpus.vocab, step=2, corpus=corpus)
    run = load_run(tmp_path / "run")
    assert run.step == 2 and run.vocab == corpus.vocab
    for mine, loaded in ((model, run.model), (guide, run.guide)):
        assert all(
            torch.equal(a, b)
            for a, b in zip(mine.state_dict().values(), loaded.state_dict().values(), strict=True)
        )
    runner = CliRunner()
    for args in (
        ["evaluate", "--samples", "2"],
        ["sample", "-n", "3"],
        ["check", "--words", "4", "--samples", "2"],
    ):
        out = runner.invoke(cli, [args[0], str(tmp_path / "run"), *args[1:]])
        assert out.exit_code == 0, (args, out.output)
    out = runner.invoke(cli, ["train", "--out", str(tmp_path / "run"), "--resume", "--steps", "5"])
    assert out.exit_code == 2 and "written by pyroseq.runs.save_run" in out.output, out.output


@pytest.mark.parametrize(
    "case", ["another size", "another guide cell", "another emitter", "an autoguide", "a run already there"]
)
def test_save_run_refuses_what_the_config_does_not_describe(corpus, tmp_path, case):
    from pyroseq.errors import CheckpointError
    from pyroseq.runs import RunConfig, load_run, save_run

    V = len(corpus.vocab)
    model = DSSM(vocab_size=V, state_dim=4, flow_hidden=8, emitter_hidden=8)
    guide = FutureGuide(vocab_size=V, state_dim=4, flow_hidden=8, rnn_hidden=8)
    config = RunConfig(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8)
    if case == "another size":
        config.state_dim, match = (
            6,
            r"not what the config describes \(state_dim 6 vs the model's 4; state_dim 6",
        )
    elif case == "another guide cell":
        config.guide_cell, match = (
            "relu",
            r"describes \(guide_cell \(rnn_cell\) 'relu' vs the guide's 'gru'\)",
        )
    elif case == "another emitter":  # an argument the spec leaves out at its default, on the model alone
        model = DSSM(vocab_size=V, state_dim=4, flow_hidden=8, emitter_hidden=8, emitter_activation="relu")
        match = r"describes \(emitter_activation 'tanh' vs the model's 'relu'\)"
    elif case == "an autoguide":
        guide, match = AutoNormal(model), "AutoNormal"
    else:
        save_run(tmp_path, model, guide, config=config, vocab=corpus.vocab)
        assert load_run(tmp_path).step == 0  # a saved run without a step starts the count at 0
        match = "already holds a run"
    with pytest.raises(CheckpointError, match=match):
        save_run(tmp_path, model, guide, config=config, vocab=corpus.vocab)


def test_spec_differences_name_the_option_of_the_config_behind_each_argument(corpus):
    """What save_run says of a model or guide that its config does not describe: each differing argument
    by the RunConfig field it comes from."""
    import dataclasses

    from pyroseq.runs import RunConfig
    from pyroseq.runs.specs import build_from_specs, guide_spec, model_spec, spec_differences

    dssm = RunConfig(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8)
    rnn = RunConfig(model="rnn", source="sample", state_dim=4, embed_dim=4)
    for config, changes, model_says, guide_says in (
        (dssm, dict(state_dim=5, guide_hidden=9, guide_cell="relu", emitter_layers=2),
         ["emitter_layers 1 vs the model's 2", "state_dim 4 vs the model's 5"],
         ["state_dim 4 vs the guide's 5", "guide_hidden (rnn_hidden) 8 vs the guide's 9",
          "guide_cell (rnn_cell) 'gru' vs the guide's 'relu'"]),
        (rnn, dict(cell="lstm", layers=2),
         ["cell 'gru' vs the model's 'lstm'", "layers (num_layers) 1 vs the model's 2"], []),
    ):  # fmt: skip
        specs = model_spec(config, corpus.vocab), guide_spec(config, corpus.vocab)
        other = dataclasses.replace(config, **changes)
        model, guide = build_from_specs(model_spec(other, corpus.vocab), guide_spec(other, corpus.vocab))
        assert spec_differences(specs[0], model, role="model") == model_says
        assert spec_differences(specs[1], guide, role="guide") == guide_says


def test_model_graphs_for_render_model(corpus):
    """pyro.render_model draws these relations: the DSSM's symbols depend on the states alone, the RNN's
    (drawn) symbols on every earlier symbol."""
    from pyro.infer.inspect import get_model_relations

    V = len(corpus.vocab)
    batch = corpus.batch(range(2))
    ids, mask = batch.ids[:, :4], torch.ones(2, 4, dtype=torch.bool)
    dssm = get_model_relations(DSSM(vocab_size=V, state_dim=2), model_args=(ids, mask))
    assert dssm["sample_sample"] == {"h": [], **{f"w_{t}": ["h"] for t in range(1, 5)}}
    assert dssm["observed"] == [f"w_{t}" for t in range(1, 5)]
    rnn = get_model_relations(RNNLM(vocab_size=V, state_dim=2), model_args=(None, mask))
    assert rnn["sample_sample"] == {f"w_{t}": [f"w_{s}" for s in range(1, t)] for t in range(1, 5)}
    graphviz = pytest.importorskip("graphviz")
    graph = pyro.render_model(DSSM(vocab_size=V, state_dim=2), model_args=(ids, mask))
    assert isinstance(graph, graphviz.Digraph) and "h -> w_4" in graph.source
