"""Memo, the AI participant: ``threads`` (``ai.ask`` and ``ai.cancel`` in a thread, the
REST wait for a reply), ``reply`` (the durable ``ai.reply`` job and the send planner that
starts it), ``prompt`` (the thread's history and related memories within a token budget),
``tools`` (the seed's ``/api/ai/*`` operations: chat, categorize, summarize) and
``runtime`` (`AIRuntime`: the provider, the server's hooks, the replies streaming here)."""
