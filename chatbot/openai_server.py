"""An OpenAI-compatible HTTP endpoint over the project's own ChatEngine.

    python -m chatbot.openai_server [--host 127.0.0.1] [--port 8000]

Serves `GET /v1/models` (one model per servable adapter: base, qlora, ...) and
`POST /v1/chat/completions` (streamed as server-sent events with `"stream": true`), the subset of
the API that vLLM serves and `chatbot.remote.RemoteEngine` uses. It lets the remote backend be
tested against a real server, and lets one machine serve the model to several app processes.
vLLM's extra sampling fields `top_k` and `repetition_penalty` are accepted too, and our engine's
answer n-gram limit (`repeat_ngram_size`, `max_ngram_repeats`).

With `--api-key-env NAME`, requests must carry `Authorization: Bearer <value of $NAME>`.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' `Request` annotation at
# runtime, and a string annotation naming a local import would not resolve.
import argparse
import json
import os
import time
import uuid

from chatbot.sampling import GenerationError

# OpenAI request field -> engine sampling option
_SAMPLING_FIELDS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_new_tokens",
    "max_completion_tokens": "max_new_tokens",
    "repetition_penalty": "repetition_penalty",
    "repeat_ngram_size": "repeat_ngram_size",
    "max_ngram_repeats": "max_ngram_repeats",
    "seed": "seed",
}


def _error(status: int, message: str, kind: str = "invalid_request_error"):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def create_app(engine, *, api_key: str | None = None):
    """A FastAPI app answering with `engine` (any chatbot.engine_protocol.Engine)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI(title="Wayfarer OpenAI-compatible endpoint")

    def unauthorized(request: Request):
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "missing or wrong API key", "authentication_error")
        return None

    @app.get("/v1/models")
    def models(request: Request):
        if (refused := unauthorized(request)) is not None:
            return refused
        created = int(time.time())
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": created, "owned_by": "wayfarer"} for name in engine.adapters],
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        if (refused := unauthorized(request)) is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        model = body.get("model")
        if model not in engine.adapters:
            return _error(404, f"model {model!r} is not served here; available: {', '.join(engine.adapters)}", "not_found_error")
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ("system", "user", "assistant")
            for m in messages
        ):
            return _error(400, "messages must be a list of {role: system|user|assistant, content: string}")
        if body.get("n", 1) != 1:
            return _error(400, "only n=1 is supported")
        sampling = {option: body[field] for field, option in _SAMPLING_FIELDS.items() if body.get(field) is not None}
        try:
            # Validation and prompt building happen here, so bad requests fail before streaming starts.
            pieces = engine.generate([{"role": m["role"], "content": m["content"]} for m in messages], model, **sampling)
        except GenerationError as err:
            return _error(400, str(err))
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())

        if not body.get("stream"):
            try:
                text = "".join(pieces)
            except GenerationError as err:
                return _error(500, str(err), "server_error")
            return {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            }

        def chunk(delta: dict, finish_reason: str | None = None) -> str:
            payload = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        def events():
            # A sync generator: Starlette runs it in a worker thread, so waiting for the model
            # never blocks the event loop. A client that disconnects closes it, which cancels
            # the generation in the engine.
            try:
                yield chunk({"role": "assistant", "content": ""})
                for piece in pieces:
                    yield chunk({"content": piece})
                yield chunk({}, "stop")
            except GenerationError as err:
                # Headers are sent already: report the failure in-band, as vLLM does.
                yield f"data: {json.dumps({'error': {'message': str(err), 'type': 'server_error', 'code': 500}})}\n\n"
            finally:
                pieces.close()
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatbot.openai_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key-env", default=None, help="environment variable holding the API key clients must send")
    args = parser.parse_args(argv)

    from settings import apply_runtime, load_settings

    settings = load_settings()
    apply_runtime(settings)
    import uvicorn

    from chatbot.engine import engine_from_settings

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            parser.error(f"${args.api_key_env} is empty")
    # The configured backend: usually the local model; a remote one makes this a proxy.
    engine = engine_from_settings(settings)
    uvicorn.run(create_app(engine, api_key=api_key), host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
