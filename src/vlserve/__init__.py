"""vlserve: serve InternVL2.5 vision-language models over the OpenAI and Xinference APIs."""

__version__ = "0.1.0"
