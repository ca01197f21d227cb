"""The routing policy, as pure functions: tier rule, classifier, backend choice, degradation."""

from __future__ import annotations

import pytest

from llmctl.router import policy
from llmctl.router.policy import Refusal, Route, Served
from llmctl.router.table import ModelRoute, Policy, RouterConfig, Tier
from tests.router.fakes import BIG, POLICY, TINY, FakeBackend, cpu, gpu

EXACTLY_3B = ModelRoute(name="three-b", parameters=3_000_000_000)


@pytest.mark.parametrize(
    ("parameters", "complexity", "expected"),
    [
        (1_100_000_000, "chat", False),
        (3_000_000_000, "chat", False),  # the rule is strictly greater than 3B
        (3_000_000_001, "chat", True),
        (6_740_000_000, "chat", True),
        (1_100_000_000, "reasoning", True),
        (1_100_000_000, "code-generation", True),
        (1_100_000_000, "summarize", False),
        (13_000_000_000, "reasoning", True),
    ],
)
def test_should_use_gpu_is_the_issue_rule(parameters: int, complexity: str, expected: bool) -> None:
    assert policy.should_use_gpu(parameters, complexity, POLICY) is expected


def test_threshold_and_complexities_come_from_the_config() -> None:
    custom = Policy(
        fallbackModel="x", gpuParameterThreshold=1_000_000_000, gpuComplexities=("math",)
    )
    assert policy.should_use_gpu(1_100_000_000, "chat", custom)
    assert policy.should_use_gpu(500, "math", custom)
    assert not policy.should_use_gpu(500, "reasoning", custom)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello! How are you today?", "chat"),
        ("What is the capital of France?", "chat"),
        ("Tell me a joke about cats.", "chat"),
        ("Write a Python function that reverses a linked list.", "code-generation"),
        ("Here is my code:\n```\nprint(1)\n```\nwhat is wrong?", "code-generation"),
        ("def add(a, b):\n    return a + b\n# add types", "code-generation"),
        ("Fix the bug in this SQL query please", "code-generation"),
        ("I get a Traceback when I run it", "code-generation"),
        ("Implement a regex that matches emails", "code-generation"),
        ("Explain step by step how to solve x^2 = 4.", "reasoning"),
        ("Prove that there are infinitely many primes.", "reasoning"),
        ("Why does ice float on water?", "reasoning"),
        ("Compare and contrast TCP and UDP, with trade-offs.", "reasoning"),
        ("What is 17 * 23 + 4 = ?", "reasoning"),
        ("word " * 1000, "reasoning"),  # a long document counts as reasoning
    ],
)
def test_classifier_examples(text: str, expected: str) -> None:
    assert policy.classify_prompt(text) == expected


def test_classifier_is_deterministic() -> None:
    text = "Why is the sky blue? Write a short poem."
    assert len({policy.classify_prompt(text) for _ in range(20)}) == 1


def test_prompt_text_reads_the_last_user_message_and_content_parts() -> None:
    body: dict[str, object] = {
        "messages": [
            {"role": "system", "content": "You write code."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "answer"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "second"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                ],
            },
        ]
    }
    assert policy.prompt_text(body) == "second"
    assert policy.prompt_text({"prompt": ["a", "b"]}) == "a\nb"
    assert policy.prompt_text({"prompt": "abc"}) == "abc"
    assert policy.prompt_text({}) == ""


def test_rank_prefers_free_slots_then_weighted_load() -> None:
    a = cpu("aws/cpu", load=2)  # full
    b = cpu("gcp/cpu", load=1)
    c = cpu("azure/cpu", load=0, ready=False)
    assert [x.name for x in policy.rank_backends([a, b, c])] == ["gcp/cpu", "aws/cpu"]


def test_rank_uses_cost_weight() -> None:
    cheap = cpu("gcp/cpu", cost_weight=1.0, load=1, slots=4)  # (1+1)/4*1 = 0.5
    dear = cpu("aws/cpu", cost_weight=3.0, load=0, slots=4)  # (0+1)/4*3 = 0.75
    assert [x.name for x in policy.rank_backends([dear, cheap])] == ["gcp/cpu", "aws/cpu"]
    idle_dear = cpu("aws/cpu", cost_weight=1.5, load=0, slots=4)  # 0.375 < 0.5
    assert policy.rank_backends([cheap, idle_dear])[0].name == "aws/cpu"


