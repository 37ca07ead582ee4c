"""Cloud backends: one per upstream protocol (OpenAI-compatible, Anthropic, a
gateway model server) over one HTTP transport, pool and SSE reader."""
