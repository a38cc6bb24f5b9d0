"""Suite-wide settings.

One intra-op thread for every test: float reductions then run in one fixed order whatever the
machine's core count, so "the same computation twice gives the same bits" holds on any CPU, and two
cores shared with the pytest process are not oversubscribed. (Tests that compare across processes,
such as the torchrun one, set the thread count in their own workers.)
"""

import torch

torch.set_num_threads(1)
