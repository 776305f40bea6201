"""HTTP routers: each parses the request, calls one service method, and returns JSON or SSE."""
