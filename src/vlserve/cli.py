"""`vlserve`: start a server, launch and chat with models, manage registrations and the model cache.

Every verb except `serve` and `twin` talks to a running server (--endpoint / VLSERVE_ENDPOINT).
Heavy libraries (torch, transformers, vllm) are imported only by the verbs that need them.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from vlserve import settings
from vlserve.client import ClientError, VlserveClient

app = typer.Typer(
    help="Serve InternVL2.5 vision-language models over the OpenAI and Xinference APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

Endpoint = Annotated[
    str, typer.Option("--endpoint", "-e", envvar="VLSERVE_ENDPOINT", help="Server to talk to.")
]
ApiKey = Annotated[
    Optional[str], typer.Option("--api-key", envvar="VLSERVE_API_KEY", help="Bearer key, when the server has keys.")
]


def _client(endpoint: str, api_key: str | None, timeout: float = 60.0) -> VlserveClient:
    return VlserveClient(endpoint.rstrip("/"), api_key=api_key, timeout=timeout)


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


def _scalar(text: str) -> Any:
    """Extra `--key value` launch options: numbers, booleans and JSON become typed values."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_extra_options(args: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    i = 0
    while i < len(args):
        key = args[i]
        if not key.startswith("--") or len(key) <= 2:
            raise typer.BadParameter(f"unexpected argument {key!r}; extra engine options are written --key value")
        name = key[2:].replace("-", "_")
        if "=" in name:
            name, value = name.split("=", 1)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            value = args[i + 1]
            i += 2
        else:
            raise typer.BadParameter(f"option {key} needs a value (write {key} VALUE)")
        options[name] = _scalar(value)
    return options


def _server_help(field: str) -> str:
    from vlserve.config import ServerConfig

    return ServerConfig.model_fields[field].description or ""


def _server_default(field: str) -> Any:
    """The flag's default is the setting's (stated once, in ServerConfig)."""
    from vlserve.config import ServerConfig

    return ServerConfig.model_fields[field].default


