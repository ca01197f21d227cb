"""Edges of the routing policy that mutation testing showed no test pinned (issue 20).

Each test names the mutant family it kills; `benchmarks/mutation.py --core policy` reruns them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from llmctl.router import policy
from llmctl.router.policy import Refusal, Route, Served
from llmctl.router.table import ModelRoute, Policy, RouterConfig, Tier

POLICY = Policy(fallbackModel="tinyllama-1.1b-chat")
TINY = ModelRoute(name="tinyllama-1.1b-chat", parameters=1_100_000_000)
BIG = ModelRoute(name="llama-2-7b-chat", parameters=6_740_000_000)


@dataclass
class B:
    name: str
    tier: Tier = Tier.CPU
    model: str = TINY.name
    ready: bool = True
    slots: int = 2
    cost_weight: float = 1.0
    load: int = 0


def names(backends: object) -> list[str]:
    return [b.name for b in backends]  # type: ignore[attr-defined]


def assert_route(
    route: Route | Refusal, wanted: Tier, served: Served, reason: str | None, backends: list[str]
) -> None:
    """`route` is a Route that wanted `wanted`, is served by `served` for `reason`, and tries
    `backends` in that order."""
    assert isinstance(route, Route)
    assert (route.wanted, route.served, route.fallback_reason) == (wanted, served, reason)
    assert names(route.backends) == backends


# --- prompt_text ---------------------------------------------------------------------------


def test_plain_string_content_is_the_prompt() -> None:
    # the usual chat request: content is a string, not a list of parts
    assert policy.prompt_text({"messages": [{"role": "user", "content": "hi"}]}) == "hi"


def test_the_last_user_message_wins_over_a_later_assistant_turn() -> None:
    body: dict[str, object] = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
        ]
    }
    assert policy.prompt_text(body) == "q"


def test_a_non_dict_message_is_skipped() -> None:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "q"}, "junk"]}
    assert policy.prompt_text(body) == "q"


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([{"role": "system", "content": "s"}], "s"),  # no user turn: the last message
        ([{"role": "system", "content": "s"}, {"role": "assistant", "content": "t"}], "t"),
        ([], ""),
        (["not a message"], ""),
        ([{"role": "system", "content": "s"}, "junk"], ""),
    ],
)
def test_without_a_user_message_the_last_message_is_read(
    messages: list[object], expected: str
) -> None:
    assert policy.prompt_text({"messages": messages}) == expected


@pytest.mark.parametrize("content", [None, 42, {"text": "x"}])
def test_content_that_is_neither_text_nor_parts_reads_as_empty(content: object) -> None:
    assert policy.prompt_text({"messages": [{"role": "user", "content": content}]}) == ""


def test_content_parts_keep_only_text_parts_joined_by_newlines() -> None:
    content = [
        {"type": "text", "text": "one"},
        "stray string",
        {"type": "text", "text": 3},
        {"type": "text", "text": "two"},
    ]
    assert policy.prompt_text({"messages": [{"role": "user", "content": content}]}) == "one\ntwo"


def test_completion_prompt_list_keeps_only_strings() -> None:
    assert policy.prompt_text({"prompt": ["a", 1, "b"]}) == "a\nb"
    assert policy.prompt_text({"prompt": 7}) == ""
    # messages win over prompt when both are sent
    assert policy.prompt_text({"messages": [], "prompt": "p"}) == ""


# --- the classifier's length rule ----------------------------------------------------------


def test_long_prompt_boundary_is_strictly_more_than_4000_chars() -> None:
    assert policy.LONG_PROMPT_CHARS == 4000
    assert policy.classify_prompt("a" * 4000) == "chat"
    assert policy.classify_prompt("a" * 4001) == "reasoning"


def test_a_long_prompt_is_read_only_at_its_ends() -> None:
    # 4,001 to 6,000 characters: code in the middle is not seen, code at either end is
    middle = "x" * 2000 + " ```def f(): pass``` " + "y" * 2000
    assert policy.classify_prompt(middle) == "reasoning"
    assert policy.classify_prompt("Def main(): ```x``` " + "a" * 4500) == "code-generation"
    assert policy.classify_prompt("a" * 4500 + " Write a Python Function for this") == (
        "code-generation"
    )


def test_code_is_checked_before_reasoning() -> None:
    assert policy.classify_prompt("Why does this Python function fail? ```x```") == (
        "code-generation"
    )


# --- known ids -----------------------------------------------------------------------------


def test_known_ids_include_models_only_a_backend_serves() -> None:
    config = RouterConfig.model_validate(
        {
            "cloud": "aws",
            "models": [{"name": TINY.name, "parameters": TINY.parameters}],
            "backends": [
                {
                    "name": "a",
                    "url": "http://x:1",
                    "tier": "cpu",
                    "cloud": "aws",
                    "model": "phi-2",
                    "slots": 1,
                },
                {
                    "name": "b",
                    "url": "http://x:2",
                    "tier": "cpu",
                    "cloud": "aws",
                    "model": TINY.name,
                    "slots": 1,
                },
            ],
            "policy": {"fallbackModel": TINY.name},
        }
    )
    assert policy.known_model_ids(config) == [TINY.name, "phi-2"]


# --- backend ranking -----------------------------------------------------------------------


def test_backend_score_by_hand() -> None:
    assert policy.backend_score(B("x", slots=4, load=1, cost_weight=2.0)) == (0, 1.0)
    assert policy.backend_score(B("x", slots=2, load=2)) == (1, 1.5)
    assert policy.backend_score(B("x", slots=2, load=3)) == (1, 2.0)
    full, score = policy.backend_score(B("x", slots=2, load=0, cost_weight=0.0))
    assert full == 0 and 0 < score < 1e-6  # weight 0 is "free", still ordered by load


def test_a_backend_with_a_free_slot_beats_a_cheaper_full_one() -> None:
    # load == slots is full: the free slot wins even though the full one's weighted score
    # (3/2 * 0.1 = 0.15) is lower than the free one's (2/2 * 1 = 1.0)
    full = B("full", slots=2, load=2, cost_weight=0.1)
    free = B("free", slots=2, load=1, cost_weight=1.0)
    assert names(policy.rank_backends([full, free])) == ["free", "full"]


def test_weight_zero_is_filled_first_even_when_busier() -> None:
    free = B("free", slots=4, load=2, cost_weight=0.0)
    paid = B("paid", slots=4, load=0, cost_weight=1.0)
    assert names(policy.rank_backends([paid, free])) == ["free", "paid"]
    # among weight-0 backends the load still decides
    busier = B("busier", slots=4, load=3, cost_weight=0.0)
    assert names(policy.rank_backends([busier, free])) == ["free", "busier"]


def test_unequal_slot_counts_rank_by_utilisation_not_load() -> None:
    big = B("big", slots=8, load=2)  # (2+1)/8 = 0.375
    small = B("small", slots=2, load=0)  # (0+1)/2 = 0.5
    assert names(policy.rank_backends([small, big])) == ["big", "small"]


def test_ties_keep_the_configured_order() -> None:
    a, b = B("a"), B("b")
    assert names(policy.rank_backends([a, b])) == ["a", "b"]
    assert names(policy.rank_backends([b, a])) == ["b", "a"]


def test_retry_candidates_rerank_by_current_load() -> None:
    a, b, other = B("a"), B("b"), B("other")
    route = policy.plan_route(TINY, "chat", False, [a, b], POLICY)
    assert isinstance(route, Route)
    b.load, a.load = 0, 1
    assert names(policy.retry_candidates(route, [], [a, b, other])) == ["b", "a"]


# --- degradation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "wanted"), [(TINY, Tier.CPU), (BIG, Tier.GPU)], ids=["small", "big"]
)
def test_chat_with_nothing_ready_is_a_refusal_for_the_tier_it_wanted(
    model: ModelRoute, wanted: Tier
) -> None:
    refusal = policy.plan_route(
        model,
        "chat",
        False,
        [B("c", ready=False), B("g", Tier.GPU, BIG.name, ready=False)],
        POLICY,
    )
    assert isinstance(refusal, Refusal)
    assert (refusal.wanted, refusal.code) == (wanted, "no_backend")
    assert model.name in refusal.message


def test_any_cpu_backend_is_the_fallback_when_none_serves_the_fallback_model() -> None:
    other = B("c", model="phi-2")
    route = policy.plan_route(
        BIG, "chat", False, [other, B("g", Tier.GPU, BIG.name, ready=False)], POLICY
    )
    assert_route(route, Tier.GPU, Served.CPU_FALLBACK, "no_ready_gpu", ["c"])


def test_the_fallback_never_uses_a_gpu_backend() -> None:
    # a ready GPU backend serving another model is not a CPU fallback for a GPU request
    route = policy.plan_route(
        BIG,
        "chat",
        False,
        [
            B("c", model="phi-2"),
            B("g", Tier.GPU, BIG.name, ready=False),
            B("g2", Tier.GPU, "other", ready=False),
        ],
        POLICY,
    )
    assert isinstance(route, Route) and names(route.backends) == ["c"]


def test_cpu_request_falls_back_to_the_gpu_backend_serving_its_model_first() -> None:
    own = B("g-own", Tier.GPU, TINY.name, load=1)
    other = B("g-big", Tier.GPU, BIG.name)
    route = policy.plan_route(TINY, "chat", False, [B("c", ready=False), other, own], POLICY)
    assert_route(route, Tier.CPU, Served.GPU, "no_ready_cpu", ["g-own"])


def test_a_route_lists_every_ready_backend_of_the_tier_best_first() -> None:
    a, b = B("a", load=1), B("b")
    route = policy.plan_route(TINY, "chat", False, [a, b, B("g", Tier.GPU, BIG.name)], POLICY)
    assert_route(route, Tier.CPU, Served.CPU, None, ["b", "a"])


def test_gpu_route_has_no_fallback_reason() -> None:
    route = policy.plan_route(
        TINY, "reasoning", False, [B("c"), B("g", Tier.GPU, BIG.name)], POLICY
    )
    assert_route(route, Tier.GPU, Served.GPU, None, ["g"])


def test_require_gpu_refusal_message_says_why() -> None:
    refusal = policy.plan_route(TINY, "chat", True, [B("c")], POLICY)
    assert isinstance(refusal, Refusal)
    assert (refusal.wanted, refusal.code) == (Tier.GPU, "gpu_unavailable")
    assert refusal.message.startswith("no GPU backend is ready")
    assert "x-llm-require-tier: gpu" in refusal.message
    assert refusal.message.endswith("the GPU pool is scaling up, retry later")


def test_a_replanned_request_skips_the_tried_backends_in_every_fallback() -> None:
    # CPU wanted, none ready: the GPU fallback leaves out the GPU backend already tried
    g1, g2 = B("g1", Tier.GPU, BIG.name), B("g2", Tier.GPU, BIG.name, load=1)
    route = policy.plan_route(
        TINY, "chat", False, [B("c", ready=False), g1, g2], POLICY, exclude=["g1"]
    )
    assert isinstance(route, Route) and names(route.backends) == ["g2"]
    # GPU wanted, none ready: the CPU fallback leaves out the CPU backend already tried
    c1, c2 = B("c1"), B("c2", load=1)
    route = policy.plan_route(
        BIG,
        "chat",
        False,
        [c1, c2, B("g", Tier.GPU, BIG.name, ready=False)],
        POLICY,
        exclude=["c1"],
    )
    assert isinstance(route, Route) and route.served == Served.CPU_FALLBACK
    assert names(route.backends) == ["c2"]


# --- a key's tiers (issue 31): allow_cpu / allow_gpu -----------------------------------------


def test_a_key_without_the_gpu_is_served_by_the_cpu_though_a_gpu_is_ready() -> None:
    cpu, gpu = B("aws/cpu"), B("aws/gpu", Tier.GPU, BIG.name)
    route = policy.plan_route(BIG, "chat", False, [cpu, gpu], POLICY, allow_gpu=False)
    assert_route(route, Tier.GPU, Served.CPU_FALLBACK, "gpu_not_allowed", ["aws/cpu"])


def test_the_reason_a_key_was_kept_off_the_gpu_is_the_callers() -> None:
    cpu, gpu = B("aws/cpu"), B("aws/gpu", Tier.GPU, BIG.name)
    route = policy.plan_route(
        BIG, "chat", False, [cpu, gpu], POLICY, allow_gpu=False, denied_reason="gpu_budget_spent"
    )
    assert_route(route, Tier.GPU, Served.CPU_FALLBACK, "gpu_budget_spent", ["aws/cpu"])


def test_a_key_without_the_gpu_never_gets_it_even_when_no_cpu_is_ready() -> None:
    # The CPU tier's own fallback ("a ready GPU is better than no answer") is not for this key.
    cpu, gpu = B("aws/cpu", ready=False), B("aws/gpu", Tier.GPU, TINY.name)
    refusal = policy.plan_route(TINY, "chat", False, [cpu, gpu], POLICY, allow_gpu=False)
    assert isinstance(refusal, Refusal)
    assert (refusal.wanted, refusal.code) == (Tier.CPU, "no_backend")


def test_a_gpu_only_key_sends_a_small_model_to_the_gpu() -> None:
    cpu, gpu = B("aws/cpu"), B("aws/gpu", Tier.GPU, TINY.name)
    route = policy.plan_route(TINY, "chat", False, [cpu, gpu], POLICY, allow_cpu=False)
    assert_route(route, Tier.GPU, Served.GPU, None, ["aws/gpu"])


def test_a_gpu_only_key_is_refused_rather_than_served_by_the_cpu() -> None:
    cpu, gpu = B("aws/cpu"), B("aws/gpu", Tier.GPU, TINY.name, ready=False)
    refusal = policy.plan_route(TINY, "chat", False, [cpu, gpu], POLICY, allow_cpu=False)
    assert isinstance(refusal, Refusal)
    assert (refusal.wanted, refusal.code) == (Tier.GPU, "gpu_unavailable")
    assert "its API key may use only the GPU tier" in refusal.message
    assert "x-llm-require-tier" not in refusal.message


def test_a_required_gpu_names_the_header_when_the_key_may_use_both() -> None:
    cpu = B("aws/cpu")
    refusal = policy.plan_route(BIG, "chat", True, [cpu], POLICY)
    assert isinstance(refusal, Refusal)
    assert "the request says x-llm-require-tier: gpu" in refusal.message
    assert "API key" not in refusal.message
