import os

import pytest
import torch

# Tests run on CPU with small thread counts so that they behave the same on 2-core CI machines.
torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
