"""pytest-promptsweep: LLM evals as pytest tests, scored, gated and optimized.

The names in ``__all__`` are the public Python API, for notebooks and services as much as for
tests; none of them imports pytest::

    import promptsweep

    prompt = promptsweep.load_prompt("evals/k8s_triage.suite.yaml")
    request = prompt.render({"log_line": "...", "namespace": "payments"})
    with promptsweep.connect("http://127.0.0.1:8080", cache=".promptsweep") as endpoint:
        answer = endpoint.send(request)       # the request the eval scored, byte for byte
    fields = prompt.parse(answer.text).fields

    aggregate = promptsweep.evaluate("evals/k8s_triage.suite.yaml", url="http://127.0.0.1:8080")

Stability: only the names listed in ``__all__`` are public. Within a minor version (0.x) their
signatures and meaning do not change incompatibly; a change that would is announced, and the
old spelling keeps working with a ``DeprecationWarning`` for at least one minor version.
Everything else (``promptsweep.core``, ``.llm``, ``.plugin``, ...) is internal and may change
at any time, even where it is importable.
"""

from __future__ import annotations

__version__ = "0.1.0"

from promptsweep.api import connect, evaluate, load_prompt
from promptsweep.core.answers.chat import ChatRequest, ChatResult, LLMError
from promptsweep.core.answers.metrics import MetricRegistry
from promptsweep.core.answers.parsing import ParsedAnswer
from promptsweep.core.answers.result import SampleResult
from promptsweep.core.data.suite import Suite, load_suite
from promptsweep.core.io.errors import ConfigError, EndpointError, PromptsweepError
from promptsweep.core.measure.aggregate import Aggregate
from promptsweep.core.measure.gate import check_gate
from promptsweep.core.measure.stats import Estimate
from promptsweep.core.prompt import Prompt
from promptsweep.core.templates.template import PromptTemplate, load_template
from promptsweep.llm.endpoint import Endpoint

__all__ = [
    "Aggregate",
    "ChatRequest",
    "ChatResult",
    "ConfigError",
    "Endpoint",
    "EndpointError",
    "Estimate",
    "LLMError",
    "MetricRegistry",
    "ParsedAnswer",
    "Prompt",
    "PromptTemplate",
    "PromptsweepError",
    "SampleResult",
    "Suite",
    "__version__",
    "check_gate",
    "connect",
    "evaluate",
    "load_prompt",
    "load_suite",
    "load_template",
]