def _read_keys(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@app.command()
def serve(
    host: Annotated[str, typer.Option(help=_server_help("host"))] = _server_default("host"),
    port: Annotated[int, typer.Option(help=_server_help("port"))] = _server_default("port"),
    log_level: Annotated[str, typer.Option(help=_server_help("log_level") + " debug, info, warning or error.")] = (
        _server_default("log_level")),
    api_key: Annotated[Optional[list[str]], typer.Option(
        "--api-key", help="Require this Bearer key (repeatable). " + _server_help("api_keys"))] = None,
    api_keys_file: Annotated[Optional[Path], typer.Option(
        help="File of accepted keys, one per line (# comments allowed).")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(help=_server_help("cors_origins"))] = None,
    allow_private_media: Annotated[bool, typer.Option(help=_server_help("allow_private_media"))] = _server_default(
        "allow_private_media"),
    media_allow_domain: Annotated[Optional[list[str]], typer.Option(help=_server_help("media_allow_domains"))] = None,
    media_allow_dir: Annotated[Optional[list[Path]], typer.Option(help=_server_help("media_allow_dirs"))] = None,
    max_concurrent_requests: Annotated[int, typer.Option(help=_server_help("max_concurrent_requests"))] = (
        _server_default("max_concurrent_requests")),
    max_queued_requests: Annotated[int, typer.Option(help=_server_help("max_queued_requests"))] = _server_default(
        "max_queued_requests"),
    shutdown_grace: Annotated[float, typer.Option(help=_server_help("shutdown_grace_s"))] = _server_default(
        "shutdown_grace_s"),
    cluster: Annotated[str, typer.Option(help=_server_help("cluster"))] = _server_default("cluster"),
    ray_address: Annotated[Optional[str], typer.Option(help=_server_help("ray_address"))] = None,
    placement_timeout: Annotated[float, typer.Option(help=_server_help("placement_timeout_s"))] = _server_default(
        "placement_timeout_s"),
) -> None:
    """Start the server: HTTP API, the table of running models, and the models themselves. Every limit not
    offered as a flag here has a safe default (see README, Security). No process it starts for a model outlives it,
    however it ends; at start it cleans what a server that died left (README, Operations)."""
    from vlserve.api.app import run_server

    keys = [*(api_key or []), *(_read_keys(api_keys_file) if api_keys_file else [])]
    run_server(
        host=host, port=port, log_level=log_level, api_keys=tuple(keys), cors_origins=tuple(cors_origin or ()),
        allow_private_media=allow_private_media, media_allow_domains=tuple(media_allow_domain or ()),
        media_allow_dirs=tuple(str(d.resolve()) for d in media_allow_dir or ()),
        max_concurrent_requests=max_concurrent_requests, max_queued_requests=max_queued_requests,
        shutdown_grace_s=shutdown_grace, cluster=cluster, ray_address=ray_address,
        placement_timeout_s=placement_timeout,
    )  # fmt: skip


def _wait_ready(client: VlserveClient, uid: str, timeout: float) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(f"{uid}: starting", total=1.0)
        while True:
            info = client.get(f"/v1/models/{uid}")
            status = info.get("status", "ready")
            bar.update(task, description=f"{uid}: {status}", completed=float(info.get("progress") or 0.0))
            if status == "ready":
                return info
            if status == "error":
                raise ClientError(f"model {uid} failed to start: {info.get('error') or 'unknown error'}")
            if time.monotonic() > deadline:
                raise ClientError(f"model {uid} is still {status} after {timeout:g}s; check `vlserve list`")
            time.sleep(0.5)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def launch(
    ctx: typer.Context,
    model_name: Annotated[str, typer.Option("--model-name", "-n", help="Registered model name, e.g. InternVL2.5.")],
    model_engine: Annotated[str, typer.Option("--model-engine", "-en", help="Transformers or vLLM.")],
    size_in_billions: Annotated[
        Optional[str], typer.Option("--size-in-billions", "-s", help="Model size, e.g. 1, 8, 78.")
    ] = None,
    model_format: Annotated[Optional[str], typer.Option("--model-format", "-f", help="pytorch or awq.")] = None,
    quantization: Annotated[
        Optional[str], typer.Option("--quantization", "-q", help="none, 8-bit, 4-bit (pytorch) or Int4 (awq).")
    ] = None,
    model_uid: Annotated[Optional[str], typer.Option("--model-uid", "-u", help="Uid to serve it under.")] = None,
    replica: Annotated[int, typer.Option(help="Number of model instances.")] = 1,
    n_gpu: Annotated[Optional[str], typer.Option(help="GPUs per replica: a number, 'auto' or 'none' (CPU).")] = "auto",
    model_path: Annotated[Optional[str], typer.Option(help="Local checkpoint directory; skips downloading.")] = None,
    download_hub: Annotated[
        Optional[str], typer.Option(help="huggingface or modelscope (default: VLSERVE_MODEL_SRC, else huggingface).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the model to become ready.")] = 3600.0,
    endpoint: Endpoint = settings.DEFAULT_ENDPOINT,
    api_key: ApiKey = None,
) -> None:
    """Launch a model and wait until it is ready. Extra `--key value` options are passed to the engine
    (e.g. --max_model_len 8192 --enforce_eager true)."""
    body: dict[str, Any] = {
        "model_name": model_name,
        "model_engine": model_engine,
        "model_size_in_billions": size_in_billions,
        "model_format": model_format,
        "quantization": quantization,
        "model_uid": model_uid,
        "replica": replica,
        "n_gpu": None if (n_gpu or "").lower() == "none" else _scalar(n_gpu) if n_gpu else None,
        "model_path": str(Path(model_path).resolve()) if model_path else None,
        "download_hub": download_hub,
        **parse_extra_options(ctx.args),
    }
    client = _client(endpoint, api_key)
    try:
        uid = client.post("/v1/models", json=body, params={"wait_ready": "false"})["model_uid"]
        _wait_ready(client, uid, timeout)
    except ClientError as exc:
        _fail(str(exc))
    console.print(f"Model uid: {uid}")


@app.command("list")
def list_models(endpoint: Endpoint = settings.DEFAULT_ENDPOINT, api_key: ApiKey = None) -> None:
    """List running models with their spec, engine and status."""
    try:
        models = _client(endpoint, api_key).get("/v1/models")["data"]
    except ClientError as exc:
        _fail(str(exc))
    table = Table("UID", "Name", "Engine", "Format", "Size", "Quantization", "Replicas", "Status", "Placement")
    for m in models:
        table.add_row(
            m.get("id", ""), m.get("model_name", ""), m.get("model_engine", ""), m.get("model_format", ""),
            str(m.get("model_size_in_billions", "")), m.get("quantization", ""), str(m.get("replica", "")),
            m.get("status", ""), _placement(m.get("placement") or []),
        )
    console.print(table)


def _placement(replicas: list[dict[str, Any]]) -> str:
    """One line per replica: node address (and the start of its id on a cluster), and the replica's state."""
    def node(r: dict[str, Any]) -> str:
        return "local" if r.get("node_id") == "local" else f"{r.get('node_ip')} {str(r.get('node_id'))[:8]}"

    return "\n".join(f"#{r.get('replica')} {node(r)} {r.get('state')}" for r in replicas)


@app.command()
def terminate(
    model_uid: Annotated[str, typer.Option("--model-uid", "-u", help="Uid of the model to stop.")],
    endpoint: Endpoint = settings.DEFAULT_ENDPOINT,
    api_key: ApiKey = None,
) -> None:
    """Stop a running model and free its memory."""
    try:
        _client(endpoint, api_key).delete(f"/v1/models/{model_uid}")
    except ClientError as exc:
        _fail(str(exc))
    console.print(f"Terminated {model_uid}")


def image_part(source: str) -> dict[str, Any]:
    """An OpenAI image_url part from a local path (sent as a data URI) or an http(s) URL."""
    if source.startswith(("http://", "https://", "data:")):
        return {"type": "image_url", "image_url": {"url": source}}
    path = Path(source).expanduser()
    if not path.is_file():
        raise ClientError(f"image {source!r} is neither an http(s) URL nor a readable file")
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def _user_message(text: str, images: list[str]) -> dict[str, Any]:
    if not images:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [*(image_part(i) for i in images), {"type": "text", "text": text}]}


