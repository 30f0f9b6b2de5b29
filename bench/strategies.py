"""The strategy library of bench.incentives: every way of earning we could think of that costs less than (or
differs from) honest training, as `bench.marketsim.Behaviour`s. A strategy is one or more identities; the
identities of one strategy share a `Crew`, which lets one operator train once and send through several
identities, or train on several identities' data and send through one.

Compute is what `SimContext.train` counts: rows trained on (forward and backward passes); an honest identity
trains on its H·k assigned rows once per window. Public information (earlier global models, hence the
published aggregate steps, and every revealed payload) is free."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bench.marketsim import Behaviour, SimContext, trainer_address

Delta = dict[str, Tensor]


def norm(delta: Delta) -> float:
    return math.sqrt(math.fsum(float(t.double().pow(2).sum()) for t in delta.values()))


def scaled(delta: Delta, factor: float) -> Delta:
    return {n: factor * t for n, t in delta.items()}


def previous_step(ctx: SimContext, windows: int = 1) -> Delta | None:
    """θ_{w−1−windows} − θ_{w−1}: the published aggregate step(s), public once the models are."""
    if len(ctx.models) < windows + 1:
        return None
    return {n: ctx.models[-1 - windows][n] - ctx.models[-1][n] for n in ctx.base}


def typical_norm(ctx: SimContext) -> float:
    """The median norm of the payloads revealed in the previous window: what an honest update looks like."""
    earlier = sorted(norm(d) for d in ctx.revealed[-1].values()) if ctx.revealed else []
    return earlier[len(earlier) // 2] if earlier else 0.0


def at_typical_norm(ctx: SimContext, delta: Delta) -> Delta:
    size, target = norm(delta), typical_norm(ctx)
    return scaled(delta, target / size) if size > 0 and target > 0 else delta


def noisy(delta: Delta, ctx: SimContext, relative: float) -> Delta:
    """Gaussian noise of `relative` × the update's norm, spread over every coordinate."""
    noise = {n: torch.randn(t.shape, generator=ctx.generator) for n, t in delta.items()}
    return {n: t + noise[n] * relative * norm(delta) / max(1e-12, norm(noise)) for n, t in delta.items()}


def top_fraction(delta: Delta, fraction: float) -> Delta:
    """Keep each tensor's largest `fraction` of coefficients (a re-sparsification)."""
    out = {}
    for n, t in delta.items():
        flat = t.reshape(-1)
        keep = max(1, int(flat.numel() * fraction))
        mask = torch.zeros_like(flat)
        mask[flat.abs().topk(keep).indices] = 1.0
        out[n] = (flat * mask).view_as(t)
    return out


def honest_steps(ctx: SimContext, fraction: float, lr_factor: float = 1.0) -> Delta:
    """A fraction of an honest window: the first `fraction` of the assigned steps and rows."""
    steps = max(1, round(ctx.inner_steps * fraction))
    per_step = ctx.rows.size(0) // ctx.inner_steps
    return ctx.train(rows=ctx.rows[: steps * per_step], steps=steps, lr=lr_factor * ctx.inner_lr)


@dataclass
class Crew:
    """What the identities of one strategy share within a window (one operator behind them)."""

    window: int = -1
    update: Delta | None = None
    members: list[str] = field(default_factory=list)


@dataclass
class Fn:
    """A behaviour from a function of (context, crew, member index)."""

    name: str
    make: Callable[[SimContext, Crew, int], Delta | None]
    crew: Crew
    member: int = 0

    def delta(self, ctx: SimContext) -> Delta | None:
        if self.crew.window != ctx.window:
            self.crew.window, self.crew.update = ctx.window, None
        return self.make(ctx, self.crew, self.member)


Maker = Callable[[SimContext, Crew, int], Delta | None]


