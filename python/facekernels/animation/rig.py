"""Linear blendshape rigs: evaluation, the Gram matrices of the vertex-space losses, loading and saving."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..ops._checks import shape_string as _shape

__all__ = ["ARKIT_52", "Rig", "toy_rig"]

# The 52 ARKit face-tracking blendshape names, in Apple's ARFaceAnchor.BlendShapeLocation order.
ARKIT_52 = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawLeft", "jawRight", "jawOpen", "mouthClose",
    "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)

# The shape order of an OBJ folder (Rig.save_obj_folder writes it, Rig.from_obj_folder reads it).
NAMES_FILE = "names.txt"


def _fail(exc: type[Exception], where: str, arg: str, expected: str, got: object) -> None:
    # The Python API's typed errors (ValueError, TypeError, KeyError); ops._checks.fail raises the native
    # ops' RuntimeError.
    raise exc(f"{where}: {arg} must be {expected}, got {got}")


def _as_tensor(where: str, arg: str, value: object) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if hasattr(value, "__array__") or isinstance(value, (list, tuple)):
        return torch.as_tensor(value)
    _fail(TypeError, where, arg, "a tensor or an array", type(value).__name__)
    raise AssertionError  # unreachable


def _bounds(where: str, arg: str, value: float | Tensor | Sequence[float], k: int, like: Tensor) -> Tensor:
    t = torch.as_tensor(value, dtype=like.dtype)
    if t.dim() == 0:
        t = t.expand(k)
    if t.shape != (k,):
        _fail(ValueError, where, arg, f"a number or a [K] = [{k}] tensor", f"shape {_shape(t)}")
    return t.clone()


class Rig(nn.Module):
    r"""A linear blendshape rig with optional pairwise corrective shapes.

    For weights ``w`` ``[..., K]`` the rig's features are ``f(w) = [w, w_i * w_j for (i, j) in pairs]``
    (``K + P`` of them) and its vertices::

        vertices(w) = neutral + sum_k f(w)_k * basis[k],   basis = [deltas; corrective_deltas]  [K + P, V, 3]

    as in SMPL-X / FLAME's ``lbs.py`` (``neutral + einsum(weights, deltas)``), plus the correctives: the
    vertices are linear in ``f(w)``, which is what lets :meth:`vertex_mse` work through the ``(K+P) x (K+P)``
    Gram matrix of the basis without building a vertex.

    Args:
        neutral: ``[V, 3]``.
        deltas: ``[K, V, 3]``, each shape minus the neutral.
        names: ``K`` shape names (default ``shape0``, ...).
        lower, upper: the weights' range, numbers or ``[K]``.
        correctives: ``(pairs [P, 2] int, corrective_deltas [P, V, 3])`` or ``None``: shape ``p`` is added
            with weight ``w[pairs[p, 0]] * w[pairs[p, 1]]``.
        regions: name -> ``[V]`` vertex mask (bool, or float weights >= 0), for the per-region losses.
        faces: ``[F, 3]`` int triangle indices (rendering, OBJ export), optional.

    The rig is an ``nn.Module`` whose tensors are buffers (``.to()``, ``state_dict``); it has no parameters.
    """

    def __init__(
        self,
        neutral: Tensor,
        deltas: Tensor,
        names: Sequence[str] | None = None,
        lower: float | Tensor | Sequence[float] = 0.0,
        upper: float | Tensor | Sequence[float] = 1.0,
        correctives: tuple[Tensor, Tensor] | None = None,
        regions: Mapping[str, Tensor] | None = None,
        faces: Tensor | None = None,
    ) -> None:
        super().__init__()
        where = "Rig"
        neutral = _as_tensor(where, "neutral", neutral)
        deltas = _as_tensor(where, "deltas", deltas)
        if not neutral.is_floating_point() or neutral.dim() != 2 or neutral.shape[1] != 3:
            _fail(ValueError, where, "neutral", "a floating [V, 3] tensor", f"{neutral.dtype} {_shape(neutral)}")
        num_vertices = neutral.shape[0]
        if deltas.dim() != 3 or deltas.shape[1:] != (num_vertices, 3):
            _fail(ValueError, where, "deltas", f"[K, V, 3] = [K, {num_vertices}, 3] (V of neutral)", _shape(deltas))
        deltas = deltas.to(neutral.dtype)
        k = deltas.shape[0]
        names = [f"shape{i}" for i in range(k)] if names is None else [str(n) for n in names]
        if len(names) != k:
            _fail(ValueError, where, "names", f"K = {k} names (one per delta)", f"{len(names)} names")
        if len(set(names)) != k:
            _fail(ValueError, where, "names", "unique", sorted(n for n in names if names.count(n) > 1))
        self.names = names
        self.register_buffer("neutral", neutral.clone())
        self.register_buffer("deltas", deltas.clone())
        self.register_buffer("lower", _bounds(where, "lower", lower, k, neutral))
        self.register_buffer("upper", _bounds(where, "upper", upper, k, neutral))
        if bool((self.lower > self.upper).any()):
            _fail(ValueError, where, "lower", "<= upper for every shape", "lower > upper")
        pairs = torch.zeros(0, 2, dtype=torch.long)
        corrective_deltas = deltas.new_zeros(0, num_vertices, 3)
        if correctives is not None:
            if not isinstance(correctives, (tuple, list)) or len(correctives) != 2:
                _fail(TypeError, where, "correctives", "a (pairs [P, 2], corrective_deltas [P, V, 3]) pair",
                      type(correctives).__name__)
            pairs = _as_tensor(where, "correctives[0]", correctives[0])
            corrective_deltas = _as_tensor(where, "correctives[1]", correctives[1]).to(neutral.dtype)
            if pairs.dtype.is_floating_point or pairs.dim() != 2 or pairs.shape[1] != 2:
                _fail(ValueError, where, "correctives[0] (pairs)", "an integer [P, 2] tensor",
                      f"{pairs.dtype} {_shape(pairs)}")
            if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= k):
                _fail(ValueError, where, "correctives[0] (pairs)", f"shape indices in [0, {k})",
                      f"[{int(pairs.min())}, {int(pairs.max())}]")
            if corrective_deltas.shape != (pairs.shape[0], num_vertices, 3):
                _fail(ValueError, where, "correctives[1] (corrective_deltas)",
                      f"[P, V, 3] = [{pairs.shape[0]}, {num_vertices}, 3]", _shape(corrective_deltas))
            pairs = pairs.long()
        self.register_buffer("corrective_pairs", pairs.clone())
        self.register_buffer("corrective_deltas", corrective_deltas.clone())
        self.region_names: list[str] = []
        self._grams: dict = {}
        for name, mask in (regions or {}).items():
            self.add_region(name, mask)
        if faces is not None:
            faces = _as_tensor(where, "faces", faces)
            if faces.dtype.is_floating_point or faces.dim() != 2 or faces.shape[1] != 3:
                _fail(ValueError, where, "faces", "an integer [F, 3] tensor", f"{faces.dtype} {_shape(faces)}")
            faces = faces.long()
        self.register_buffer("faces", faces)

    # ---- sizes and features -------------------------------------------------------------------------
    @property
    def num_shapes(self) -> int:
        """K."""
        return self.deltas.shape[0]

    @property
    def num_vertices(self) -> int:
        """V."""
        return self.neutral.shape[0]

    @property
    def num_features(self) -> int:
        """K + P (shapes and correctives)."""
        return self.deltas.shape[0] + self.corrective_pairs.shape[0]

    def add_region(self, name: str, mask: Tensor) -> None:
        """Add (or replace) a named vertex region: ``mask`` ``[V]`` bool, or float weights >= 0."""
        mask = self._checked_mask("Rig.add_region", "mask", mask)
        self.register_buffer(f"region_{name}", mask.clone())
        if name not in self.region_names:
            self.region_names.append(name)
        self._grams.clear()  # a replaced region's old matrices must not be served for the new mask

    def _checked_mask(self, where: str, arg: str, mask: object) -> Tensor:
        """A ``[V]`` bool mask or float weights ``>= 0``, not all zero, in the rig's dtype and device."""
        mask = _as_tensor(where, arg, mask)
        if mask.shape != (self.num_vertices,):
            _fail(ValueError, where, arg, f"a [V] = [{self.num_vertices}] tensor", _shape(mask))
        mask = mask.to(self.neutral)
        # The value check needs a host sync, which a compiled graph cannot hold: an eager call checks.
        if not torch.compiler.is_compiling() and (bool((mask < 0).any()) or not bool((mask > 0).any())):
            _fail(ValueError, where, arg, "weights >= 0, not all zero", "a negative or empty mask")
        return mask

    def _apply(self, *args, **kwargs):  # .to(), .cuda(), .double(), ...: new tensors, new matrices
        self._grams.clear()
        return super()._apply(*args, **kwargs)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._grams.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def region_mask(self, name: str) -> Tensor:
        if name not in self.region_names:
            _fail(KeyError, "Rig.region_mask", "name", f"one of {self.region_names}", repr(name))
        return getattr(self, f"region_{name}")

    def _check_weights(self, where: str, arg: str, w: Tensor) -> None:
        if not isinstance(w, Tensor):
            _fail(TypeError, where, arg, "a tensor [..., K]", type(w).__name__)
        if not w.is_floating_point():
            _fail(TypeError, where, arg, "a floating tensor", w.dtype)
        if w.dim() == 0 or w.shape[-1] != self.num_shapes:
            _fail(ValueError, where, arg, f"[..., K] with K = {self.num_shapes} (the rig's shapes)", _shape(w))

    def features(self, w: Tensor) -> Tensor:
        """``[..., K]`` weights -> ``[..., K + P]``: the weights and the corrective products."""
        self._check_weights("Rig.features", "w", w)
        if self.corrective_pairs.shape[0] == 0:
            return w
        i, j = self.corrective_pairs[:, 0], self.corrective_pairs[:, 1]
        return torch.cat([w, w[..., i] * w[..., j]], dim=-1)

    def basis(self) -> Tensor:
        """``[K + P, V, 3]``: the deltas and the corrective deltas."""
        return torch.cat([self.deltas, self.corrective_deltas], dim=0)

    def forward(self, w: Tensor) -> Tensor:
        """``[..., K]`` weights -> ``[..., V, 3]`` vertices."""
        f = self.features(w)
        basis = self.basis().to(f.dtype)
        return self.neutral.to(f.dtype) + torch.einsum("...k,kvc->...vc", f, basis)

    vertices = forward

    def clamp(self, w: Tensor) -> Tensor:
        """``w`` clamped to ``[lower, upper]`` per shape."""
        self._check_weights("Rig.clamp", "w", w)
        return torch.maximum(torch.minimum(w, self.upper.to(w)), self.lower.to(w))

    # ---- the Gram matrices ----------------------------------------------------------------------------
    def _mask(self, where: str, region: str | Tensor | None) -> Tensor | None:
        if region is None:
            return None
        if isinstance(region, str):
            if region not in self.region_names:
                _fail(KeyError, where, "region", f"None, a [V] mask or one of {self.region_names}", repr(region))
            return getattr(self, f"region_{region}")
        return self._checked_mask(where, "region", region)

    def gram(self, region: str | Tensor | None = None, translation_invariant: bool = False,
             dtype: torch.dtype | None = None) -> Tensor:
        r"""The ``(K+P) x (K+P)`` Gram matrix of the basis over the vertices of ``region`` (all by default)::

            G[a, b] = sum_v m_v <B_a[v], B_b[v]>,   m = 1, the mask or its weights

        With ``translation_invariant`` the basis is first mean-centred over the (weighted) vertices,
        ``B_a[v] - sum_u m_u B_a[u] / sum_u m_u``, so ``G`` measures the error left after removing the mean
        translation of the vertex difference. Computed in float64 once and cached per (region,
        translation_invariant, dtype, device) with the factor the losses use (:meth:`gram_factor`); the
        cache is rebuilt when a basis tensor or a named region's mask is replaced (attribute, ``.data``,
        ``add_region``, ``load_state_dict``, ``.to()``) or changed in place. Not differentiable in the rig.
        """
        return self._forms("Rig.gram", region, translation_invariant, dtype)[0]

    def gram_factor(self, region: str | Tensor | None = None, translation_invariant: bool = False,
                    dtype: torch.dtype | None = None) -> Tensor:
        r"""``L`` ``[K+P, K+P]`` with ``L L^T = G`` (:meth:`gram`), from G's eigendecomposition in float64,
        ``L = U sqrt(max(lambda, 0))``: the losses compute ``d^T G d`` as ``|d L|^2``, which is never
        negative and, in float32, accurate to about ``eps sqrt(cond G)`` instead of ``eps cond G``."""
        return self._forms("Rig.gram_factor", region, translation_invariant, dtype)[1]

    def _stamp(self, region: str | Tensor | None) -> tuple:
        """What the cached matrices were computed from: each tensor itself (compared with ``is``, so a
        replaced tensor never matches, even at a reused ``id``), its version counter (in-place edits) and its
        data pointer, with its storage kept alive so that no other tensor can take that address (``.data``
        swaps)."""
        tensors = [self.deltas, self.corrective_deltas, self.corrective_pairs]
        if isinstance(region, str):
            tensors.append(getattr(self, f"region_{region}"))
        return tuple((t, t.untyped_storage(), t._version, t.data_ptr()) for t in tensors)

    @staticmethod
    def _stamp_matches(old: tuple, new: tuple) -> bool:
        return len(old) == len(new) and all(a[0] is b[0] and a[2] == b[2] and a[3] == b[3]
                                            for a, b in zip(old, new, strict=True))

    def _forms(self, where: str, region: str | Tensor | None, translation_invariant: bool,
               dtype: torch.dtype | None, mask: Tensor | None | bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``(G, L, [L, L L^T])`` in ``dtype``: the Gram matrix, its factor, and the factor beside the
        factor's product (the gradient's matrix, equal to ``G`` but for the eigenvalues clamped at 0), cached.
        ``mask``: the region's mask when the caller has already resolved it (``_mask``), else resolved here."""
        if mask is False:
            mask = self._mask(where, region)
        dtype = dtype or self.neutral.dtype
        compiling = torch.compiler.is_compiling()
        # Under torch.compile the version counters cannot be read: cached matrices are used as they are (an
        # eager call before compiling fills the cache), missing ones are computed in the graph.
        stamp = None if compiling else self._stamp(region)
        # Named regions and the whole mesh are cached; a mask passed as a tensor is not (name it with
        # add_region to cache its matrices).
        cached = region is None or isinstance(region, str)
        key = (region, bool(translation_invariant), dtype, self.neutral.device)
        hit = self._grams.get(key) if cached else None
        if hit is not None and (compiling or self._stamp_matches(hit[0], stamp)):
            return hit[1]
        with torch.no_grad():
            basis = self.basis().to(torch.float64)
            m = None if mask is None else mask.to(torch.float64)
            if translation_invariant:
                if m is None:
                    basis = basis - basis.mean(dim=1, keepdim=True)
                else:
                    mean = torch.einsum("v,kvc->kc", m, basis) / m.sum()
                    basis = basis - mean[:, None, :]
            flat = basis.reshape(basis.shape[0], -1)
            weighted = flat if m is None else (basis * m[None, :, None]).reshape(basis.shape[0], -1)
            g = weighted @ flat.T
            g = (g + g.T) / 2
            eigenvalues, eigenvectors = torch.linalg.eigh(g)
            factor = eigenvectors * eigenvalues.clamp_min(0).sqrt()
            forms = (g.to(dtype), factor.to(dtype), torch.cat([factor, factor @ factor.T], dim=1).to(dtype))
        if cached and not compiling:
            self._grams[key] = (stamp, forms)
        return forms

    def _normaliser(self, mask: Tensor | None) -> float | Tensor:
        """3 x the number of vertices, or 3 x the mask's sum (a 0-d tensor: no host sync, traceable)."""
        return 3.0 * self.num_vertices if mask is None else 3.0 * mask.sum()

    # ---- losses through the Gram matrix ------------------------------------------------------------------
    def vertex_mse(self, w_pred: Tensor, w_target: Tensor, *, region: str | Tensor | None = None,
                   translation_invariant: bool = False, reduction: str = "mean") -> Tensor:
        r"""The mean squared vertex error between the meshes of ``w_pred`` and ``w_target``, without
        building them::

            mean_{v, xyz} (vertices(w_pred) - vertices(w_target))^2 = d^T G d / (3 V),   d = f(w_pred) - f(w_target)

        exactly (the neutral cancels; the vertices are linear in the features ``f``). With a ``region``
        mask ``m``, ``sum_v m_v |dv_v|^2 / (3 sum_v m_v)`` with that region's Gram matrix; with
        ``translation_invariant`` the error after removing its mean translation (:meth:`gram`).

        Cost: ``O(N (K+P)^2)`` for ``N`` frames and ``O((K+P)^2)`` memory beyond the inputs, against
        ``O(N V K)`` and two ``[N, V, 3]`` meshes for the einsum.

        Args:
            w_pred, w_target: ``[..., K]`` of the same shape.
            reduction: ``"mean"`` (over frames), ``"sum"`` or ``"none"`` (``[...]``, one per frame).
        """
        where = "Rig.vertex_mse"
        self._check_pair(where, w_pred, w_target)
        d = self.features(w_pred) - self.features(w_target)
        return self._feature_loss(where, d, region, translation_invariant, reduction)

    def _feature_loss(self, where: str, d: Tensor, region: str | Tensor | None, translation_invariant: bool,
                      reduction: str) -> Tensor:
        """``d^T G d / normaliser`` per frame of the feature differences ``d`` ``[..., F]``, reduced."""
        mask = self._mask(where, region)
        if reduction not in ("mean", "sum", "none"):
            _reduce(where, d, reduction)
        with _no_autocast(d):
            d = _full_precision(d)
            _, factor, factors = (f.to(d.device) for f in self._forms(where, region, translation_invariant,
                                                                      d.dtype, mask))
            normaliser = self._normaliser(mask)
            if isinstance(normaliser, Tensor):
                normaliser = normaliser.to(d)
            if reduction == "none":
                return ((d @ factor) ** 2).sum(-1) / normaliser
            frames = d[..., 0].numel() if reduction == "mean" else 1
            if frames == 0:
                return d.new_full((), float("nan") if reduction == "mean" else 0.0)
            return _SummedSquares.apply(d, factors, 1.0 / (normaliser * frames))[0]

    def region_vertex_mse(self, w_pred: Tensor, w_target: Tensor, *, translation_invariant: bool = False,
                          reduction: str = "mean") -> Tensor:
        """:meth:`vertex_mse` of every named region at once: ``[R]`` (``[..., R]`` with ``reduction="none"``),
        in the order of ``region_names``."""
        where = "Rig.region_vertex_mse"
        self._check_pair(where, w_pred, w_target)
        if not self.region_names:
            _fail(ValueError, where, "the rig", "one with regions (Rig(..., regions=...))", "no regions")
        d = self.features(w_pred) - self.features(w_target)
        with _no_autocast(d):
            d = _full_precision(d)
            factors = torch.stack([self._forms(where, r, translation_invariant, d.dtype)[1]
                                   for r in self.region_names]).to(d.device)
            norms = torch.stack([self._normaliser(self.region_mask(r)) for r in self.region_names]).to(d)
            per = (torch.einsum("...a,rab->...rb", d, factors) ** 2).sum(-1) / norms
            return _reduce(where, per, reduction, dims=1)

    def _check_pair(self, where: str, w_pred: Tensor, w_target: Tensor) -> None:
        self._check_weights(where, "w_pred", w_pred)
        self._check_weights(where, "w_target", w_target)
        if w_pred.shape != w_target.shape:
            _fail(ValueError, where, "w_target", f"the shape of w_pred {_shape(w_pred)}", _shape(w_target))

    # ---- loading and saving ------------------------------------------------------------------------------
    @classmethod
    def from_npz(cls, path: str | Path) -> Rig:
        """Load a rig saved by :meth:`save_npz`: ``neutral`` ``[V, 3]``, ``deltas`` ``[K, V, 3]`` (or
        ``shapes``, absolute ``[K, V, 3]``), and optionally ``names``, ``lower``, ``upper``,
        ``corrective_pairs`` + ``corrective_deltas``, ``faces`` and ``region_<name>`` masks."""
        import numpy as np

        path = _npz_path(path)
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        where = f"Rig.from_npz({path.name})"
        if "neutral" not in arrays or ("deltas" not in arrays and "shapes" not in arrays):
            _fail(ValueError, where, "the file", "an archive with 'neutral' and 'deltas' (or 'shapes')",
                  sorted(arrays))
        neutral = torch.from_numpy(arrays["neutral"])
        deltas = (torch.from_numpy(arrays["deltas"]) if "deltas" in arrays
                  else torch.from_numpy(arrays["shapes"]) - neutral)
        names = [str(n) for n in arrays["names"]] if "names" in arrays else None
        correctives = None
        if "corrective_pairs" in arrays:
            correctives = (torch.from_numpy(arrays["corrective_pairs"]), torch.from_numpy(arrays["corrective_deltas"]))
        regions = {k.removeprefix("region_"): torch.from_numpy(v) for k, v in arrays.items() if k.startswith("region_")}
        return cls(neutral, deltas, names,
                   lower=torch.from_numpy(arrays["lower"]) if "lower" in arrays else 0.0,
                   upper=torch.from_numpy(arrays["upper"]) if "upper" in arrays else 1.0,
                   correctives=correctives, regions=regions,
                   faces=torch.from_numpy(arrays["faces"]) if "faces" in arrays else None)

    def save_npz(self, path: str | Path) -> None:
        """Save everything :meth:`from_npz` reads (to ``path``, with ``.npz`` appended unless it ends so, as
        :meth:`from_npz` reads it)."""
        import numpy as np

        arrays = {"neutral": self.neutral, "deltas": self.deltas, "lower": self.lower, "upper": self.upper}
        if self.corrective_pairs.shape[0]:
            arrays |= {"corrective_pairs": self.corrective_pairs, "corrective_deltas": self.corrective_deltas}
        if self.faces is not None:
            arrays["faces"] = self.faces
        arrays |= {f"region_{r}": self.region_mask(r) for r in self.region_names}
        out = {k: v.detach().cpu().numpy() for k, v in arrays.items()}
        out["names"] = np.array(self.names)
        np.savez(_npz_path(path), **out)

    @classmethod
    def from_obj_folder(cls, folder: str | Path, neutral: str = "neutral.obj",
                        names: Sequence[str] | None = None, dtype: torch.dtype = torch.float32) -> Rig:
        """Load a rig from a folder of OBJ meshes with one vertex order: ``neutral`` and one ``<name>.obj``
        per shape key (the shape itself, not its delta). Correctives are ``<a>+<b>.obj`` (the neutral plus
        the corrective delta of the pair of shapes ``a`` and ``b``). ``names`` picks and orders the shapes;
        by default the order of the folder's ``names.txt`` (one name a line, as :meth:`save_obj_folder`
        writes it) when there is one, else the ARKit-52 names present in ARKit order followed by the other
        shapes sorted. Faces come from the neutral OBJ."""
        folder = Path(folder)
        where = f"Rig.from_obj_folder({folder.name})"
        if not (folder / neutral).is_file():
            _fail(FileNotFoundError, where, "neutral", f"an OBJ file in the folder ({neutral})", "no such file")
        base, faces = read_obj(folder / neutral, dtype)
        stems = sorted(p.stem for p in folder.glob("*.obj") if p.name != neutral)
        keys = [s for s in stems if "+" not in s]
        if names is None and (folder / NAMES_FILE).is_file():
            names = [n.strip() for n in (folder / NAMES_FILE).read_text().splitlines() if n.strip()]
        if names is None:
            arkit = {n: i for i, n in enumerate(ARKIT_52)}
            names = sorted((k for k in keys if k in arkit), key=arkit.__getitem__) + \
                [k for k in keys if k not in arkit]
        missing = [n for n in names if n not in keys]
        if missing:
            _fail(FileNotFoundError, where, "names", "shapes with an OBJ file each", f"missing {missing}")
        index = {n: i for i, n in enumerate(names)}
        deltas = torch.stack([_read_shape(folder / f"{n}.obj", base, where, dtype) - base for n in names])
        pairs, corrective = [], []
        for stem in (s for s in stems if "+" in s):
            a, b = stem.split("+", 1)
            if a in index and b in index:
                pairs.append((index[a], index[b]))
                corrective.append(_read_shape(folder / f"{stem}.obj", base, where, dtype) - base)
        correctives = (torch.tensor(pairs), torch.stack(corrective)) if pairs else None
        return cls(base, deltas, names, correctives=correctives, faces=faces)

    def save_obj_folder(self, folder: str | Path, neutral: str = "neutral.obj") -> None:
        """Write the layout :meth:`from_obj_folder` reads, with ``names.txt`` keeping the shapes' order (bounds
        and regions are not part of it)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / NAMES_FILE).write_text("".join(f"{n}\n" for n in self.names))
        write_obj(folder / neutral, self.neutral, self.faces)
        for name, delta in zip(self.names, self.deltas, strict=True):
            write_obj(folder / f"{name}.obj", self.neutral + delta, self.faces)
        for (a, b), delta in zip(self.corrective_pairs.tolist(), self.corrective_deltas, strict=True):
            write_obj(folder / f"{self.names[a]}+{self.names[b]}.obj", self.neutral + delta, self.faces)


def _no_autocast(d: Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on ``d``'s device: the quadratic forms cancel a lot (``cond G``), so like torch's
    ``mse_loss`` under autocast they run in float32 (:func:`_full_precision`) and return a float32 loss."""
    device = d.device.type
    return torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else \
        contextlib.nullcontext()


