"""Stage-1 filters: plug-ins with one interface, run in order before any forward pass.

A filter either rejects a contribution (with a reason an operator can read) or shrinks it through the
multipliers on `Contribution` (`penalty` for reliability, `sync` for Sybil clusters). Similarity works on
sparse fingerprints (the chosen coefficients and their values), so comparing a window against itself and
against recent windows never materialises dense N×P matrices."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from torch import Tensor

from base.report import Rejection, RejectReason
from validator.domain import Contribution


@dataclass(frozen=True)
class FilterConfig:
    max_misses: int = 3  # misses within the reliability horizon above which a trainer is rejected
    reliability_horizon: int = 10  # windows
    penalty_per_miss: float = 0.1  # score multiplier lost per recent miss (at or below max_misses)
    cosine_threshold: float = 0.95  # cos ≥ this → near-identical updates
    jaccard_threshold: float = 0.9  # overlap beyond chance ≥ this, with cos ≥ jaccard_min_cosine → near-identical
    jaccard_min_cosine: float = 0.5
    copy_horizon: int = 3  # how many earlier windows' accepted updates a copy is checked against


@dataclass(frozen=True)
class UpdateFingerprint:
    """The sparse support of an update: sorted global coefficient keys and the values there (float64)."""

    trainer: str
    window: int
    cid: str
    keys: Tensor
    values: Tensor


@dataclass(frozen=True)
class FilterContext:
    window: int
    current_model_cid: str
    param_shapes: Mapping[str, tuple[int, ...]]
    stale_bases: Mapping[str, int] = field(default_factory=dict)  # older bases still accepted → windows behind
    misses: Mapping[str, int] = field(default_factory=dict)  # trainer → misses in the reliability horizon
    recent_accepted: Sequence[UpdateFingerprint] = ()  # accepted updates of earlier windows


class Filter(Protocol):
    name: str

    def apply(self, contribs: list[Contribution], ctx: FilterContext) -> tuple[list[Contribution], list[Rejection]]:
        ...


def _reject(c: Contribution, reason: RejectReason, detail: str) -> Rejection:
    return Rejection(trainer=c.trainer, window=c.window, reason=reason, detail=detail, cid=c.cid)


class FormatFilter:
    """Tensors the model has, with its shapes, finite, indices in range, and Δ zero off its chosen indices."""

    name = "format"

    def apply(self, contribs: list[Contribution], ctx: FilterContext) -> tuple[list[Contribution], list[Rejection]]:
        kept: list[Contribution] = []
        rejected: list[Rejection] = []
        for c in contribs:
            problem = format_problem(c, ctx.param_shapes)
            if problem:
                rejected.append(_reject(c, RejectReason.MALFORMED, problem))
            else:
                kept.append(c)
        return kept, rejected


def format_problem(c: Contribution, shapes: Mapping[str, tuple[int, ...]]) -> str:
    """Why `c` cannot be scored, or "" when it can. One pass over each dense tensor (a nonzero count); the
    finiteness check runs on the chosen values only, since a NaN elsewhere shows up as an off-support nonzero."""
    if not c.delta:
        return "empty update"
    for name, tensor in c.delta.items():
        if name not in shapes:
            return f"unknown tensor {name!r}"
        if tuple(tensor.shape) != tuple(shapes[name]):
            return f"tensor {name!r} has shape {tuple(tensor.shape)}, model {tuple(shapes[name])}"
        if tensor.dtype != torch.float32:
            return f"tensor {name!r} is {tensor.dtype}, not float32"
    for name, idx in c.indices.items():
        if name not in c.delta:
            return f"indices for {name!r} without values"
        if idx.dtype not in (torch.int32, torch.int64) or idx.dim() != 1:
            return f"indices for {name!r} must be a 1-d integer tensor"
        numel = c.delta[name].numel()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= numel):
            return f"indices for {name!r} out of range [0, {numel})"
    for name, (_, values) in c.support.items():
        if not bool(torch.isfinite(values).all()):
            return f"tensor {name!r} holds a non-finite value"
        if int(torch.count_nonzero(c.delta[name])) != int(torch.count_nonzero(values)):
            return f"tensor {name!r} is nonzero outside its chosen indices"
    return ""


class StalenessFilter:
    """Keeps updates computed on the current model or on one of the few older bases the run still accepts
    (`stale_bases`, see validator/window_inputs.base_models); rejects the rest as stale."""

    name = "staleness"

    def apply(self, contribs: list[Contribution], ctx: FilterContext) -> tuple[list[Contribution], list[Rejection]]:
        accepted = {ctx.current_model_cid, *ctx.stale_bases}
        kept = [c for c in contribs if c.base_model_cid in accepted]
        rejected = [
            _reject(c, RejectReason.STALE, f"base model {c.base_model_cid} is not the current "
                    f"{ctx.current_model_cid} nor one of {len(ctx.stale_bases)} recent ones")
            for c in contribs if c.base_model_cid not in accepted
        ]
        return kept, rejected


class ReliabilityFilter:
    """Too many recent misses → rejected; a few → a score penalty of `penalty_per_miss` each."""

    name = "reliability"

    def __init__(self, config: FilterConfig) -> None:
        self.config = config

    def apply(self, contribs: list[Contribution], ctx: FilterContext) -> tuple[list[Contribution], list[Rejection]]:
        kept: list[Contribution] = []
        rejected: list[Rejection] = []
        for c in contribs:
            misses = ctx.misses.get(c.trainer, 0)
            if misses > self.config.max_misses:
                detail = f"{misses} misses in {self.config.reliability_horizon} windows > {self.config.max_misses}"
                rejected.append(_reject(c, RejectReason.UNRELIABLE, detail))
            else:
                factor = max(0.0, 1.0 - self.config.penalty_per_miss * misses)
                kept.append(replace(c, penalty=c.penalty * factor))
        return kept, rejected


class DuplicateCidFilter:
    """A CID already accepted in a recent window is rejected. Within a window one CID from several trainers is
    a coordinated submission: the lowest address keeps it (one contribution's worth), the others are rejected."""

    name = "duplicate_cid"

    def apply(self, contribs: list[Contribution], ctx: FilterContext) -> tuple[list[Contribution], list[Rejection]]:
        earlier = {fp.cid: fp for fp in ctx.recent_accepted}
        owner: dict[str, str] = {}
        kept: list[Contribution] = []
        rejected: list[Rejection] = []
        for c in sorted(contribs, key=lambda c: c.trainer):
            if c.cid in earlier:
                fp = earlier[c.cid]
                detail = f"accepted from {fp.trainer} in window {fp.window}"
                rejected.append(_reject(c, RejectReason.DUPLICATE_CID, detail))
            elif c.cid in owner:
                rejected.append(_reject(c, RejectReason.DUPLICATE_CID, f"same CID as {owner[c.cid]} in this window"))
            else:
                owner[c.cid] = c.trainer
                kept.append(c)
        return kept, rejected


class CopyOfEarlierFilter:
    """Under commit–reveal the only update a copier can see is an already revealed one, so a near copy of an
    accepted update from a recent window is rejected outright."""

    name = "copy_of_earlier"

    def __init__(self, config: FilterConfig) -> None:
        self.config = config

    def apply(self, contribs: list[Contribution], ctx: FilterContext) -> tuple[list[Contribution], list[Rejection]]:
        earlier = [fp for fp in ctx.recent_accepted if fp.window < ctx.window]
        if not contribs or not earlier:
            return list(contribs), []
        current = [fingerprint(c, ctx.param_shapes) for c in contribs]
        cos, jac = similarity_matrices(current + earlier, total_size(ctx.param_shapes))
        kept: list[Contribution] = []
        rejected: list[Rejection] = []
        n = len(current)
        for i, c in enumerate(contribs):
            match = next((j for j in range(len(earlier)) if self._near(cos[i, n + j], jac[i, n + j])), None)
            if match is None:
                kept.append(c)
            else:
                fp = earlier[match]
                detail = (f"near copy of {fp.cid} by {fp.trainer} (window {fp.window}): "
                          f"cosine {float(cos[i, n + match]):.4f}, index overlap {float(jac[i, n + match]):.4f}")
                rejected.append(_reject(c, RejectReason.COPY_OF_EARLIER, detail))
        return kept, rejected

    def _near(self, cos: Tensor, jac: Tensor) -> bool:
        return is_near_identical(float(cos), float(jac), self.config)


class SybilClusterFilter:
    """Single-linkage clusters of near-identical updates in the same window are Sybils (SybilWall's insight:
    honest trainers on different data never send the same update), so together they earn at most 1/|cluster|
    of one contribution: each member keeps its own score × 1/|cluster|² (`sync`). Splitting one update over
    n identities thus earns *less* than sending it once. No member is rejected: nobody could have copied a
    same-window update under commit–reveal, so none of them is "the original"."""

    name = "sybil_cluster"

    def __init__(self, config: FilterConfig) -> None:
        self.config = config

    def apply(self, contribs: list[Contribution], ctx: FilterContext) -> tuple[list[Contribution], list[Rejection]]:
        if len(contribs) < 2:
            return list(contribs), []
        ordered = sorted(contribs, key=lambda c: c.trainer)
        fps = [fingerprint(c, ctx.param_shapes) for c in ordered]
        cos, jac = similarity_matrices(fps, total_size(ctx.param_shapes))
        parent = list(range(len(ordered)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(len(ordered)):
            for j in range(i + 1, len(ordered)):
                if is_near_identical(float(cos[i, j]), float(jac[i, j]), self.config):
                    parent[max(root(i), root(j))] = min(root(i), root(j))
        clusters: dict[int, list[int]] = {}
        for i in range(len(ordered)):
            clusters.setdefault(root(i), []).append(i)
        out: list[Contribution] = []
        for i, c in enumerate(ordered):
            members = clusters[root(i)]
            if len(members) == 1:
                out.append(c)
            else:
                names = tuple(ordered[m].trainer for m in members)
                out.append(replace(c, sync=c.sync / len(members) ** 2, sybil_cluster=names))
        return out, []


def default_filters(config: FilterConfig | None = None) -> list[Filter]:
    cfg = config or FilterConfig()
    return [FormatFilter(), StalenessFilter(), ReliabilityFilter(cfg), DuplicateCidFilter(),
            CopyOfEarlierFilter(cfg), SybilClusterFilter(cfg)]


def run_filters(filters: Sequence[Filter], contribs: list[Contribution], ctx: FilterContext
                ) -> tuple[list[Contribution], list[Rejection]]:
    rejections: list[Rejection] = []
    for f in filters:
        contribs, rejected = f.apply(contribs, ctx)
        rejections.extend(rejected)
    return sorted(contribs, key=lambda c: c.trainer), rejections


def is_near_identical(cosine: float, jaccard: float, config: FilterConfig) -> bool:
    return cosine >= config.cosine_threshold or (
        jaccard >= config.jaccard_threshold and cosine >= config.jaccard_min_cosine)


def layout_offsets(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, int]:
    """Global coefficient key = offset of the tensor (names sorted) + flat index inside it."""
    offsets: dict[str, int] = {}
    total = 0
    for name in sorted(shapes):
        offsets[name] = total
        total += math.prod(shapes[name])
    return offsets


def total_size(shapes: Mapping[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


def fingerprint(c: Contribution, shapes: Mapping[str, tuple[int, ...]]) -> UpdateFingerprint:
    """Support and values of a (format-checked) update with global keys (sorted, since names are)."""
    offsets = layout_offsets(shapes)
    support = c.support
    keys = [support[name][0] + offsets[name] for name in sorted(support)]
    values = [support[name][1].double() for name in sorted(support)]
    empty_k, empty_v = torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.float64)
    return UpdateFingerprint(trainer=c.trainer, window=c.window, cid=c.cid,
                             keys=torch.cat(keys) if keys else empty_k, values=torch.cat(values) if values else empty_v)


def similarity_matrices(fps: Sequence[UpdateFingerprint], size: int) -> tuple[Tensor, Tensor]:
    """Pairwise cosine similarity and index overlap beyond chance ([n, n], float64; see `excess_overlap`)
    through two sparse Gram products."""
    n = len(fps)
    rows = torch.cat([torch.full((fp.keys.numel(),), i, dtype=torch.long) for i, fp in enumerate(fps)])
    cols = torch.cat([fp.keys for fp in fps])
    vals = torch.cat([fp.values for fp in fps])
    index = torch.stack([rows, cols])
    # Rows ascend and each fingerprint's keys are sorted and unique, so the index is already coalesced (no
    # 10M-entry sort). Checked construction: an out-of-range key from a payload must fail, not corrupt memory.
    def matrix(values: Tensor) -> Tensor:
        return torch.sparse_coo_tensor(index, values, (n, size), check_invariants=True, is_coalesced=True)

    dense_gram = _gram(matrix(vals))
    overlap = _gram(matrix(torch.ones_like(vals)))
    norms = dense_gram.diagonal().clamp_min(0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cosine = torch.where(denom > 0, dense_gram / denom.clamp_min(1e-300), torch.zeros_like(denom))
    counts = overlap.diagonal()
    union = counts[:, None] + counts[None, :] - overlap
    jaccard = torch.where(union > 0, overlap / union.clamp_min(1.0), torch.zeros_like(union))
    return cosine, excess_overlap(jaccard, counts / max(1, size))


def excess_overlap(jaccard: Tensor, density: Tensor) -> Tensor:
    """Index overlap beyond what two supports of these densities share by chance: (J − J₀) / (1 − J₀), where
    J₀ = p·q / (p + q − p·q) is the Jaccard index of independent random supports of densities p and q.

    A shared support is evidence of copying only when choosing it was a choice: at top-k density (under 1%)
    J₀ ≈ 0 and this is the plain Jaccard index, while two dense updates share every index by necessity
    (J = J₀ = 1) and get 0, so honest dense updates are told apart by their values (cosine) alone."""
    p, q = density[:, None], density[None, :]
    union = p + q - p * q
    chance = torch.where(union > 0, p * q / union.clamp_min(1e-300), torch.zeros_like(union))
    room = 1.0 - chance
    return torch.where(room > 1e-9, ((jaccard - chance) / room.clamp_min(1e-9)).clamp_min(0.0),
                       torch.zeros_like(jaccard))


def _gram(m: Tensor) -> Tensor:
    with warnings.catch_warnings():
        # torch routes sparse×sparse through its CSR kernels and warns that CSR is "beta" on every call.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse.mm(m, m.t()).to_dense()
