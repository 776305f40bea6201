"""The serving layer between the HTTP API and the engines.

- `host.ModelHost`: where launched models live (the seam); `embedded.EmbeddedHost` keeps them in this process.
- `models.ModelService`, `chat.ChatService`, `catalog.CatalogService`: what the routers call.
- `records`: typed launch requests and model records; `protocol`: the pydantic request bodies.
"""
