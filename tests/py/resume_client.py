"""Streams one generation through a Switchyard router with the real `openai` client and,
optionally, pauses mid-stream so the test can kill the serving backend.

Usage: python3 tests/py/resume_client.py <base_url> <model> <chat|completion> <max_tokens> <kill_after>

With kill_after > 0, after that many content chunks it prints `KILL <backend>` (the
router's `x-switchyard-backend` header) and waits for a line on stdin before reading on.
At the end it prints one JSON line: text, finish_reason, chunk ids, content chunk count,
the content pieces, backend, usage. Any exception (an error event included) exits non-zero. Run by the e2e test
`llamacpp::killed_llama_server_mid_stream_resumes_on_the_other`.
"""

import json
import sys

import openai


def main() -> None:
    base_url, model, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    max_tokens, kill_after = int(sys.argv[4]), int(sys.argv[5])
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    common = dict(
        model=model,
        max_tokens=max_tokens,
        temperature=0,
        seed=42,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    if kind == "chat":
        raw = client.chat.completions.with_raw_response.create(
            messages=[{"role": "user", "content": "Tell me a long story about a router."}],
            **common,
        )
    else:
        raw = client.completions.with_raw_response.create(
            prompt="Once upon a time, a router", **common
        )
    backend = raw.headers.get("x-switchyard-backend")
    text, finish, ids, chunks, usage = [], None, set(), 0, None
    for chunk in raw.parse():
        ids.add(chunk.id)
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        piece = (choice.delta.content if kind == "chat" else choice.text) or ""
        if piece:
            text.append(piece)
            chunks += 1
        if choice.finish_reason:
            finish = choice.finish_reason
        if kill_after and chunks == kill_after and piece:
            print("KILL", backend, flush=True)
            sys.stdin.readline()
    print(json.dumps({
        "text": "".join(text), "finish_reason": finish, "ids": sorted(ids),
        "chunks": chunks, "pieces": text, "backend": backend, "usage": usage,
    }), flush=True)


if __name__ == "__main__":
    main()
