"""Shared fixtures. ``kdiff`` is k-diffusion's own ``sampling.py`` (the oracle for drop-in parity), loaded from the
installed k-diffusion wheel without its package ``__init__`` (which imports torchvision, kornia, clip, wandb):
a stub parent package supplies the one ``utils`` helper sampling.py uses."""

import importlib.util
import pathlib
import sys
import types

import pytest
import torch


def _load_k_diffusion_sampling():
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or spec.origin is None:
        raise RuntimeError("k-diffusion is not installed: run `bash setup.sh` (it installs it with --no-deps)")
    package_dir = pathlib.Path(spec.origin).parent
    package = types.ModuleType("kd_oracle")
    package.__path__ = []
    utils = types.ModuleType("kd_oracle.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules["kd_oracle"], sys.modules["kd_oracle.utils"] = package, utils
    package.utils = utils
    oracle_spec = importlib.util.spec_from_file_location("kd_oracle.sampling", package_dir / "sampling.py")
    module = importlib.util.module_from_spec(oracle_spec)
    sys.modules["kd_oracle.sampling"] = module
    oracle_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def kdiff():
    return _load_k_diffusion_sampling()


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def single_thread():
    """torch on one thread for a module (``pytest.mark.usefixtures("single_thread")``): the zoo's tiny models gain
    nothing from intra-op threads, and on a shared 2-core machine the threads' spin-waits made a 4-step SDXL run take
    0.5 to 13 s instead of 0.07 s (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
