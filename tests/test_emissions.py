"""The contract every emission family keeps, parametrised over the registry (:data:`EMISSIONS`): shapes of
parameters, draws and log-probs with extra leading (particle) dims, the support, log-probs against torch's
own distributions, masks at a Pyro site, a gradient to every parameter, the observation checks and the
registry's errors."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from torch import distributions as td

from pyroseq.data.vocab import Vocabulary
from pyroseq.emissions import EMISSIONS, CategoricalEmission, NormalEmission, make_emission
from pyroseq.errors import ConfigError, DataError

D = 3  # state dimension
SIZES = {"categorical": 7, "bernoulli": 5, "normal": 4, "normal_state": 4}
NAMES = list(EMISSIONS)


def build(name: str, hidden: int | None = 8):
    torch.manual_seed(0)
    emission = make_emission(name, state_dim=D, obs_dim=SIZES[name], hidden=hidden).double()
    with torch.no_grad():  # away from the initialisation, so that no check holds trivially
        for p in emission.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return emission


def observations(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Valid observations of batch shape ``shape``: symbols other than PAD and BOS, 0/1 frames, reals."""
    F = SIZES[name]
    if name == "categorical":
        return torch.randint(2, F, shape)
    if name == "bernoulli":
        return torch.randint(0, 2, (*shape, F)).double()
    return torch.randn(*shape, F, dtype=torch.float64)


def torch_reference(name: str, emission, params: torch.Tensor) -> td.Distribution:
    """The same law built from torch's own distributions, independently of the emission's code."""
    if name == "categorical":
        logits = params.clone()
        logits[..., [Vocabulary.pad_id, Vocabulary.bos_id]] = float("-inf")
        return td.Categorical(logits=logits)
    if name == "bernoulli":
        return td.Independent(td.Bernoulli(logits=params), 1)
    if name == "normal":
        return td.Independent(td.Normal(params, emission.log_scale.exp()), 1)
    loc, raw = params.chunk(2, -1)
    return td.Independent(td.Normal(loc, torch.log1p(raw.exp()) + 1e-4), 1)


def test_the_registry_has_every_family():
    assert {"categorical", "bernoulli", "normal", "normal_state"} <= set(EMISSIONS)


