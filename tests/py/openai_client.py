"""Drives a Switchyard router with the real `openai` client (pip install openai).

Usage: python3 tests/py/openai_client.py <base_url> <model>

Prints one line per check, `ok <name> <detail>`, and exits non-zero on the first
failure. Run by the e2e test `python::openai_package_streams_and_not`.
"""

import sys

import openai


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)

    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    print("ok chat", chat.choices[0].message.content)

    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True
        )
        if c.choices
    ]
    print("ok chat-stream", len(pieces), "".join(pieces))

    comp = client.completions.create(model=model, prompt="Once upon", max_tokens=8)
    print("ok completion", comp.choices[0].text)

    pieces = [c.choices[0].text for c in client.completions.create(
        model=model, prompt="Once upon", max_tokens=8, stream=True
    )]
    print("ok completion-stream", len(pieces), "".join(pieces))

    try:
        client.chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "hi"}]
        )
        print("FAIL unknown model accepted")
        sys.exit(1)
    except openai.NotFoundError as e:
        print("ok not-found", e.status_code)

    models = client.models.list()
    print("ok models", ",".join(m.id for m in models.data))


if __name__ == "__main__":
    main()
