"""The one sampler both engines use (model/inference/sampling.py): every rule, checked by its counts."""

import numpy as np
import pytest

from model.inference.sampling import (
    SamplingError,
    SamplingParams,
    apply_repetition_penalty,
    filtered_logits,
    final_probabilities,
    inspection_step,
    sample_next,
    top_p_kept,
)

LOGITS = np.log(np.array([0.35, 0.25, 0.15, 0.10, 0.08, 0.04, 0.02, 0.01], dtype=np.float32))
NONE: list[int] = []


def draw(params, n=6000, logits=LOGITS):
    rng = np.random.default_rng(1234)
    counts = np.zeros(len(logits))
    for _ in range(n):
        counts[sample_next(logits, params, NONE, rng)] += 1
    return counts


# chi-square critical values at p = 0.001, by degrees of freedom
CHI2_CRITICAL_0001 = {2: 13.816, 7: 24.322}


def fits(observed, expected_counts) -> bool:
    """Pearson's chi-square test: True unless the counts are off at the 0.1% level."""
    statistic = sum((o - e) ** 2 / e for o, e in zip(observed, expected_counts))
    return statistic < CHI2_CRITICAL_0001[len(observed) - 1]


def expected(allowed, n):
    p = np.exp(LOGITS)[allowed]
    return (p / p.sum() * n).tolist()


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(min_p=2.0), "min_p"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(seed=-3), "seed"),
        (dict(temperature=float("inf")), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(temperature=1e308), "temperature"),
        (dict(repetition_penalty=float("inf")), "repetition_penalty"),
    ],
)
def test_invalid_values_name_the_parameter_and_range(bad, message):
    with pytest.raises(SamplingError, match=message) as error:
        SamplingParams(**bad).validate()
    assert "must be" in str(error.value)


def test_top_k_never_leaves_the_allowed_set_and_matches_the_distribution():
    counts = draw(SamplingParams(temperature=1.0, top_k=3, top_p=1.0))
    assert counts[3:].sum() == 0
    assert fits(counts[:3].tolist(), expected([0, 1, 2], 6000))


def test_top_p_is_the_smallest_set_reaching_p():
    # 0.35 + 0.25 = 0.60 < 0.7, adding 0.15 reaches 0.75: three tokens
    kept = np.isfinite(filtered_logits(LOGITS, SamplingParams(temperature=1.0, top_p=0.7)))
    assert kept.tolist() == [True, True, True] + [False] * 5
    counts = draw(SamplingParams(temperature=1.0, top_p=0.7))
    assert counts[3:].sum() == 0
    assert fits(counts[:3].tolist(), expected([0, 1, 2], 6000))


def test_top_p_always_keeps_one_token():
    kept = np.isfinite(filtered_logits(LOGITS, SamplingParams(temperature=1.0, top_p=1e-6)))
    assert kept.sum() == 1 and kept[0]


def test_min_p_and_temperature():
    kept = np.isfinite(filtered_logits(LOGITS, SamplingParams(temperature=1.0, top_p=1.0, min_p=0.3)))
    assert kept.tolist() == [True, True, True] + [False] * 5  # >= 0.3 * 0.35
    counts = draw(SamplingParams(temperature=0.5, top_p=1.0), n=4000)
    p = np.exp(LOGITS / 0.5) / np.exp(LOGITS / 0.5).sum()
    assert fits(counts.tolist(), (p * 4000).tolist())


def test_greedy_and_repetition_penalty():
    assert sample_next(LOGITS, SamplingParams(temperature=0), NONE, None) == 0
    penalised = sample_next(LOGITS, SamplingParams(temperature=0, repetition_penalty=2.0), [0], None)
    assert penalised == 1  # token 0's logit (negative) is multiplied by 2


def test_a_seed_reproduces_draws():
    params = SamplingParams(temperature=1.0)
    a = [sample_next(LOGITS, params, NONE, np.random.default_rng(7)) for _ in range(1)]
    b = [sample_next(LOGITS, params, NONE, np.random.default_rng(7)) for _ in range(1)]
    assert a == b
    assert draw(params, n=300).tolist() == draw(params, n=300).tolist()


