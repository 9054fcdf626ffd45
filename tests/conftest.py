"""Fixtures shared by the test modules: the seed, the thread count, a random-weight test pipeline, images."""

import os

import pytest
import torch

from dynamicrafter.testing import random_image, tiny_pipeline

# Tests run on CPU with small thread counts so that they behave the same on 2-core CI machines.
torch.set_num_threads(min(2, os.cpu_count() or 1))

SLOW_TEST_TIMEOUT_S = 3600  # the per-test limit of `-m slow` tests (the others: `timeout` in pyproject.toml)


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TEST_TIMEOUT_S))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): the tiny models
    are not faster with two, and far slower on a loaded 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pipe():
    """The random-weight test-size pipeline (CPU, fp32), one per test module."""
    return tiny_pipeline()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three random images (96 x 72) written as PNG files: ``k0.png``, ``k1.png``, ``k2.png``."""
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / f"k{i}.png" for i in range(3)]
    for i, path in enumerate(paths):
        random_image(seed=i).save(path)
    return paths
