"""Integrations of `durable` with other libraries, each behind an optional extra.

- `durable.contrib.pydantic_ai`: `DurableAgent`, a Pydantic AI agent whose model requests and
  tool calls are activities (``pip install 'durable-sdk[pydantic-ai]'``).

``import durable`` imports nothing from here; each module imports its library when it is
imported itself, and says which extra to install when the library is missing.
"""
