"""Import facekernels as a user would, from outside the source tree, and run every op family once.

    python tools/ci/smoke.py INSTALL_DIR [TORCH_VERSION]

Fails unless facekernels is imported from under INSTALL_DIR (not from the tree, not from another
install), is a CPU build, and (when given) torch is exactly TORCH_VERSION: an install must never have
swapped the user's torch for another one.
"""

import os
import sys

import torch

import facekernels

expected = os.path.realpath(sys.argv[1])
where = os.path.realpath(facekernels.__file__)
assert where.startswith(expected + os.sep), f"facekernels imported from {where}, not from under {expected}"
if len(sys.argv) > 2:
    assert torch.__version__ == sys.argv[2], f"torch is {torch.__version__}, expected {sys.argv[2]}"
info = facekernels.build_info()
assert not info["cuda"], info

x = torch.randn(2, 4, 8, 8, requires_grad=True)
y = facekernels.circular_conv(x, torch.randn(4, 8), None, 3)
y.sum().backward()
facekernels.local_stat_transform(torch.randn(1, 2, 9, 9), torch.randn(1, 2, 9, 9), 3)
facekernels.alignment_energy(torch.randn(50, 8), torch.randn(50, 8))
facekernels.ops.diff_attention(*[torch.randn(1, 2, 5, 4, requires_grad=True) for _ in range(5)], torch.rand(2),
                               causal=True).sum().backward()
_, nn_idx = facekernels.ops.cosine_topk(torch.randn(2, 6, 10), 3)
facekernels.ops.edge_conv_max(torch.randn(2, 6, 10, requires_grad=True), nn_idx, torch.randn(7, 10),
                              torch.randn(7, 10)).sum().backward()
facekernels.st_graph_conv(torch.randn(2, 3, 4, 5, requires_grad=True), torch.randn(2, 6, 3),
                          torch.rand(2, 5, 5)).sum().backward()
facekernels.one_euro_filter(torch.randn(1, 20, 3), 1.0, 0.1)
facekernels.animation.toy_rig(num_shapes=4, resolution=3).vertex_mse(torch.rand(5, 4), torch.rand(5, 4))
print(f"facekernels {facekernels.__version__} OK from {where} on torch {torch.__version__} "
      f"({info['cpu_capability']}, families {','.join(info['families'])})")