def test_rank_spreads_equal_backends_by_load() -> None:
    a, b = cpu("aws/cpu"), cpu("gcp/cpu")
    chosen = []
    for _ in range(4):
        best = policy.rank_backends([a, b])[0]
        best.load += 1  # type: ignore[misc]
        chosen.append(best.name)
    assert sorted(chosen) == ["aws/cpu", "aws/cpu", "gcp/cpu", "gcp/cpu"]


def test_rank_excludes_tried() -> None:
    assert [b.name for b in policy.rank_backends([cpu("a"), cpu("b")], exclude=["a"])] == ["b"]


def test_small_chat_goes_to_cpu() -> None:
    route = policy.plan_route(TINY, "chat", False, [cpu(), gpu()], POLICY)
    assert isinstance(route, Route)
    assert (route.wanted, route.served) == (Tier.CPU, Served.CPU)
    assert [b.name for b in route.backends] == ["aws/cpu"]


def test_big_model_goes_to_gpu() -> None:
    route = policy.plan_route(BIG, "chat", False, [cpu(), gpu()], POLICY)
    assert isinstance(route, Route) and route.served == Served.GPU
    assert route.fallback_reason is None


def test_exactly_three_billion_stays_on_cpu() -> None:
    route = policy.plan_route(EXACTLY_3B, "chat", False, [cpu(), gpu()], POLICY)
    assert isinstance(route, Route) and route.served == Served.CPU


def test_small_model_with_reasoning_goes_to_the_gpu_tiers_own_model() -> None:
    route = policy.plan_route(TINY, "reasoning", False, [cpu(), gpu()], POLICY)
    assert isinstance(route, Route) and route.served == Served.GPU
    assert route.backends[0].model == BIG.name


def test_gpu_backend_serving_the_asked_model_is_preferred() -> None:
    same = FakeBackend("gcp/gpu", Tier.GPU, TINY.name, load=1)
    route = policy.plan_route(TINY, "reasoning", False, [gpu(), same], POLICY)
    assert isinstance(route, Route) and [b.name for b in route.backends] == ["gcp/gpu"]


@pytest.mark.parametrize(
    ("gpus", "reason"),
    [
        ([gpu(ready=False)], "no_ready_gpu"),
        ([], "no_gpu_backend"),
    ],
)
def test_no_ready_gpu_degrades_to_cpu_fallback(gpus: list[FakeBackend], reason: str) -> None:
    route = policy.plan_route(BIG, "chat", False, [cpu(), *gpus], POLICY)
    assert isinstance(route, Route)
    assert (route.wanted, route.served, route.fallback_reason) == (
        Tier.GPU,
        Served.CPU_FALLBACK,
        reason,
    )
    assert route.backends[0].model == POLICY.fallback_model


def test_fallback_prefers_backends_with_the_fallback_model() -> None:
    other = FakeBackend("aws/cpu-other", Tier.CPU, "phi-2", load=0)
    fallback = cpu("gcp/cpu", load=1)
    route = policy.plan_route(BIG, "chat", False, [other, fallback, gpu(ready=False)], POLICY)
    assert isinstance(route, Route) and [b.name for b in route.backends] == ["gcp/cpu"]


def test_require_gpu_refuses_instead_of_falling_back() -> None:
    refusal = policy.plan_route(BIG, "chat", True, [cpu(), gpu(ready=False)], POLICY)
    assert isinstance(refusal, Refusal)
    assert (refusal.wanted, refusal.code) == (Tier.GPU, "gpu_unavailable")


def test_require_gpu_sends_a_small_chat_to_gpu() -> None:
    route = policy.plan_route(TINY, "chat", True, [cpu(), gpu()], POLICY)
    assert isinstance(route, Route) and route.served == Served.GPU


def test_gpu_back_ready_takes_new_requests_again() -> None:
    g = gpu(ready=False)
    first = policy.plan_route(BIG, "chat", False, [cpu(), g], POLICY)
    g.ready = True
    second = policy.plan_route(BIG, "chat", False, [cpu(), g], POLICY)
    assert isinstance(first, Route) and first.served == Served.CPU_FALLBACK
    assert isinstance(second, Route) and second.served == Served.GPU


