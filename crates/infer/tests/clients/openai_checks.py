#!/usr/bin/env python3
"""The official `openai` client against `llm-serve` on the fixture model: models,
completions and chat, streaming and not, errors, and the `echo` + `logprobs`
log-likelihoods, whose mean over each reference sequence must equal the fixture's
transformers loss to 1e-4 relative.

    python3 openai_checks.py target/debug/llm-serve
"""

import gzip
import json
import sys

import openai
from openai import OpenAI

from server import FIXTURE, MODEL, Server

KEY = "test-key"


def check_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL], models


def check_completions(client):
    whole = client.completions.create(model=MODEL, prompt="Hello world", max_tokens=8, temperature=0)
    assert whole.object == "text_completion"
    assert whole.usage.completion_tokens == 8 and whole.usage.prompt_tokens == 2, whole.usage
    text = whole.choices[0].text
    stream = client.completions.create(model=MODEL, prompt="Hello world", max_tokens=8, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    pieces, usage, reasons = [], None, []
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.text)
            reasons.append(c.finish_reason)
    assert "".join(pieces) == text, (pieces, text)
    assert reasons[-1] == "length" and usage.completion_tokens == 8
    batch = client.completions.create(model=MODEL, prompt=["One", "Two"], n=2, max_tokens=3, seed=1)
    assert sorted(c.index for c in batch.choices) == [0, 1, 2, 3]


def check_chat(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    assert whole.object == "chat.completion"
    answer = whole.choices[0].message
    assert answer.role == "assistant" and whole.usage.completion_tokens == 10, whole
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1, "one id for the whole stream"
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["length"], finish
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.content, (text, answer.content)


def check_errors(client):
    for call, want in [
        (lambda: client.completions.create(model="gpt-4", prompt="a"), openai.NotFoundError),
        (lambda: client.completions.create(model=MODEL, prompt="a", max_tokens=100000), openai.BadRequestError),
        (lambda: client.completions.create(model=MODEL, prompt="a", temperature=5), openai.BadRequestError),
    ]:
        try:
            call()
        except want as e:
            assert e.body and e.body.get("param"), e.body
        else:
            raise AssertionError(f"expected {want.__name__}")
    wrong = OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    try:
        wrong.models.list()
    except openai.AuthenticationError:
        pass
    else:
        raise AssertionError("a wrong key was accepted")


def check_loglikelihoods(client):
    ref = json.load(gzip.open(FIXTURE / "reference.json.gz"))
    checked = 0
    for s in ref["sequences"]:
        if s["loss"] is None:
            continue
        r = client.completions.create(model=MODEL, prompt=s["input_ids"], max_tokens=0, echo=True, logprobs=1)
        lp = r.choices[0].logprobs.token_logprobs
        assert lp[0] is None and len(lp) == len(s["input_ids"]), lp[:3]
        nll = -sum(lp[1:]) / (len(lp) - 1)
        assert abs(nll - s["loss"]) <= 1e-4 * s["loss"], (s["name"], nll, s["loss"])
        checked += 1
    print(f"echo log-likelihoods: {checked} reference sequences within 1e-4 of transformers' loss")


def main():
    binary = sys.argv[1]
    with Server(binary, FIXTURE, "--api-key", KEY) as server:
        client = OpenAI(base_url=server.addr + "/v1", api_key=KEY)
        for check in [check_models, check_completions, check_chat, check_errors, check_loglikelihoods]:
            check(client)
            print(f"ok: {check.__name__}")
    print(f"openai {openai.__version__}: every check passed")


if __name__ == "__main__":
    main()
