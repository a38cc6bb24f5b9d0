"""Suite-wide settings.

One intra-op thread for every test: every CPU kernel then reduces in one fixed order, so within a
process the same inputs give the same bits back, on any CPU and core count (several threads may split
or schedule a sum differently from one call to the next). Bits still differ between CPUs (SIMD
kernels): tests compare two computations of one process, never against stored float results. Fast
too: these tiny models gain nothing from threads, and on a shared 2-core machine OpenMP threads
spinning against other processes made the engine tests 5-6x slower. (Tests that compare across processes,
such as the torchrun one, set the thread count in their own workers.)
"""

import torch

torch.set_num_threads(1)