def test_top_p_on_a_large_vocabulary_equals_sorting_it_whole():
    rng = np.random.default_rng(0)
    for top_p in (0.05, 0.5, 0.9, 0.99, 0.999999):
        logits = rng.standard_normal(150_000) * 3
        order = np.argsort(-logits, kind="stable")
        probs = np.exp(logits[order] - logits.max())
        probs /= probs.sum()
        expected = max(int(np.count_nonzero(np.cumsum(probs) - probs < top_p)), 1)
        assert sorted(top_p_kept(logits, top_p).tolist()) == sorted(order[:expected].tolist())


def test_the_inspector_shows_raw_and_final_probabilities_and_the_drawn_token():
    params = SamplingParams(temperature=1.0, top_k=2, top_p=1.0)
    step = inspection_step(LOGITS, params, [], 1, lambda i: f"t{i}")
    by_text = {c["text"]: c for c in step["candidates"]}
    assert step["text"] == "t1" and by_text["t1"]["drawn"] and not by_text["t0"]["drawn"]
    assert by_text["t0"]["raw_prob"] == pytest.approx(0.35, rel=1e-5)
    assert by_text["t0"]["final_prob"] == pytest.approx(0.35 / 0.60, rel=1e-5)
    assert by_text["t2"]["final_prob"] == 0.0  # cut by top-k
    assert [c["text"] for c in step["candidates"]][:3] == ["t0", "t1", "t2"]


def test_the_inspector_names_the_drawn_token_its_rank_and_each_candidates_id():
    params = SamplingParams(temperature=1.0, top_k=2, top_p=1.0)
    step = inspection_step(LOGITS, params, [], 1, lambda i: f"t{i}")
    assert (step["token_id"], step["rank"]) == (1, 2)
    assert [c["id"] for c in step["candidates"]] == list(range(8))  # most likely first
    assert [c["cut_by"] for c in step["candidates"]] == [None, None] + ["top-k"] * 6


def cut_by_the_filters_alone(logits, params, token) -> str | None:
    """What cut a token, found with the sampler's own filtered_logits and the filters switched on one by one
    in its order: top-k, then top-p, then min-p."""
    filters_on_so_far = [("top-k", dict(top_p=1.0, min_p=0.0)), ("top-p", dict(min_p=0.0)), ("min-p", {})]
    for name, later_ones_off in filters_on_so_far:
        if filtered_logits(logits, SamplingParams(**{**params.to_dict(), **later_ones_off}))[token] == -np.inf:
            return name
    return None


def test_cut_by_and_rank_match_the_samplers_real_behaviour():
    rng = np.random.default_rng(7)
    draws = np.random.default_rng(8)
    seen = set()
    for case in range(300):
        vocabulary = int(rng.integers(12, 80))
        logits = (rng.standard_normal(vocabulary) * rng.uniform(0.5, 4)).astype(np.float32)
        params = SamplingParams(
            temperature=float(rng.choice([0.3, 0.7, 1.0, 1.5])),
            top_k=int(rng.choice([0, 3, 8, 20])),
            top_p=float(rng.choice([1.0, 0.5, 0.9])),
            min_p=float(rng.choice([0.0, 0.05, 0.2])),
            repetition_penalty=float(rng.choice([1.0, 1.3])),
        )
        previous = rng.integers(0, vocabulary, 5).tolist()
        drawn = sample_next(logits, params, previous, draws)
        step = inspection_step(logits, params, previous, drawn, str)
        raw = np.exp(logits.astype(np.float64) - logits.max())
        assert step["token_id"] == drawn
        assert step["rank"] == np.argsort(-(raw / raw.sum()), kind="stable").tolist().index(drawn) + 1
        penalized = apply_repetition_penalty(logits, previous, params.repetition_penalty)
        for candidate in step["candidates"]:
            assert (candidate["final_prob"] == 0.0) == (candidate["cut_by"] is not None), (case, candidate)
            if candidate["drawn"]:
                assert candidate["cut_by"] is None and candidate["id"] == drawn
            on_their_own = cut_by_the_filters_alone(penalized, params, candidate["id"])
            assert candidate["cut_by"] == on_their_own, (case, candidate, params)
            seen.add(candidate["cut_by"])
    assert seen == {None, "top-k", "top-p", "min-p"}  # every filter was seen cutting


