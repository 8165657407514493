"""The cost model behind the plan's time estimate: rates from one call alone and a batch, the
share of the prompt the server's cache already holds, and the correction after a round."""

from __future__ import annotations

import pytest

from promptsweep.core.evaluate import SampleResult
from promptsweep.optimize.estimate import CallShape, CostModel, format_duration


def call(
    prompt_n: int, predicted_n: int, *, prompt_ms: float, predicted_ms: float, latency: float = 1.0
) -> SampleResult:
    return SampleResult(
        suite="s",
        sample_id="x",
        category=None,
        template="t@v1",
        expected={},
        prompt_tokens=prompt_n,
        completion_tokens=predicted_n,
        latency_s=latency,
        timings={
            "prompt_n": prompt_n,
            "prompt_per_token_ms": prompt_ms,
            "predicted_n": predicted_n,
            "predicted_per_token_ms": predicted_ms,
        },
    )


def test_rates_come_from_one_call_alone_and_a_batch() -> None:
    alone = call(300, 60, prompt_ms=5.0, predicted_ms=13.0)
    batch = [call(300, 60, prompt_ms=20.0, predicted_ms=40.0) for _ in range(4)]
    # 1200 prompt tokens at 5 ms = 6 s; the other 2.4 s of a 8.4 s batch pay for 240 generated tokens.
    model = CostModel.measure(alone, batch, 8.4, prompt_chars=900, slots=4)
    assert model.prompt_s == pytest.approx(0.005)
    assert model.gen_s == pytest.approx(0.010)
    assert model.chars_per_token == pytest.approx(3.0)
    # Batched generation never costs more than alone, nor less than a slot's share of it.
    slow = CostModel.measure(alone, batch, 60.0, prompt_chars=900, slots=4)
    assert slow.gen_s == pytest.approx(0.013)
    fast = CostModel.measure(alone, batch, 6.0, prompt_chars=900, slots=4)
    assert fast.gen_s == pytest.approx(0.013 / 4)


def test_the_shared_system_text_is_paid_once_per_slot() -> None:
    model = CostModel(slots=4, prompt_s=0.005, gen_s=0.01, chars_per_token=3.0, default_completion=50)
    shape = CallShape(prompt_chars=3000, shared_chars=2400)
    few = model.call_seconds(shape, samples=4)
    many = model.call_seconds(shape, samples=40)
    assert few == pytest.approx(1000 * 0.005 + 50 * 0.01)
    assert many < few
    assert model.call_seconds(shape, samples=8, style="cot", budget=320) > few, "reasoning writes more"


def test_a_round_corrects_later_estimates_half_way() -> None:
    model = CostModel(slots=2, prompt_s=0.005, gen_s=0.01)
    assert model.batch_seconds([10.0, 10.0]) == pytest.approx(20.0)
    model.correct(predicted_s=20.0, measured_s=80.0)
    assert model.batch_seconds([10.0, 10.0]) == pytest.approx(40.0)


def test_servers_without_timings_fall_back_to_wall_time() -> None:
    plain = SampleResult(
        suite="s",
        sample_id="x",
        category=None,
        template="t",
        expected={},
        completion_tokens=50,
        latency_s=2.0,
    )
    model = CostModel.measure(plain, [plain, plain], 4.0, prompt_chars=100, slots=2)
    assert model.fallback_call_s == pytest.approx(2.0)
    assert "no server timings" in model.describe()


def test_durations_read_well() -> None:
    assert format_duration(42) == "42 s"
    assert format_duration(7 * 60) == "7 min"
    assert format_duration(65 * 60 * 2) == "2 h 10 min"