def _full_precision(d: Tensor) -> Tensor:
    """``d``, a float16/bfloat16 one cast to float32 (its gradient flows back in its own dtype)."""
    return d.float() if d.dtype in (torch.float16, torch.bfloat16) else d


class _SummedSquares(torch.autograd.Function):
    """``scale * sum_n |d_n L|^2`` = ``scale * sum_n d_n^T G d_n`` with ``G = L L^T`` (neither
    differentiated), from ``factors = [L, L L^T]`` ``[F, 2F]``: one product ``d @ factors`` gives both
    ``y = d L`` (the loss, a sum of squares) and ``q = d L L^T``, so the backward is one elementwise op,
    ``grad_d = 2 scale grad q``, instead of autograd's ops through the matmul, the square and the sums.
    With grad mode on in the backward (``create_graph=True``, torch.func) it recomputes ``q`` from the saved
    ``d`` in differentiable ops instead, so double backward and torch.func transforms are exact."""

    generate_vmap_rule = True

    @staticmethod
    def forward(d: Tensor, factors: Tensor, scale: float | Tensor) -> tuple[Tensor, Tensor]:
        features = d.shape[-1]
        yq = d @ factors
        y, q = yq[..., :features], yq[..., features:]
        y = y.reshape(-1)
        return torch.dot(y, y) * scale, q  # scale: a float or a 0-d tensor

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        d, factors, scale = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.scale_is_tensor = isinstance(scale, Tensor)
        ctx.save_for_backward(d, factors, output[1], *((scale,) if ctx.scale_is_tensor else ()))
        ctx.scale = None if ctx.scale_is_tensor else scale

    @staticmethod
    def backward(ctx, grad: Tensor, _grad_q: Tensor | None):
        d, factors, q, *rest = ctx.saved_tensors
        scale = rest[0] if ctx.scale_is_tensor else ctx.scale
        if torch.is_grad_enabled():  # a graph of the gradient is asked for: q as a function of d
            with _no_autocast(d):  # backward() called inside autocast: the forward's precision
                q = d @ factors[:, d.shape[-1]:]
        return q * (grad * (2.0 * scale)), None, None


