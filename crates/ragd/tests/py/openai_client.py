"""The official `openai` package against ragd's OpenAI-compatible API.

Usage: openai_client.py BASE_URL COLLECTION  (the collection holds the Brisa lighthouse document)
Exits non-zero with a message when anything is off.
"""
import sys

from openai import OpenAI

base, collection = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"{base}/v1", api_key="not-needed-when-auth-is-off", max_retries=0, timeout=120)
model = f"ragd:{collection}"
question = "In which year was the Brisa lighthouse built?"

ids = [m.id for m in client.models.list().data]
assert model in ids, f"{model} not in {ids}"

# Not streamed: a chat.completion with ragd's extra `citations` field.
completion = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
answer = completion.choices[0].message.content
extra = completion.model_extra or {}
citations = extra.get("citations")
assert completion.object == "chat.completion", completion
assert "1874" in answer, f"answer without the fact: {answer!r}"
assert citations and citations[0]["doc_id"] == "lighthouse", f"citations: {citations!r}"
assert all({"n", "doc_id", "chunk_id", "text"} <= set(c) for c in citations), citations
assert completion.usage.completion_tokens > 0, completion.usage
print("non-streamed: ok:", answer)

# Streamed: chat.completion.chunk deltas, then a last chunk with `citations`.
stream = client.chat.completions.create(
    model=model,
    messages=[
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": question},
    ],
    stream=True,
)
parts, last_extra, chunks = [], {}, 0
for chunk in stream:
    chunks += 1
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.model_extra and chunk.model_extra.get("citations") is not None:
        last_extra = chunk.model_extra
streamed = "".join(parts)
assert chunks >= 3, f"only {chunks} chunks"
assert "1874" in streamed, f"streamed answer without the fact: {streamed!r}"
assert last_extra.get("citations") and last_extra["citations"][0]["doc_id"] == "lighthouse", last_extra
print("streamed: ok:", streamed)

# Errors come back as API errors the client raises.
try:
    client.chat.completions.create(model="ragd:no-such-collection", messages=[{"role": "user", "content": "hi"}])
    raise SystemExit("expected an error for an unknown collection")
except Exception as e:  # openai.NotFoundError
    assert getattr(e, "status_code", None) == 404, repr(e)
print("errors: ok")