def test_a_drawn_token_outside_the_top_candidates_is_shown_with_its_rank():
    logits = np.linspace(5, -5, 40).astype(np.float32)
    step = inspection_step(logits, SamplingParams(temperature=1.0, top_p=1.0), [], 39, str)
    assert step["rank"] == 40 and step["candidates"][-1]["id"] == 39 and step["candidates"][-1]["drawn"]
    assert len(step["candidates"]) == 11 and step["candidates"][-1]["cut_by"] is None


def test_greedy_and_a_very_low_temperature_say_what_left_a_token_at_zero():
    logits = np.array([0.0, 2.0, -60.0], dtype=np.float32)
    greedy = inspection_step(logits, SamplingParams(temperature=0.0), [], 1, str)
    assert {c["id"]: c["cut_by"] for c in greedy["candidates"]} == {1: None, 0: "greedy", 2: "greedy"}
    cold = inspection_step(logits, SamplingParams(temperature=0.01, top_p=1.0), [], 1, str)
    by_id = {c["id"]: c for c in cold["candidates"]}
    assert by_id[2]["final_prob"] == 0.0 and by_id[2]["cut_by"] == "temperature"
    assert by_id[1]["cut_by"] is None


def test_the_inspector_writes_a_control_token_by_its_name():
    texts = {0: "a", 1: "", 2: "b"}
    names = {1: "<|end|>"}
    step = inspection_step([1.0, 3.0, 2.0], SamplingParams(temperature=0.0), [], 1, texts.get, names.get)
    assert (step["text"], step["control"]) == ("<|end|>", True)
    by_id = {c["id"]: c for c in step["candidates"]}
    assert by_id[1]["text"] == "<|end|>" and by_id[1]["control"]
    assert by_id[0] == {**by_id[0], "text": "a"} and "control" not in by_id[0]
    unnamed = inspection_step([1.0, 3.0, 2.0], SamplingParams(temperature=0.0), [], 1, texts.get)
    assert unnamed["text"] == "" and "control" not in unnamed  # no name known: as before


def whole_vocabulary_draw(logits, params, previous_ids, u: float) -> int:
    """The draw over every token (the others at probability 0): what drawable() must agree with."""
    penalized = apply_repetition_penalty(np.asarray(logits, dtype=np.float32), previous_ids, params.repetition_penalty)
    cdf = np.cumsum(final_probabilities(penalized, params))
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), cdf.size - 1))


def test_top_k_and_top_p_draw_the_token_the_whole_vocabulary_would():
    cases = np.random.default_rng(0)
    for _ in range(300):
        vocab = int(cases.integers(50, 5000))
        logits = (cases.normal(size=vocab) * cases.uniform(0.5, 8)).astype(np.float32)
        logits[cases.integers(0, vocab, size=3)] = logits.max()  # ties at the top
        params = SamplingParams(
            temperature=float(cases.uniform(0.1, 2.0)),
            top_k=int(cases.choice([0, cases.integers(1, 100)])),
            top_p=float(cases.choice([1.0, cases.uniform(0.05, 1.0)])),
            min_p=float(cases.choice([0.0, cases.uniform(0.0, 0.5)])),
            repetition_penalty=float(cases.choice([1.0, 1.3])),
        )
        previous = cases.integers(0, vocab, size=20).tolist()
        seed = int(cases.integers(0, 2**32))
        drawn = sample_next(logits, params, previous, np.random.default_rng(seed))
        assert drawn == whole_vocabulary_draw(logits, params, previous, np.random.default_rng(seed).random())


@pytest.mark.parametrize("size", [50, 1_000, 262_144, 262_144 + 77])
@pytest.mark.parametrize("k", [1, 40, 300])
def test_top_k_ids_are_every_logit_at_least_the_kth_largest_ties_included(size, k):
    from model.inference.sampling import top_k_ids

    rng = np.random.default_rng(size + k)
    logits = np.round(rng.standard_normal(size), 1).astype(np.float32)  # rounded: many ties at the k-th
    logits[-1] = logits.max() + 1  # the best one in the last, partial block
    k = min(k, size - 1)
    kth = np.sort(logits)[-k]
    assert np.array_equal(top_k_ids(logits, k), np.flatnonzero(logits >= kth))