@pytest.mark.parametrize("hidden", [8, None], ids=["mlp", "linear"])
@pytest.mark.parametrize("name", NAMES)
def test_emission_contract(name, hidden):
    emission = build(name, hidden)
    F = SIZES[name]
    event = () if name == "categorical" else (F,)
    assert tuple(emission.event_shape) == event and emission.obs_dim == F

    # shapes with extra leading dims: (K particles, B, T) states
    h = torch.randn(5, 2, 4, D, dtype=torch.float64)
    params = emission(h)
    law = emission.law(params)
    assert law.batch_shape == (5, 2, 4) and tuple(law.event_shape) == event
    draw = law.sample()
    assert draw.shape == (5, 2, 4, *event) and bool(law.support.check(draw).all())
    assert law.sample((3,)).shape == (3, 5, 2, 4, *event)
    assert emission.distribution(h).batch_shape == (5, 2, 4)

    # log-probs against torch's own distribution, the observations broadcast over the particles
    x = observations(name, (2, 4))
    expected = torch_reference(name, emission, params).log_prob(x)  # (5, 2, 4)
    assert torch.allclose(law.log_prob(x), expected, atol=1e-10)
    assert torch.allclose(emission.log_prob(params, x), expected, atol=1e-10)
    confident = 40 * params  # far in the tails: no clamping of probabilities, no overflow
    expected = torch_reference(name, emission, confident).log_prob(x)
    assert torch.allclose(emission.law(confident).log_prob(x), expected, rtol=1e-9, atol=1e-9)
    # the law as features: its parameters in their own range, as torch's own distribution has them
    reference = torch_reference(name, emission, params)
    if name in ("categorical", "bernoulli"):
        expected = reference.probs if name == "categorical" else reference.base_dist.probs
    else:
        expected = torch.cat([reference.base_dist.loc, reference.base_dist.scale], dim=-1)
    assert emission.features(params).shape == (5, 2, 4, emission.feature_dim)
    assert torch.allclose(emission.features(params), expected, atol=1e-10)
    if name == "categorical":  # PAD and BOS are never emitted
        assert (law.log_prob(torch.full((2, 4), Vocabulary.pad_id)) == float("-inf")).all()
        assert not bool(law.sample((200,)).lt(2).any())

    # a gradient reaches every parameter
    emission.zero_grad()
    emission.log_prob(emission(h), x).sum().backward()
    for pname, p in emission.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_a_masked_site_scores_only_real_steps(name):
    emission = build(name)
    h = torch.randn(4, D, dtype=torch.float64)
    x = observations(name, (4,))
    mask = torch.tensor([True, False, True, False])

    def model():
        with pyro.plate("seqs", 4, dim=-1):
            pyro.sample("w", emission.distribution(h).mask(mask), obs=x)

    trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    log_prob = trace.nodes["w"]["log_prob"]
    full = emission.distribution(h).log_prob(x)
    assert torch.equal(log_prob[~mask], torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(log_prob[mask], full[mask])


@pytest.mark.parametrize("name", NAMES)
def test_observation_checks(name):
    emission = build(name)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    good = observations(name, (2, 3))
    checked, checked_mask = emission.check_observations(good, mask.long(), who="M")
    assert torch.equal(checked_mask, mask) and checked.shape == good.shape
    assert emission.check_observations(None, mask, who="M")[0] is None
    with pytest.raises(DataError, match="^M: mask row 0 \\(011\\) is not a prefix of Trues"):
        emission.check_observations(good, torch.tensor([[False, True, True], [True, False, False]]), who="M")
    if name == "categorical":
        with pytest.raises(DataError, match="^M: got frames of shape \\(2, 3, 5\\).*emits symbols"):
            emission.check_observations(torch.zeros(2, 3, 5), mask, who="M")
        return
    with pytest.raises(
        DataError, match="^M: got symbol ids of shape \\(2, 3\\), but this model emits vectors"
    ):
        emission.check_observations(torch.ones(2, 3, dtype=torch.long), mask, who="M")
    with pytest.raises(DataError, match=f"^M: expected frames \\(B, T, {SIZES[name]}\\).*got \\(2, 3, 9\\)"):
        emission.check_observations(torch.zeros(2, 3, 9), mask, who="M")
    bad = good.clone()
    bad[1, 0, 2] = float("nan")
    with pytest.raises(DataError, match="^M: sequence 1, frame 0, column 2 is nan, not"):
        emission.check_observations(bad, mask, who="M")
    padded = good.clone()
    padded[0, 2, 1] = float("inf")
    with pytest.raises(DataError, match="sequence 0, frame 2, column 1 is inf.*a padded frame"):
        emission.check_observations(padded, mask, who="M")
    as_ints = emission.check_observations(good.long() if name == "bernoulli" else good, mask, who="M")[0]
    assert as_ints.dtype.is_floating_point


def test_bernoulli_frames_must_be_binary_and_real_vectors_need_not():
    mask = torch.ones(1, 2, dtype=torch.bool)
    frames = torch.zeros(1, 2, 5)
    frames[0, 1, 3] = 0.5
    with pytest.raises(DataError, match="sequence 0, frame 1, column 3 is 0.5, not 0 or 1"):
        build("bernoulli").check_observations(frames, mask, who="M")
    build("normal").check_observations(frames[..., :4], mask, who="M")


def test_normal_scales():
    learned = NormalEmission(state_dim=D, obs_dim=4, scale="learned")
    assert torch.allclose(learned.distribution(torch.randn(2, D)).base_dist.scale, torch.ones(2, 4))
    assert learned(torch.randn(2, D)).shape == (2, 4)
    state = NormalEmission(state_dim=D, obs_dim=4, scale="state")
    assert state(torch.randn(2, D)).shape == (2, 8) and not hasattr(state, "log_scale")
    scales = state.distribution(10 * torch.randn(50, D)).base_dist.scale
    assert (scales >= 1e-4).all() and scales.std() > 0  # depends on the state
    with pytest.raises(ConfigError, match="'learned' or 'state', got 'fixed'"):
        NormalEmission(state_dim=D, obs_dim=4, scale="fixed")


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown emission 'poisson'; valid names: categorical, bernoulli"):
        make_emission("poisson", state_dim=D, obs_dim=4)
    with pytest.raises(ConfigError, match="obs_dim must be a positive integer, got 0"):
        make_emission("bernoulli", state_dim=D, obs_dim=0)
    with pytest.raises(ConfigError, match="vocab_size=3 leaves no symbols"):
        make_emission("categorical", state_dim=D, obs_dim=3)


@pytest.mark.parametrize("name", NAMES)
def test_every_family_builds_an_emitter_of_another_depth_and_nonlinearity(name):
    emission = make_emission(name, state_dim=3, obs_dim=6, hidden=5, layers=3, activation="relu")
    kinds = [type(m) for m in emission.net]
    assert kinds == [torch.nn.Linear, torch.nn.ReLU] * 3 + [torch.nn.Linear]
    assert emission(torch.randn(2, 3)).shape[:-1] == (2,)
    with pytest.raises(ConfigError, match="a linear emitter .* has no layers or activation"):
        make_emission(name, state_dim=3, obs_dim=6, hidden=None, layers=2)
    with pytest.raises(ConfigError, match="unknown emitter_activation 'gelu'"):
        make_emission(name, state_dim=3, obs_dim=6, hidden=5, activation="gelu")


def test_a_family_registered_with_the_old_signature_still_builds(monkeypatch):
    """A factory of ``(*, state_dim, obs_dim, hidden)`` (the registry's contract before emitter depth)."""

    def old_factory(*, state_dim, obs_dim, hidden):
        return CategoricalEmission(state_dim=state_dim, obs_dim=obs_dim, hidden=hidden)

    monkeypatch.setitem(EMISSIONS, "mine", old_factory)
    assert make_emission("mine", state_dim=3, obs_dim=6, hidden=4).obs_dim == 6


def test_categorical_loads_a_state_dict_from_before_the_families():
    """Checkpoints saved when the DSSM's emitter was the network itself (``emitter.0.weight``) still load."""
    for hidden, keys in [(8, ["0.weight", "0.bias", "2.weight", "2.bias"]), (None, ["weight", "bias"])]:
        emission = CategoricalEmission(state_dim=D, obs_dim=7, hidden=hidden)
        old = {
            key: torch.randn_like(value)
            for key, value in zip(keys, emission.net.state_dict().values(), strict=True)
        }
        emission.load_state_dict(old)
        assert all(
            torch.equal(a, b) for a, b in zip(emission.net.state_dict().values(), old.values(), strict=True)
        )


def test_emissions_are_pyro_distributions():
    for name in NAMES:
        law = build(name).distribution(torch.randn(2, D, dtype=torch.float64))
        assert isinstance(law, dist.torch_distribution.TorchDistributionMixin)  # .mask, .to_event
