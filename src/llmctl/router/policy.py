"""The routing policy: which tier a request wants, which backend serves it, and what happens
when that tier has nobody ready. Pure functions over plain data; no I/O, no clock.

The rule users expect (issue 6):

    if model parameters > 3e9: GPU
    if complexity in ("reasoning", "code-generation"): GPU
    else: CPU

Each llama-server serves ONE model. When the chosen tier's backends serve another model than
the one asked for (tinyllama asked with complexity=reasoning goes to the GPU tier, which serves
Llama-2-7B), the tier's own model answers and the response's `model` field says which one did
(llama-server always reports its own --alias there). A backend serving the exact model asked
for is preferred when the tier has one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from llmctl.router.table import ModelRoute, Policy, RouterConfig, Tier

CHAT = "chat"
REASONING = "reasoning"
CODE_GENERATION = "code-generation"


class Served(StrEnum):
    """The value of the x-llm-tier response header."""

    GPU = "gpu"
    CPU = "cpu"
    CPU_FALLBACK = "cpu-fallback"


# --- the prompt classifier -----------------------------------------------------------------

# Cheap and deterministic: a handful of precompiled regular expressions over the last user
# message, first match wins, in this order. Code is checked first because a code request often
# also says "explain" or "why".
# Every word alternative sits behind one leading \b: the engine tests that once per position
# (and fails at once inside a word or a run of digits) instead of once per alternative. The
# patterns are lower case and match lower-cased text: half the cost of re.IGNORECASE.
_CODE = re.compile(
    r"```|\b(?:(?:def|class|import|return|function|const|let|var|public|static|void|struct|fn)\s"
    r"|(?:write|implement|generate|fix|debug|refactor|complete)\b[^.?!\n]{0,40}"
    r"\b(?:code|function|method|class|script|program|query|regex|test|bug|snippet)s?\b"
    r"|(?:python|javascript|typescript|java|golang|rust|c\+\+|sql|bash|kotlin|swift)\b"
    r"[^.?!\n]{0,40}\b(?:code|function|script|program|query|class|snippet)s?\b"
    r"|(?:stack ?trace|traceback|segfault|compile error|syntax error)\b)"
)
_REASONING = re.compile(
    r"\b(?:step[- ]by[- ]step|prove|proof|derive|derivation|theorem"
    r"|solve|calculate|compute|estimate|why does|why is|why do"
    r"|reason(?:ing)?|analy[sz]e|trade-?offs?|compare and contrast"
    r"|pros and cons|plan\b.{0,30}\bsteps|logic puzzle|riddle)\b"
    # Arithmetic like "17 * 23 + 4 =". Possessive quantifiers and a digit run matched only from
    # its start keep this linear: `\d+\s*[-+*/^]` alone backtracked quadratically on a run of
    # digits (4,000 digits cost half a second of the event loop).
    r"|(?<!\d)\d++\s*+[-+*/^]\s*+\d++\s*+[-+*/^=]"
)
# Long prompts (a document to summarise, a long context) need the bigger model's context and
# speed: past this many characters the prompt counts as reasoning.
LONG_PROMPT_CHARS = 4000
# The classifier reads at most this many characters from each end of a prompt: its cost is
# bounded whatever the prompt's size (benchmarks/router_classifier.py has the figures).
CLASSIFIER_WINDOW_CHARS = 2000


def classify_prompt(text: str) -> str:
    """`code-generation`, `reasoning` or `chat` for a prompt, by the rules above.

    A prompt longer than LONG_PROMPT_CHARS is reasoning unless its first or last
    CLASSIFIER_WINDOW_CHARS characters look like code; the middle is never read."""
    if len(text) > 2 * CLASSIFIER_WINDOW_CHARS:
        head = text[:CLASSIFIER_WINDOW_CHARS].lower()
        tail = text[-CLASSIFIER_WINDOW_CHARS:].lower()
        if _CODE.search(head) or _CODE.search(tail):
            return CODE_GENERATION
        return REASONING
    text = text.lower()
    if _CODE.search(text):
        return CODE_GENERATION
    if len(text) > LONG_PROMPT_CHARS or _REASONING.search(text):
        return REASONING
    return CHAT


def prompt_text(body: dict[str, object]) -> str:
    """The text the classifier reads: the last user message (chat) or the prompt (completions).

    Earlier turns are left out on purpose: the question being asked now decides the tier, and
    reading a long history on every request would cost the router CPU it does not have.
    """
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return (
            _content_text(messages[-1].get("content"))
            if messages and isinstance(messages[-1], dict)
            else ""
        )
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        return "\n".join(p for p in prompt if isinstance(p, str))
    return ""


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: [{"type": "text", "text": ...}]
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


# --- the tier rule -------------------------------------------------------------------------


def should_use_gpu(parameters: int, complexity: str, policy: Policy) -> bool:
    """The issue's shouldUseGPU: big models and hard requests want the GPU tier."""
    if parameters > policy.gpu_parameter_threshold:
        return True
    return complexity in policy.gpu_complexities


def wanted_tier(model: ModelRoute, complexity: str, policy: Policy) -> Tier:
    return Tier.GPU if should_use_gpu(model.parameters, complexity, policy) else Tier.CPU


def model_index(config: RouterConfig) -> dict[str, ModelRoute]:
    """Every name and alias a client may send, mapped to its model."""
    index: dict[str, ModelRoute] = {}
    for model in config.models:
        index[model.name] = model
        for alias in model.aliases:
            index[alias] = model
    return index