def _stream_answer(client: VlserveClient, body: dict[str, Any]) -> str:
    answer = []
    for chunk in client.stream_chat(body):
        for choice in chunk.get("choices", []):
            piece = (choice.get("delta") or {}).get("content") or ""
            answer.append(piece)
            console.print(piece, end="", highlight=False, markup=False, soft_wrap=True)
    console.print()
    return "".join(answer)


@app.command()
def chat(
    model_uid: Annotated[str, typer.Option("--model-uid", "-u", help="Uid of a running model.")],
    message: Annotated[Optional[str], typer.Option("--message", "-m", help="Ask once and exit (else a REPL).")] = None,
    image: Annotated[Optional[list[str]], typer.Option("--image", "-i", help="Image path or URL; repeatable.")] = None,
    system: Annotated[Optional[str], typer.Option(help="System prompt (default: the model's own).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 512,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.7,
    endpoint: Endpoint = settings.DEFAULT_ENDPOINT,
    api_key: ApiKey = None,
) -> None:
    """Chat with a running model; answers stream to the terminal. `/exit` leaves the REPL."""
    client = _client(endpoint, api_key, timeout=600.0)
    history: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    images = list(image or [])
    try:
        while True:
            text = message if message is not None else typer.prompt(">", prompt_suffix=" ")
            if message is None and text.strip() in ("/exit", "/quit"):
                return
            history.append(_user_message(text, images))
            images = []  # attached to the first turn only; history keeps them
            body = {"model": model_uid, "messages": history, "max_tokens": max_tokens, "temperature": temperature}
            history.append({"role": "assistant", "content": _stream_answer(client, body)})
            if message is not None:
                return
    except ClientError as exc:
        _fail(str(exc))
    except (EOFError, KeyboardInterrupt, typer.Abort):
        return


@app.command()
def registrations(
    detailed: Annotated[bool, typer.Option(help="Show every spec.")] = False,
    endpoint: Endpoint = settings.DEFAULT_ENDPOINT,
    api_key: ApiKey = None,
) -> None:
    """List registered model families (built-in and your own)."""
    try:
        rows = _client(endpoint, api_key).get("/v1/model_registrations/LLM", params={"detailed": str(detailed).lower()})
    except ClientError as exc:
        _fail(str(exc))
    table = Table("Name", "Built-in", "Languages", "Abilities", "Context")
    for row in rows:
        table.add_row(
            row.get("model_name", ""), str(row.get("is_builtin", "")), ",".join(row.get("model_lang", [])),
            ",".join(row.get("model_ability", [])), str(row.get("context_length", "")),
        )
    console.print(table)


@app.command()
def register(
    file: Annotated[Path, typer.Option("--file", "-f", help="Family JSON file (schema: README, Registrations).")],
    persist: Annotated[bool, typer.Option(help="Keep it across restarts (under VLSERVE_HOME).")] = True,
    endpoint: Endpoint = settings.DEFAULT_ENDPOINT,
    api_key: ApiKey = None,
) -> None:
    """Register your own model family (e.g. a fine-tuned InternVL2.5)."""
    try:
        text = file.read_text(encoding="utf-8")
        _client(endpoint, api_key).post("/v1/model_registrations/LLM", json={"model": text, "persist": persist})
    except OSError as exc:
        _fail(f"cannot read {file}: {exc.strerror}")
    except ClientError as exc:
        _fail(str(exc))
    console.print(f"Registered {file}")


@app.command()
def unregister(
    model_name: Annotated[str, typer.Option("--model-name", "-n", help="Name of your registration.")],
    endpoint: Endpoint = settings.DEFAULT_ENDPOINT,
    api_key: ApiKey = None,
) -> None:
    """Remove one of your own registrations (built-ins cannot be removed)."""
    try:
        _client(endpoint, api_key).delete(f"/v1/model_registrations/LLM/{model_name}")
    except ClientError as exc:
        _fail(str(exc))
    console.print(f"Unregistered {model_name}")


@app.command()
def cached(endpoint: Endpoint = settings.DEFAULT_ENDPOINT, api_key: ApiKey = None) -> None:
    """List downloaded models in the cache."""
    try:
        rows = _client(endpoint, api_key).get("/v1/cache/models")["list"]
    except ClientError as exc:
        _fail(str(exc))
    table = Table("Model id", "Hub", "Size (MB)", "Path")
    for row in rows:
        size = row.get("size_bytes") or 0
        table.add_row(row.get("model_id", ""), row.get("hub", ""), f"{size / 1e6:.1f}", row.get("path", ""))
    console.print(table)


@app.command("remove-cache")
def remove_cache(
    model_id: Annotated[str, typer.Option("--model-id", help="Repository id, e.g. OpenGVLab/InternVL2_5-1B.")],
    hub: Annotated[Optional[str], typer.Option(help="Only this hub's copy.")] = None,
    endpoint: Endpoint = settings.DEFAULT_ENDPOINT,
    api_key: ApiKey = None,
) -> None:
    """Delete a downloaded model from the cache."""
    params = {"model_id": model_id, **({"hub": hub} if hub else {})}
    try:
        _client(endpoint, api_key).delete("/v1/cache/models", params=params)
    except ClientError as exc:
        _fail(str(exc))
    console.print(f"Removed {model_id} from the cache")


@app.command()
def twin(
    outdir: Annotated[Path, typer.Argument(help="Folder to write the checkpoint into.")],
    size_in_billions: Annotated[str, typer.Option("--size-in-billions", "-s", help="A size of the model, e.g. 1.")],
    model_format: Annotated[str, typer.Option("--model-format", "-f", help="pytorch or awq.")] = "pytorch",
    full_size: Annotated[bool, typer.Option(help="Real dimensions (random weights) for benchmarks.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    model_name: Annotated[str, typer.Option("--model-name", "-n", help="A registered model.")] = "InternVL2.5",
) -> None:
    """Write an architecture twin: the real config and tokenizer of a checkpoint, random weights,
    dimensions shrunk unless --full-size. Launch it with --model-path OUTDIR."""
    from vlserve.errors import VlserveError
    from vlserve.families import get_family
    from vlserve.registry import Registry, resolve

    try:
        resolved = resolve(Registry.default(), model_name=model_name, model_engine="Transformers",
                           model_format=model_format, model_size_in_billions=size_in_billions)  # fmt: skip
        if resolved.spec.architecture is None:
            _fail(f"{resolved.describe()} names no reference checkpoint (`architecture`), so it has no twin")
        family = get_family(resolved.family.model_family)
        path = family.write_twin(resolved.spec.architecture, outdir, full_size=full_size, seed=seed)
    except VlserveError as exc:
        _fail(exc.message)
    console.print(f"Wrote {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
