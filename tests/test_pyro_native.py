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
from pyroseq.errors import ConfigError, DataError
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
        r"word 0 ends with ids\[0, \d+\] = 3, not EOS \(2\)",
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
    from pyroseq.infer import RunConfig, load_run, save_run

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
    assert out.exit_code == 2 and "written by pyroseq.infer.save_run" in out.output, out.output


@pytest.mark.parametrize("case", ["another size", "an autoguide", "a run already there"])
def test_save_run_refuses_what_the_config_does_not_describe(corpus, tmp_path, case):
    from pyroseq.errors import CheckpointError
    from pyroseq.infer import RunConfig, load_run, save_run

    V = len(corpus.vocab)
    model = DSSM(vocab_size=V, state_dim=4, flow_hidden=8, emitter_hidden=8)
    guide = FutureGuide(vocab_size=V, state_dim=4, flow_hidden=8, rnn_hidden=8)
    config = RunConfig(source="sample", state_dim=4, flow_hidden=8, emitter_hidden=8, guide_hidden=8)
    if case == "another size":
        config.state_dim, match = 6, "not what the config describes"
    elif case == "an autoguide":
        guide, match = AutoNormal(model), "AutoNormal"
    else:
        save_run(tmp_path, model, guide, config=config, vocab=corpus.vocab)
        assert load_run(tmp_path).step == 0  # a saved run without a step starts the count at 0
        match = "already holds a run"
    with pytest.raises(CheckpointError, match=match):
        save_run(tmp_path, model, guide, config=config, vocab=corpus.vocab)


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