def known_model_ids(config: RouterConfig) -> list[str]:
    """What GET /v1/models lists: the configured models, their aliases and what backends serve."""
    ids: list[str] = []
    for model in config.models:
        ids.append(model.name)
        ids.extend(model.aliases)
    ids.extend(backend.model for backend in config.backends)
    return list(dict.fromkeys(ids))


# --- choosing a backend --------------------------------------------------------------------


class BackendView(Protocol):
    """What the policy reads of a backend's live state (backends.BackendState provides it)."""

    @property
    def name(self) -> str: ...
    @property
    def tier(self) -> Tier: ...
    @property
    def model(self) -> str: ...
    @property
    def ready(self) -> bool: ...
    @property
    def slots(self) -> int: ...
    @property
    def cost_weight(self) -> float: ...
    @property
    def load(self) -> int: ...  # requests in flight + waiting here (router's and reported)


def backend_score(backend: BackendView) -> tuple[int, float]:
    """Lower is better: first any backend with a free slot, then the weighted utilisation.

    The utilisation after taking this request, (load + 1) / slots, times the cost weight:
    equal weights spread requests across clouds by free capacity; a weight of 2 makes a backend
    take about half the share of one weighted 1. Weight 0 means "free": fill it first.
    """
    full = 1 if backend.load >= backend.slots else 0
    return full, (backend.load + 1) / backend.slots * max(backend.cost_weight, 1e-9)


def rank_backends(
    backends: Iterable[BackendView], exclude: Sequence[str] = ()
) -> list[BackendView]:
    """Ready backends not yet tried, best first (ties keep the configured order)."""
    ready = [b for b in backends if b.ready and b.name not in exclude]
    ready.sort(key=backend_score)
    return ready


@dataclass(frozen=True)
class Route:
    """Where a request goes: the tier it wanted, how it is served, and the backends to try."""

    wanted: Tier
    served: Served
    backends: tuple[BackendView, ...]
    fallback_reason: str | None = None  # set when served from another tier than wanted


@dataclass(frozen=True)
class Refusal:
    """No backend can take the request: answered 503 with Retry-After."""

    wanted: Tier
    code: str
    message: str


def _for_model(backends: Sequence[BackendView], model: str) -> list[BackendView]:
    """Backends serving `model` first: the tier's own model answers when none serves it."""
    exact = [b for b in backends if b.model == model]
    return exact or list(backends)


def plan_route(
    model: ModelRoute,
    complexity: str,
    require_gpu: bool,
    backends: Sequence[BackendView],
    policy: Policy,
    exclude: Sequence[str] = (),
    *,
    allow_cpu: bool = True,
    allow_gpu: bool = True,
    denied_reason: str = "gpu_not_allowed",
) -> Route | Refusal:
    """The tier rule, the backend ranking and graceful degradation, in one decision.

    `exclude` names backends already tried for this request: a request re-planned after a
    failure (or whose backend went away while it waited) goes to the others, across tiers.
    `allow_cpu`/`allow_gpu` are the client key's policy (issue 31): a tier it may not use is
    never chosen, not even as a fallback; a GPU request of a key that may not use the GPU is
    served by the CPU tier as a fallback with `denied_reason`."""
    if not allow_gpu:
        backends = [b for b in backends if b.tier == Tier.CPU]
    if not allow_cpu:
        backends = [b for b in backends if b.tier == Tier.GPU]
        require_gpu = True
    tier = Tier.GPU if require_gpu else wanted_tier(model, complexity, policy)
    in_tier = [b for b in backends if b.tier == tier]
    ranked = rank_backends(_for_model(in_tier, model.name), exclude)
    if tier == Tier.CPU:
        if ranked:
            return Route(Tier.CPU, Served.CPU, tuple(ranked))
        # Nothing ready on CPU: a ready GPU backend is better than no answer.
        gpu = rank_backends(
            _for_model([b for b in backends if b.tier == Tier.GPU], model.name), exclude
        )
        if gpu:
            return Route(Tier.CPU, Served.GPU, tuple(gpu), fallback_reason="no_ready_cpu")
        return Refusal(Tier.CPU, "no_backend", f"no backend is ready to serve {model.name!r}")
    if ranked:
        return Route(Tier.GPU, Served.GPU, tuple(ranked))
    reason = "no_gpu_backend" if not in_tier else "no_ready_gpu"
    if not allow_gpu:
        reason = denied_reason
    if require_gpu:
        why = (
            "the request says x-llm-require-tier: gpu"
            if allow_cpu
            else "its API key may use only the GPU tier"
        )
        return Refusal(
            Tier.GPU,
            "gpu_unavailable",
            f"no GPU backend is ready and {why}; the GPU pool is scaling up, retry later",
        )
    cpu = [b for b in backends if b.tier == Tier.CPU and b.model == policy.fallback_model]
    fallback = rank_backends(cpu or [b for b in backends if b.tier == Tier.CPU], exclude)
    if fallback:
        return Route(Tier.GPU, Served.CPU_FALLBACK, tuple(fallback), fallback_reason=reason)
    return Refusal(
        Tier.GPU,
        "no_backend",
        f"no GPU backend and no CPU fallback backend is ready to serve {model.name!r}",
    )


def retry_candidates(
    route: Route, tried: Sequence[str], backends: Sequence[BackendView]
) -> list[BackendView]:
    """The backends a failed attempt may be retried on: the same set, re-ranked, minus tried."""
    names = {b.name for b in route.backends}
    return rank_backends([b for b in backends if b.name in names], exclude=tried)
