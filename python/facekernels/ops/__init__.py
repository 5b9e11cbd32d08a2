"""The facekernels ops: public functions over ``torch.ops.facekernels``, with fake and autograd
registrations.

Each op family is one module, ``ops/<family>.py``, whose ``__all__`` names its public functions; they are
re-exported here (and from the top-level package), so adding a family is one line in ``FAMILIES``.
"""

from importlib import import_module

FAMILIES = (
    "alignment_energy",
    "circular_conv",
    "correlation",
    "diff_attention",
    "edge_conv",
    "local_stats",
    "selective_scan",
    "st_graph_conv",
    "temporal_filter",
    "triplet_attention",
)

__all__: list[str] = []
for _family in FAMILIES:
    _module = import_module(f"{__name__}.{_family}")
    # the function replaces the attribute the import set to the module of the same name (circular_conv, ...)
    globals().update({name: getattr(_module, name) for name in _module.__all__})
    __all__ += _module.__all__
__all__.sort()
del _family, _module