def test_nothing_ready_is_a_refusal() -> None:
    refusal = policy.plan_route(BIG, "chat", False, [cpu(ready=False), gpu(ready=False)], POLICY)
    assert isinstance(refusal, Refusal) and refusal.code == "no_backend"


def test_cpu_down_but_gpu_ready_serves_from_gpu() -> None:
    route = policy.plan_route(TINY, "chat", False, [cpu(ready=False), gpu()], POLICY)
    assert isinstance(route, Route)
    assert (route.served, route.fallback_reason) == (Served.GPU, "no_ready_cpu")


def test_retry_candidates_stay_in_the_route_and_skip_tried() -> None:
    a, b, g = cpu("aws/cpu"), cpu("gcp/cpu"), gpu()
    route = policy.plan_route(TINY, "chat", False, [a, b, g], POLICY)
    assert isinstance(route, Route)
    assert [x.name for x in policy.retry_candidates(route, ["aws/cpu"], [a, b, g])] == ["gcp/cpu"]
    assert policy.retry_candidates(route, ["aws/cpu", "gcp/cpu"], [a, b, g]) == []


def test_model_index_and_known_ids() -> None:
    config = RouterConfig.model_validate(
        {
            "cloud": "aws",
            "models": [
                {"name": TINY.name, "parameters": TINY.parameters, "aliases": ["tinyllama"]},
                {"name": BIG.name, "parameters": BIG.parameters},
            ],
            "backends": [
                {
                    "name": "aws/cpu",
                    "url": "http://x:1",
                    "tier": "cpu",
                    "cloud": "aws",
                    "model": TINY.name,
                    "slots": 1,
                }
            ],
            "policy": {"fallbackModel": TINY.name},
        }
    )
    index = policy.model_index(config)
    assert index["tinyllama"] is index[TINY.name]
    assert policy.known_model_ids(config) == [TINY.name, "tinyllama", BIG.name]


# --- issue 19: the classifier's cost is bounded, re-planning after a failure ------------------


def _best_ms(text: str) -> float:
    import time

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        policy.classify_prompt(text)
        best = min(best, time.perf_counter() - started)
    return best * 1000


@pytest.mark.parametrize(
    "text",
    [
        "1" * 4000,  # review 3.4: 577 ms (quadratic backtracking on a digit run)
        "1" * 3999 + " ",  # 494 ms
        "write " * 170_000,  # 1 MB: 1,142 ms
        "python " * 150_000,  # 1 MB: 723 ms
        "7" * 1_000_000,  # 1 MB of digits: 156 ms
    ],
)
def test_classifier_cost_is_bounded_on_hostile_prompts(text: str) -> None:
    """Review finding 2: these ran 0.15-1.1 s on the event loop. Now a few ms at most; the
    bound is loose for a loaded machine (benchmarks/router_classifier.py has the figures)."""
    assert _best_ms(text) < 60


def test_classifier_reads_only_both_ends_of_a_long_prompt() -> None:
    middle = "x " * 5000 + "def main(): return 1" + " y" * 5000
    assert policy.classify_prompt(middle) == policy.REASONING  # long, and the code unread
    assert policy.classify_prompt("def main(): return 1\n" + "x " * 10_000) == (
        policy.CODE_GENERATION
    )
    assert policy.classify_prompt("x " * 10_000 + "\n```python") == policy.CODE_GENERATION


def test_arithmetic_still_counts_as_reasoning() -> None:
    assert policy.classify_prompt("what is 17 * 23 + 4 = ?") == policy.REASONING
    assert policy.classify_prompt("12+5=") == policy.REASONING
    assert policy.classify_prompt("call 555 1234") == policy.CHAT


def test_plan_route_excludes_tried_backends_and_falls_back_across_tiers() -> None:
    """Re-planning a GPU request whose only GPU backend failed gives the CPU fallback
    (review finding 7: such requests got 502)."""
    route = policy.plan_route(BIG, "chat", False, [cpu(), gpu()], POLICY, exclude=["aws/gpu"])
    assert isinstance(route, Route) and route.served == Served.CPU_FALLBACK
    route = policy.plan_route(TINY, "chat", False, [cpu("a"), cpu("b")], POLICY, exclude=["a"])
    assert isinstance(route, Route) and [b.name for b in route.backends] == ["b"]