def _npz_path(path: str | Path) -> Path:
    """numpy's savez appends ``.npz`` to a path without it; loading the same path must find that file."""
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _reduce(where: str, per_frame: Tensor, reduction: str, dims: int = 0) -> Tensor:
    """Reduce ``per_frame`` over every dimension but its last ``dims``."""
    flat = per_frame.reshape(-1, *per_frame.shape[per_frame.dim() - dims:])
    if reduction == "mean":
        return flat.mean(0)
    if reduction == "sum":
        return flat.sum(0)
    if reduction == "none":
        return per_frame
    _fail(ValueError, where, "reduction", "'mean', 'sum' or 'none'", repr(reduction))
    raise AssertionError  # unreachable


def read_obj(path: Path, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor | None]:
    """The vertices ``[V, 3]`` and triangles ``[F, 3]`` (``None`` without faces; polygons fanned) of an OBJ."""
    vertices, faces = [], []
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            vertices.append([float(p) for p in parts[1:4]])
        elif parts[0] == "f":
            # 1-based, or negative: relative to the vertices read so far (-1 is the last one)
            idx = [i - 1 if i > 0 else len(vertices) + i for i in (int(p.split("/")[0]) for p in parts[1:])]
            faces += [[idx[0], idx[i], idx[i + 1]] for i in range(1, len(idx) - 1)]
    return torch.tensor(vertices, dtype=dtype).reshape(-1, 3), torch.tensor(faces).reshape(-1, 3) if faces else None


