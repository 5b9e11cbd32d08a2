"""Helpers shared by the family test files (import them from here, never from conftest: the CUDA
emulation stage's tests/cudaemu/conftest.py would shadow that name)."""

import torch


def run_at_each_cpu_capability(script: str, tmp_path) -> dict:
    """Run `script` (which saves (level used, outputs) to sys.argv[1] with torch.save) in a subprocess per
    SIMD level, the level lowered through FACEKERNELS_CPU_CAPABILITY; returns {level: (used, outputs)}."""
    import os
    import subprocess
    import sys

    results = {}
    for level in ("default", "avx2", "avx512"):
        path = tmp_path / f"{level}.pt"
        env = dict(os.environ, FACEKERNELS_CPU_CAPABILITY=level)
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True)
        results[level] = torch.load(path)
    assert results["default"][0] == "default"
    return results


def assert_compiled_matches_eager(fn, args, **compile_kwargs) -> None:
    """torch.compile(fn, fullgraph=True) gives eager's outputs and, through .sum().backward(), eager's
    gradients for every argument that requires them."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, dynamic=False, **compile_kwargs)
    expected = fn(*args)
    differentiable = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]  # not a mask
    if differentiable:
        expected.sum().backward()
    grads = [a.grad.clone() for a in differentiable]
    for a in differentiable:
        a.grad = None
    out = compiled(*args)
    if differentiable:
        out.sum().backward()
    torch.testing.assert_close(out, expected)
    for a, g in zip(differentiable, grads):
        torch.testing.assert_close(a.grad, g)


# ---- fake kernels refuse what the native ops refuse (issue 17) ------------------------------------------


def native_error(fn, *args, **kwargs) -> Exception:
    """The exception fn(*args, **kwargs) raises on real tensors (an AssertionError if none)."""
    try:
        fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - any type: the callers compare it with the traced one
        return e
    raise AssertionError(f"{fn} did not raise on real tensors")


def assert_fake_refuses_like_native(fn, *args, **kwargs) -> Exception:
    """fn(*args, **kwargs) raises on real tensors, and raises the same exception type with the same message
    under FakeTensorMode, where only the ops' fake kernels run; returns the native exception."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._pytree import tree_map

    native = native_error(fn, *args, **kwargs)
    mode = FakeTensorMode()
    fake_args, fake_kwargs = tree_map(
        lambda a: mode.from_tensor(a) if isinstance(a, torch.Tensor) else a, (args, kwargs)
    )
    try:
        with mode:
            fn(*fake_args, **fake_kwargs)
    except Exception as e:  # noqa: BLE001
        assert type(e) is type(native), f"fake kernel raised {type(e).__name__}: {e}; native {native!r}"
        assert str(e) == str(native), f"fake kernel: {e}\nnative:      {native}"
        return native
    raise AssertionError(f"the fake kernel accepted what the native op refuses: {native!r}")


def _raised_while_tracing(error: Exception, native: Exception) -> bool:
    """Whether `error` (from torch.compile or torch.export) is, or was caused by, `native`'s type with its
    message: tracing wraps the fake kernel's error (Dynamo's TorchRuntimeError, a RuntimeError)."""
    seen = error
    while seen is not None:
        if isinstance(seen, type(native)) and str(native) in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _over_tensors(fn, args):
    """fn as a function of the tensors among args alone (the other arguments fixed), and those tensors."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]

    def call(*inputs):
        it = iter(inputs)
        return fn(*(next(it) if isinstance(a, torch.Tensor) else a for a in args))

    return call, tensors


def _assert_compile_refuses_like_native(fn, *args) -> None:
    """torch.compile(fn, fullgraph=True) refuses fn(*args) while tracing (no graph reaches the backend),
    with the native exception's type and message; non-tensor arguments are constants of the graph."""
    native = native_error(fn, *args)
    fn, args = _over_tensors(fn, args)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    try:
        torch.compile(fn, fullgraph=True, dynamic=False, backend=backend)(*args)
    except Exception as e:  # noqa: BLE001
        assert not graphs, f"traced without complaint; the error came only at run time: {e!r}"
        assert isinstance(e, type(native)) and _raised_while_tracing(e, native), f"{e!r}\nnative: {native!r}"
        return
    raise AssertionError(f"torch.compile accepted what the native op refuses: {native!r}")


def _assert_export_refuses_like_native(fn, *args) -> None:
    """torch.export.export of fn as a module refuses fn(*args) with the native exception's type and message;
    non-tensor arguments are constants of the module."""
    native = native_error(fn, *args)
    fn, args = _over_tensors(fn, args)

    class Wrapped(torch.nn.Module):
        def forward(self, *inputs):
            return fn(*inputs)

    try:
        torch.export.export(Wrapped(), tuple(args))
    except Exception as e:  # noqa: BLE001
        assert isinstance(e, type(native)) and _raised_while_tracing(e, native), f"{e!r}\nnative: {native!r}"
        return
    raise AssertionError(f"torch.export accepted what the native op refuses: {native!r}")


def assert_tracing_refuses_like_native(fn, *args) -> None:
    """Both torch.compile(fn, fullgraph=True) (while tracing: no graph reaches the backend) and torch.export
    refuse fn(*args) with the native exception's type and message; non-tensor arguments are constants."""
    _assert_compile_refuses_like_native(fn, *args)
    _assert_export_refuses_like_native(fn, *args)


def arguments(defaults: dict, **over) -> tuple:
    """The values of ``defaults`` with some replaced, in order: a bad-input case of an op's positional
    arguments, e.g. arguments(good, grad_out=wrong_shape)."""
    unknown = set(over) - set(defaults)
    assert not unknown, f"no such arguments: {unknown}"
    return tuple({**defaults, **over}.values())
