"""OpenSkill Plackett-Luce ratings from the ranking of s_i."""

from __future__ import annotations

import pytest

from validator.rating import PlackettLuceRater, Rating


def test_newcomer_starts_at_the_default_with_zero_ordinal() -> None:
    default = PlackettLuceRater().default()
    assert default == Rating(mu=25.0, sigma=25.0 / 3.0)
    assert default.ordinal == pytest.approx(0.0)


def test_higher_score_gets_higher_rating() -> None:
    rater = PlackettLuceRater()
    new = rater.update({}, {"0xa": 0.03, "0xb": 0.01, "0xc": -0.02})
    assert new["0xa"].mu > new["0xb"].mu > new["0xc"].mu
    assert new["0xa"].ordinal > 0 > new["0xc"].ordinal
    assert all(r.sigma < 25.0 / 3.0 for r in new.values())


def test_repeated_wins_earn_their_way_up() -> None:
    rater = PlackettLuceRater()
    ratings: dict[str, Rating] = {}
    ordinals = []
    for _ in range(5):
        ratings.update(rater.update(ratings, {"0xgood": 0.05, "0xbad": -0.05, "0xmid": 0.0}))
        ordinals.append(ratings["0xgood"].ordinal)
    assert ordinals == sorted(ordinals)
    assert ratings["0xgood"].ordinal > ratings["0xmid"].ordinal > ratings["0xbad"].ordinal


def test_update_does_not_depend_on_dict_order_and_is_deterministic() -> None:
    rater = PlackettLuceRater()
    old = {"0xb": Rating(27.0, 6.0)}
    one = rater.update(old, {"0xa": 0.1, "0xb": 0.2, "0xc": 0.0})
    two = rater.update(old, {"0xc": 0.0, "0xb": 0.2, "0xa": 0.1})
    assert one == two


def test_a_single_contribution_is_no_match() -> None:
    rater = PlackettLuceRater()
    assert rater.update({}, {"0xa": 0.5}) == {"0xa": rater.default()}
