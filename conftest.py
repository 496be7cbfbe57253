"""Settings shared by the tests and the docstring examples (``--doctest-modules`` on ``pyroseq``)."""

import pyro
import pytest
import torch
from _pytest.doctest import DoctestItem

# Small tensors: one intra-op thread avoids oversubscribing a 2-core CI machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_pyro_state_for_doctests(request):
    """Each docstring example starts with an empty param store and a fixed seed, as each test does."""
    if isinstance(request.node, DoctestItem):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
    yield