def write_obj(path: Path, vertices: Tensor, faces: Tensor | None) -> None:
    # As many digits as read back to the same value: 17 for float64, 9 for float32 (and below).
    digits = 17 if vertices.dtype == torch.float64 else 9
    lines = [f"v {x:.{digits}g} {y:.{digits}g} {z:.{digits}g}" for x, y, z in vertices.detach().cpu().double().tolist()]
    if faces is not None:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces.tolist()]
    Path(path).write_text("\n".join(lines) + "\n")


def _read_shape(path: Path, base: Tensor, where: str, dtype: torch.dtype) -> Tensor:
    vertices, _ = read_obj(path, dtype)
    if vertices.shape != base.shape:
        _fail(ValueError, where, path.name, f"a mesh with the neutral's {base.shape[0]} vertices",
              f"{vertices.shape[0]} vertices")
    return vertices


def toy_rig(num_shapes: int = 52, resolution: int = 24, correctives: bool = False, seed: int = 0,
            dtype: torch.dtype = torch.float32) -> Rig:
    """A tiny procedural face rig for tests and examples: a ``resolution x resolution`` grid bent into a
    half-cylinder "face" (``V = resolution^2``), ``num_shapes`` smooth local deformations named after the
    ARKit-52 shapes (for ``num_shapes <= 52``), weights in ``[0, 1]``, regions ``upper``/``lower``/``left``/
    ``right``, and with ``correctives`` a corrective shape for each of the first ``num_shapes // 4``
    neighbouring pairs. Deterministic in ``seed``."""
    if num_shapes < 1:
        _fail(ValueError, "toy_rig", "num_shapes", ">= 1", num_shapes)
    if resolution < 2:
        _fail(ValueError, "toy_rig", "resolution", ">= 2", resolution)
    g = torch.Generator().manual_seed(seed)
    n = resolution
    u = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
    vv, uu = torch.meshgrid(u, u, indexing="ij")
    angle = uu * (math.pi / 2.5)
    neutral = torch.stack([torch.sin(angle), vv * 1.2, torch.cos(angle) - 1.0], dim=-1).reshape(-1, 3)
    flat = torch.stack([uu, vv], dim=-1).reshape(-1, 2)

    def bumps(count: int) -> Tensor:
        centres = torch.rand(count, 2, generator=g, dtype=torch.float64) * 1.6 - 0.8
        widths = 0.15 + 0.25 * torch.rand(count, 1, generator=g, dtype=torch.float64)
        direction = torch.randn(count, 3, generator=g, dtype=torch.float64)
        direction = direction / direction.norm(dim=1, keepdim=True)
        amplitude = 0.05 + 0.15 * torch.rand(count, 1, 1, generator=g, dtype=torch.float64)
        dist2 = ((flat[None] - centres[:, None]) ** 2).sum(-1)
        return amplitude * torch.exp(-dist2 / (2 * widths**2))[..., None] * direction[:, None, :]

    deltas = bumps(num_shapes)
    names = list(ARKIT_52[:num_shapes]) if num_shapes <= len(ARKIT_52) else None
    pairs = None
    if correctives and num_shapes >= 2:
        count = max(1, num_shapes // 4)
        idx = torch.arange(count)
        pairs = (torch.stack([idx, (idx + 1) % num_shapes], dim=1), 0.5 * bumps(count))
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a = r * n + c
            faces += [[a, a + 1, a + n], [a + 1, a + n + 1, a + n]]
    regions = {"upper": flat[:, 1] > 0, "lower": flat[:, 1] <= 0, "left": flat[:, 0] < 0, "right": flat[:, 0] >= 0}
    if pairs is not None:
        pairs = (pairs[0], pairs[1].to(dtype))
    return Rig(neutral.to(dtype), deltas.to(dtype), names, correctives=pairs, regions=regions,
               faces=torch.tensor(faces))
