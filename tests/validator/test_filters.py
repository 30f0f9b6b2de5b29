"""Stage-1 filters on constructed inputs: malformed, stale, unreliable, duplicate CIDs, a perturbed copy of an
earlier window's update, and a same-window Sybil cluster."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from base.report import RejectReason
from tests.validator.pipeline_fixtures import contribution as make_contribution
from tests.validator.pipeline_fixtures import (
    corpus,
    make_model,
    perturbed,
    rows,
    sparsify,
    train_delta,
)
from validator.domain import Contribution, ParamDict
from validator.evaluate import base_params
from validator.filters import (
    CopyOfEarlierFilter,
    DuplicateCidFilter,
    FilterConfig,
    FilterContext,
    FormatFilter,
    ReliabilityFilter,
    StalenessFilter,
    SybilClusterFilter,
    default_filters,
    fingerprint,
    run_filters,
    similarity_matrices,
    total_size,
)

Update = tuple[ParamDict, dict[str, torch.Tensor]]


@pytest.fixture(scope="module")
def params() -> ParamDict:
    return {n: t.clone() for n, t in base_params(make_model()).items()}


@pytest.fixture(scope="module")
def honest(params: ParamDict) -> list[Update]:
    tokens = corpus()
    model = make_model()
    return [sparsify(train_delta(model, params, rows(tokens, 7_000 * (i + 1), 4))) for i in range(4)]


def _ctx(params: ParamDict, **kw: object) -> FilterContext:
    base = FilterContext(window=5, current_model_cid="bafkbasemodel",
                         param_shapes={n: tuple(t.shape) for n, t in params.items()})
    return replace(base, **kw)  # type: ignore[arg-type]


def _c(trainer: str, update: tuple[ParamDict, dict[str, torch.Tensor]], window: int = 5, **kw: str) -> Contribution:
    return make_contribution(trainer, window, update[0], update[1], **kw)


def test_honest_updates_pass_every_filter_unchanged(params: ParamDict, honest: list[Update]) -> None:
    contribs = [_c(f"0x{i}", u) for i, u in enumerate(honest)]
    kept, rejected = run_filters(default_filters(), contribs, _ctx(params))
    assert rejected == []
    assert [c.trainer for c in kept] == ["0x0", "0x1", "0x2", "0x3"]
    assert all(c.sync == 1.0 and c.penalty == 1.0 and not c.sybil_cluster for c in kept)


def test_honest_updates_are_not_near_identical(params: ParamDict, honest: list[Update]) -> None:
    fps = [fingerprint(_c(f"0x{i}", u), _ctx(params).param_shapes) for i, u in enumerate(honest)]
    cos, _ = similarity_matrices(fps, total_size(_ctx(params).param_shapes))
    off_diagonal = ~torch.eye(len(fps), dtype=torch.bool)
    assert float(cos[off_diagonal].max()) < FilterConfig().cosine_threshold
    assert torch.allclose(cos.diagonal(), torch.ones(len(fps), dtype=torch.float64))


def test_similarity_matches_dense_computation(params: ParamDict, honest: list[Update]) -> None:
    shapes = _ctx(params).param_shapes
    fps = [fingerprint(_c(f"0x{i}", u), shapes) for i, u in enumerate(honest[:2])]
    cos, jac = similarity_matrices(fps, total_size(shapes))
    a, b = (torch.cat([u[0][n].flatten() for n in sorted(u[0])]).double() for u in honest[:2])
    assert float(cos[0, 1]) == pytest.approx(float(torch.nn.functional.cosine_similarity(a, b, dim=0)), rel=1e-9)
    sa, sb = set(fps[0].keys.tolist()), set(fps[1].keys.tolist())
    p, q = len(sa) / total_size(shapes), len(sb) / total_size(shapes)
    chance = p * q / (p + q - p * q)  # the Jaccard index two random supports of these densities would have
    assert float(jac[0, 1]) == pytest.approx((len(sa & sb) / len(sa | sb) - chance) / (1 - chance))


def test_dense_honest_updates_are_not_one_cluster(params: ParamDict) -> None:
    """Dense updates share every index by necessity: only their values (cosine) may cluster them. Near-copies
    among dense updates are still caught."""
    tokens = corpus()
    model = make_model()
    dense = [train_delta(model, params, rows(tokens, 7_000 * (i + 1), 4)) for i in range(4)]
    full = {n: torch.arange(t.numel()) for n, t in dense[0].items()}
    contribs = [_c(f"0x{i}", (d, full)) for i, d in enumerate(dense)]
    shapes = _ctx(params).param_shapes
    cos, overlap = similarity_matrices([fingerprint(c, shapes) for c in contribs], total_size(shapes))
    off = ~torch.eye(4, dtype=torch.bool)
    assert float(overlap[off].max()) == 0.0
    assert float(cos[off].min()) > FilterConfig().jaccard_min_cosine  # what clustered them under plain Jaccard
    kept, rejected = run_filters(default_filters(), contribs, _ctx(params))
    assert rejected == [] and all(not c.sybil_cluster and c.sync == 1.0 for c in kept)
    copies = [*contribs, _c("0xcopy", (perturbed(dense[0], full, 0.01, seed=1), full))]
    kept, _ = SybilClusterFilter(FilterConfig()).apply(copies, _ctx(params))
    assert {c.trainer for c in kept if c.sybil_cluster} == {"0x0", "0xcopy"}


def test_format_filter_rejects_malformed(params: ParamDict, honest: list[Update]) -> None:
    delta, idx = honest[0]
    name = sorted(delta)[0]
    nan = {**delta, name: delta[name].clone().fill_(float("nan"))}
    shape = {**delta, name: torch.zeros(3)}
    unknown = {**delta, "evil": torch.zeros(2)}
    off_support = {**delta, name: torch.ones_like(delta[name])}
    bad_index = {**idx, name: torch.tensor([10**9])}
    contribs = [
        _c("0xnan", (nan, idx)), _c("0xshape", (shape, idx)), _c("0xunknown", (unknown, idx)),
        _c("0xoff", (off_support, idx)), _c("0xidx", (delta, bad_index)), _c("0xempty", ({}, {})),
        _c("0xok", (delta, idx)),
    ]
    kept, rejected = FormatFilter().apply(contribs, _ctx(params))
    assert [c.trainer for c in kept] == ["0xok"]
    assert {r.trainer for r in rejected} == {"0xnan", "0xshape", "0xunknown", "0xoff", "0xidx", "0xempty"}
    assert all(r.reason == RejectReason.MALFORMED and r.detail for r in rejected)


def test_staleness_filter(params: ParamDict, honest: list[Update]) -> None:
    kept, rejected = StalenessFilter().apply(
        [_c("0xa", honest[0]), _c("0xb", honest[1], base="bafkold")], _ctx(params))
    assert [c.trainer for c in kept] == ["0xa"]
    assert rejected[0].reason == RejectReason.STALE and "bafkold" in rejected[0].detail
    # An older base the run still accepts (one window behind) is kept, and keeps naming its real base.
    kept, rejected = StalenessFilter().apply(
        [_c("0xa", honest[0]), _c("0xb", honest[1], base="bafkold"), _c("0xc", honest[2], base="bafkolder")],
        _ctx(params, stale_bases={"bafkold": 1}))
    assert [(c.trainer, c.base_model_cid) for c in kept] == [("0xa", "bafkbasemodel"), ("0xb", "bafkold")]
    assert [r.trainer for r in rejected] == ["0xc"]


def test_reliability_rejects_or_penalises(params: ParamDict, honest: list[Update]) -> None:
    ctx = _ctx(params, misses={"0xflaky": 2, "0xgone": 4})
    contribs = [_c("0xflaky", honest[0]), _c("0xgone", honest[1]), _c("0xsteady", honest[2])]
    kept, rejected = ReliabilityFilter(FilterConfig(max_misses=3, penalty_per_miss=0.1)).apply(contribs, ctx)
    assert {c.trainer: c.penalty for c in kept} == {"0xflaky": pytest.approx(0.8), "0xsteady": 1.0}
    assert [(r.trainer, r.reason) for r in rejected] == [("0xgone", RejectReason.UNRELIABLE)]


def test_duplicate_cid_in_window_keeps_one_and_rejects_earlier_cids(params: ParamDict, honest: list[Update]) -> None:
    earlier = fingerprint(_c("0xorig", honest[2], window=4, cid="bafkold"), _ctx(params).param_shapes)
    contribs = [_c("0xb", honest[0], cid="bafkdup"), _c("0xa", honest[0], cid="bafkdup"),
                _c("0xc", honest[2], cid="bafkold"), _c("0xd", honest[3])]
    kept, rejected = DuplicateCidFilter().apply(contribs, _ctx(params, recent_accepted=[earlier]))
    assert [c.trainer for c in kept] == ["0xa", "0xd"]
    assert {(r.trainer, r.reason) for r in rejected} == {("0xb", RejectReason.DUPLICATE_CID),
                                                         ("0xc", RejectReason.DUPLICATE_CID)}


def test_perturbed_copy_of_an_earlier_window_is_rejected(params: ParamDict, honest: list[Update]) -> None:
    shapes = _ctx(params).param_shapes
    earlier = fingerprint(_c("0xorig", honest[0], window=4), shapes)
    delta, idx = honest[0]
    copy = _c("0xcopier", (perturbed(delta, idx, 0.1, seed=1), idx))
    rescaled = _c("0xscaler", ({n: 3.0 * t for n, t in delta.items()}, idx))
    kept, rejected = CopyOfEarlierFilter(FilterConfig()).apply(
        [copy, rescaled, _c("0xhonest", honest[1])], _ctx(params, recent_accepted=[earlier]))
    assert [c.trainer for c in kept] == ["0xhonest"]
    assert {r.trainer for r in rejected} == {"0xcopier", "0xscaler"}
    assert all(r.reason == RejectReason.COPY_OF_EARLIER and "0xorig" in r.detail for r in rejected)


def test_copy_with_reselected_indices_is_still_caught_by_cosine(params: ParamDict, honest: list[Update]) -> None:
    """A copier who adds noise to the dense values and re-runs top-k changes the index set; cosine sees it."""
    shapes = _ctx(params).param_shapes
    earlier = fingerprint(_c("0xorig", honest[0], window=4), shapes)
    delta = honest[0][0]
    g = torch.Generator().manual_seed(2)
    noisy = {n: t + 0.02 * t.abs().max() * torch.randn(t.shape, generator=g) for n, t in delta.items()}
    resparse = sparsify(noisy)
    kept, rejected = CopyOfEarlierFilter(FilterConfig()).apply([_c("0xcopier", resparse)],
                                                               _ctx(params, recent_accepted=[earlier]))
    assert kept == [] and rejected[0].reason == RejectReason.COPY_OF_EARLIER


def test_same_window_cluster_shares_one_contribution(params: ParamDict, honest: list[Update]) -> None:
    delta, idx = honest[0]
    sybils = [_c(f"0xs{i}", (perturbed(delta, idx, 0.05, seed=i), idx)) for i in range(3)]
    contribs = [*sybils, _c("0xhonest", honest[1])]
    kept, rejected = SybilClusterFilter(FilterConfig()).apply(contribs, _ctx(params))
    assert rejected == []
    by = {c.trainer: c for c in kept}
    for i in range(3):
        assert by[f"0xs{i}"].sync == pytest.approx(1 / 9)
        assert by[f"0xs{i}"].sybil_cluster == ("0xs0", "0xs1", "0xs2")
    assert by["0xhonest"].sync == 1.0 and by["0xhonest"].sybil_cluster == ()


def test_cluster_is_single_linkage(params: ParamDict, honest: list[Update]) -> None:
    """a~b and b~c but not a~c directly: one cluster of three."""
    delta, idx = honest[0]
    shift = honest[1][0]
    chain = [{n: delta[n] + k * 0.25 * shift[n] * (delta[n] != 0) for n in delta} for k in range(3)]
    cfg = FilterConfig(cosine_threshold=0.985, jaccard_threshold=1.1)
    fps = [fingerprint(_c(f"0x{k}", (d, idx)), _ctx(params).param_shapes) for k, d in enumerate(chain)]
    cos, _ = similarity_matrices(fps, total_size(_ctx(params).param_shapes))
    assert float(cos[0, 1]) >= 0.985 and float(cos[1, 2]) >= 0.985 and float(cos[0, 2]) < 0.985
    kept, _ = SybilClusterFilter(cfg).apply([_c(f"0x{k}", (d, idx)) for k, d in enumerate(chain)], _ctx(params))
    assert all(c.sync == pytest.approx(1 / 9) for c in kept)
