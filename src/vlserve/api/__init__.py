"""The HTTP API: OpenAI chat completions, Xinference-compatible model management, and operations endpoints.

`create_app(config)` builds the FastAPI app; `run_server(...)` serves it with uvicorn (what `vlserve serve` calls).
"""
