"""Shared test settings."""

import pyro
import pytest
import torch

# Tests use small tensors: one intra-op thread avoids oversubscribing a 2-core CI machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Each test starts with an empty param store and a fixed seed."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skip them on machines without it."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
