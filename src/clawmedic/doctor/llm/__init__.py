"""The LLM doctor: an incident no rule explains, or whose planned remedies failed, is shown to a language model.

Bounded, guarded and auditable: the model sees only redacted evidence, may call only the doctor's read-only tools
and the declared remedies (every remedy call goes through the same `Guard` as the rules'), within a step limit and
a time budget; every message and tool call is kept in the incident. Backends (`backends.py`): the embedded local
model (`local.py`, the default when `clawmedic[local-llm]` is installed), any OpenAI-compatible endpoint, Anthropic,
or an agent CLI.
"""
