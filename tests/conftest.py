"""Suite-wide settings.

One intra-op thread for every test: every CPU kernel then reduces in one fixed order, so within a
process the same inputs give the same bits back, on any CPU and core count (several threads may split
or schedule a sum differently from one call to the next). Bits still differ between CPUs (SIMD
kernels): tests compare two computations of one process, never against stored float results. Fast
too: these tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads
spinning against other processes made the engine tests 5-6x slower. (Tests that compare across processes,
such as the torchrun one, set the thread count in their own workers.)

The user cache (``TESO_CACHE``) points at a fresh temporary folder for the whole session.
"""

import atexit
import os
import shutil
import tempfile

import torch

torch.set_num_threads(1)
# teso pretrain registers foundations in the user cache: the suite's go to a folder of its own,
# never into the user's ~/.cache/teso (subprocesses inherit it).
os.environ["TESO_CACHE"] = tempfile.mkdtemp(prefix="teso-test-cache-")
atexit.register(shutil.rmtree, os.environ["TESO_CACHE"], True)


import pytest  # noqa: E402

_INITIAL = (torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled(), torch.get_num_threads())


@pytest.fixture(autouse=True)
def _restore_torch_backends():
    """``teso demo`` / ``pin_numerics`` switch oneDNN and NNPACK off and set the thread count for the
    whole process; a test (or a module fixture) that runs them in-process must not change the tests
    after it: every test ends with the suite's initial settings."""
    yield
    torch.backends.mkldnn.enabled = _INITIAL[0]
    torch.backends.nnpack.set_flags(_INITIAL[1])
    torch.set_num_threads(_INITIAL[2])