def _honest(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
    return ctx.train()


def _fraction(fraction: float, lr_factor: float = 1.0) -> Maker:
    return lambda ctx, crew, member: honest_steps(ctx, fraction, lr_factor)


def _scale(factor: float) -> Maker:
    return lambda ctx, crew, member: scaled(ctx.train(), factor)


def _noise(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
    """The demo's noise sender: 1% of each tensor's mean magnitude, no training."""
    return {n: 0.01 * p.abs().mean() * torch.randn(p.shape, generator=ctx.generator) for n, p in ctx.base.items()}


def _zero(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
    return {n: torch.zeros_like(p) for n, p in ctx.base.items()}


def _silent(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
    return None  # commits nothing it reveals: the free rider


def _poisoner(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
    return scaled(ctx.train(), -5.0)


def _stale(lie: bool) -> Maker:
    """Trains on the run's initial model; names it (rejected as stale) or names the current one (a lie)."""
    def make(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
        delta = ctx.train(base=ctx.models[0])
        if not lie:
            ctx.base_index = 0
        return delta
    return make


def _copier(relative_noise: float, resparsify: bool, train_first: bool) -> Maker:
    """Another trainer's payload of the previous window (all commit–reveal shows), plus noise; re-sparsified
    to fresh indices when asked (a plain copy keeps the victim's support and is caught as a near copy). With
    `train_first` it trains honestly while nothing is revealed yet (as the demo's copier), else it waits."""
    def make(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
        victim = sorted(t for t in ctx.revealed[-1] if t != ctx.trainer) if ctx.revealed else []
        if not victim:
            return ctx.train() if train_first else None
        copied = noisy(ctx.revealed[-1][victim[0]], ctx, relative_noise)
        return top_fraction(copied, 0.02) if resparsify else copied
    return make


def _replay(kind: str) -> Maker:
    """Public directions sent as one's own, at a typical honest norm."""
    def make(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
        step = previous_step(ctx, 2 if kind == "two_steps" else 1)
        if step is None:
            return None
        if kind == "payload_mean":
            payloads = list(ctx.revealed[-1].values())
            step = {n: torch.stack([p[n] for p in payloads]).mean(0) for n in ctx.base}
        elif kind == "noisy":
            step = noisy(step, ctx, 0.5)
        elif kind == "resparsified":
            step = top_fraction(step, 0.004)
        elif kind == "sign":
            step = {n: torch.sign(t) * t.abs().mean() for n, t in step.items()}
        return at_typical_norm(ctx, step)
    return make


def _replay_plus(fraction: float) -> Maker:
    """The previous aggregate step plus a fraction of honest training on one's own rows."""
    def make(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
        own = honest_steps(ctx, fraction)
        step = previous_step(ctx)
        if step is None:
            return own
        step = scaled(step, 0.5 * norm(own) / max(1e-12, norm(step)))
        return {n: own[n] + step[n] for n in own}
    return make


def _eval_first_rows(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
    """Honest training plus extra steps on the first rows of its assignment (the rows the old validator
    evaluated), from the end of the honest ones."""
    honest = ctx.train()
    per_step = ctx.rows.size(0) // ctx.inner_steps
    tuned = {n: ctx.base[n] - honest[n] for n in honest}
    extra = ctx.train(rows=ctx.rows[: 2 * per_step], steps=2, base=tuned)
    return {n: honest[n] + extra[n] for n in honest}


def _overfit(rescale: bool) -> Maker:
    """Two passes over its whole assignment (2H steps): all evaluated own rows are fitted twice."""
    def make(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
        delta = ctx.train(rows=torch.cat([ctx.rows, ctx.rows]), steps=2 * ctx.inner_steps)
        return scaled(delta, 0.5) if rescale else delta
    return make


def _others_rows(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
    """H honest steps, but on the other trainers' assignments, an equal part of each (the common rows are drawn
    from them). Training on one victim's rows alone would make a near copy of the victim's update: a Sybil
    cluster that costs the victim half its pay (validator/pay.cluster_shares, a known limit) and earns the
    attacker nothing."""
    others = [trainer_address(i) for i in range(8) if trainer_address(i) != ctx.trainer]
    share = ctx.rows.size(0) // len(others)
    rows = torch.cat([ctx.rows_of(t)[:share] for t in others])
    per_step = ctx.rows.size(0) // ctx.inner_steps
    return ctx.train(rows=rows[: (rows.size(0) // per_step) * per_step], steps=rows.size(0) // per_step)


def _split(spread: bool) -> Maker:
    """One honest window's update sent through several identities, its coefficients dealt out by rank (so the
    identities together send k coefficients per tile each: more than one identity may). With `spread`, the
    training itself covers every identity's rows, an equal share of each (the same compute)."""
    def make(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
        n = len(crew.members)
        if crew.update is None:
            if spread:
                share = ctx.rows.size(0) // n
                rows = torch.cat([ctx.rows_of(m)[:share] for m in crew.members])
                crew.update = ctx.train(rows=rows)
            else:
                crew.update = ctx.train()
        out = {}
        for name, t in crew.update.items():
            flat = t.reshape(-1)
            order = flat.abs().argsort(descending=True)
            mask = torch.zeros_like(flat)
            mask[order[member::n]] = 1.0
            out[name] = (flat * mask).view_as(t)
        return out
    return make


def _sybil_swarm(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
    """The demo's swarm: one training on the leader's rows, sent by every member (copies with 0.1% noise)."""
    if crew.update is None:
        crew.update = ctx.train(rows=ctx.rows_of(crew.members[0]))
    if member == 0:
        return dict(crew.update)
    return {n: t + 1e-3 * t.std() * torch.randn(t.shape, generator=ctx.generator) for n, t in crew.update.items()}


def _merge(mode: str) -> Maker:
    """Two identities' work (each one's assigned rows, H steps each) sent through one identity."""
    def make(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
        mine = ctx.train()
        other = ctx.train(rows=ctx.rows_of("0x" + "f" * 40))  # a second, silent identity's assignment
        factor = 1.0 if mode == "sum" else 0.5
        return {n: factor * (mine[n] + other[n]) for n in mine}
    return make


def _alternate(ctx: SimContext, crew: Crew, member: int) -> Delta | None:
    """Honest every other window, the previous aggregate step in between."""
    if ctx.window % 2 == 0:
        return ctx.train()
    return _replay("step")(ctx, crew, member)


@dataclass(frozen=True)
class Strategy:
    name: str
    identities: int
    make: Maker
    what: str
    passive: bool = False  # its updates never enter the aggregate (rejected, or never lower the loss)

    def behaviours(self, addresses: list[str]) -> list[Behaviour]:
        crew = Crew(members=list(addresses))
        return [Fn(self.name, self.make, crew, i) for i in range(self.identities)]


LIBRARY: tuple[Strategy, ...] = (
    Strategy("copier", 1, _copier(0.01, False, True), "demo: a revealed payload + 1% noise", passive=True),
    Strategy("noise", 1, _noise, "demo: random noise, no training"),
    Strategy("zero", 1, _zero, "demo: an empty update", passive=True),
    Strategy("freerider", 1, _silent, "demo: commits, never reveals", passive=True),
    Strategy("stale", 1, _stale(False), "demo: trains on the initial model and says so", passive=True),
    Strategy("stale_lying", 1, _stale(True), "trains on the initial model, names the current one"),
    Strategy("poisoner", 1, _poisoner, "demo: honest update × −5", passive=True),
    Strategy("sybil_swarm", 3, _sybil_swarm, "demo: one training sent by 3 identities (near copies)"),
    Strategy("replay_step", 1, _replay("step"), "the previous aggregate step at a typical norm"),
    Strategy("replay_two_steps", 1, _replay("two_steps"), "the last two aggregate steps"),
    Strategy("replay_payload_mean", 1, _replay("payload_mean"), "the mean of last window's payloads"),
    Strategy("replay_noisy", 1, _replay("noisy"), "the previous step + 50% noise"),
    Strategy("replay_resparsified", 1, _replay("resparsified"), "the previous step's largest 0.4%"),
    Strategy("replay_sign", 1, _replay("sign"), "sign of the previous step × its mean magnitude"),
    Strategy("replay_plus_half", 1, _replay_plus(0.5), "H/2 honest steps + the previous step"),
    Strategy("copy_noise_resparsified", 1, _copier(0.5, True, False), "a payload + 50% noise, fresh top-2% support"),
    Strategy("alternate_replay", 1, _alternate, "honest one window, replay the next"),
    Strategy("eval_first_rows", 1, _eval_first_rows, "honest + 2 steps on the first rows of its assignment"),
    Strategy("overfit_2x", 1, _overfit(False), "2H steps: its assignment twice"),
    Strategy("overfit_2x_rescaled", 1, _overfit(True), "2H steps, sent at half size"),
    Strategy("others_rows", 1, _others_rows, "training on the other trainers' assignments (the common rows)"),
    Strategy("half_steps", 1, _fraction(0.5), "H/2 steps"),
    Strategy("half_steps_2x_lr", 1, _fraction(0.5, 2.0), "H/2 steps at twice the inner lr"),
    Strategy("quarter_steps", 1, _fraction(0.25), "H/4 steps"),
    Strategy("one_step", 1, _fraction(1e-9), "a single step"),
    Strategy("scaled_2x", 1, _scale(2.0), "honest update × 2"),
    Strategy("scaled_4x", 1, _scale(4.0), "honest update × 4"),
    Strategy("scaled_half", 1, _scale(0.5), "honest update × 0.5"),
    Strategy("split_2", 2, _split(False), "one honest update dealt over 2 identities"),
    Strategy("split_3", 3, _split(False), "one honest update dealt over 3 identities"),
    Strategy("split_3_spread", 3, _split(True), "one training over 3 identities' rows, dealt over them"),
    Strategy("merge_mean", 1, _merge("mean"), "two identities' work averaged, sent by one"),
    Strategy("merge_sum", 1, _merge("sum"), "two identities' work summed, sent by one"),
)
