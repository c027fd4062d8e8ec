"""ragd's /mcp driven by the official MCP Python SDK (`pip install mcp`), as an agent would.

Usage: mcp_client.py BASE_URL KEY_OF_TENANT_A KEY_OF_TENANT_B COLLECTION RAGD_BINARY
Run by crates/ragd/tests/it/mcp.rs against a real `ragd serve` with authentication on; prints one
`... ok` line per check and exits non-zero at the first failure.
"""

import asyncio
import sys

import httpx
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

BASE, KEY_A, KEY_B, COLLECTION, RAGD = sys.argv[1:6]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


class Session:
    """An initialized MCP session over Streamable HTTP with `key`."""

    def __init__(self, key):
        self.key = key

    async def __aenter__(self):
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        self.http = httpx.AsyncClient(headers=headers, timeout=120)
        self.transport = streamable_http_client(f"{BASE}/mcp", http_client=self.http)
        read, write, _ = await self.transport.__aenter__()
        self.session = ClientSession(read, write)
        await self.session.__aenter__()
        self.init = await self.session.initialize()
        return self.session

    async def __aexit__(self, *exc):
        await self.session.__aexit__(*exc)
        await self.transport.__aexit__(*exc)
        await self.http.aclose()


async def main():
    async with Session(KEY_A) as s:
        check(s is not None, "initialize")
        tools = {t.name: t for t in (await s.list_tools()).tools}
        check({"list_collections", "search", "ask", "get_document", "get_chunks"} <= set(tools), f"tools: {sorted(tools)}")
        check(tools["search"].inputSchema["required"] == ["collection", "query"], "search's input schema")
        print("initialize and tools/list: ok")

        r = await s.call_tool("list_collections", {})
        names = [c["name"] for c in r.structuredContent["collections"]]
        check(not r.isError and COLLECTION in names, f"list_collections: {names}")

        r = await s.call_tool("search", {"collection": COLLECTION, "query": "when was the lighthouse built", "top_k": 2})
        results = r.structuredContent["results"]
        check(not r.isError and results and results[0]["doc_id"] == "lighthouse", f"search: {results}")
        check("1874" in r.content[0].text, "search's text rendering")
        print("search: ok")

        r = await s.call_tool("ask", {"collection": COLLECTION, "question": "In which year was the Brisa lighthouse built?"})
        a = r.structuredContent
        cited = [c["doc_id"] for c in a["citations"] if not c.get("closest")]
        check(not r.isError and "1874" in a["answer"] and "lighthouse" in cited, f"ask: {a['answer']!r} citing {cited}")
        check(a["answer_kind"] in ("generated", "extractive") and a["grounded"] is True, f"ask's kind: {a['answer_kind']}")
        print("ask: ok")

        # With a progress callback the SDK sends a progressToken: ragd answers as an event stream
        # with progress notifications, then the result.
        seen = []

        async def on_progress(progress, total, message):
            seen.append((progress, total, message))

        r = await s.call_tool("ask", {"collection": COLLECTION, "question": "When does the Corner Bakery open?"}, progress_callback=on_progress)
        check(not r.isError and "6 am" in r.structuredContent["answer"], f"ask with progress: {r}")
        check(seen and seen[-1][0] == 3 and seen[-1][1] == 3, f"progress notifications: {seen}")
        print("ask with progress: ok")

        r = await s.call_tool("get_chunks", {"collection": COLLECTION, "document": "lighthouse"})
        check(not r.isError and r.structuredContent["total"] >= 1 and "1874" in r.structuredContent["chunks"][0]["text"], "get_chunks")
        r = await s.call_tool("get_document", {"collection": COLLECTION, "document": "lighthouse"})
        check(not r.isError and r.structuredContent["id"] == "lighthouse", "get_document")
        print("get_document and get_chunks: ok")

        listed = [str(x.uri) for x in (await s.list_resources()).resources]
        uri = f"ragd://{COLLECTION}/lighthouse"
        check(uri in listed, f"resources/list: {listed}")
        contents = (await s.read_resource(uri)).contents
        check("1874" in contents[0].text, "resources/read")
        print("resources: ok")

        # Errors: a ragd error is a tool error with its stable code; a call that does not fit the
        # schema or names no tool is a JSON-RPC error.
        r = await s.call_tool("search", {"collection": "nothing-here", "query": "x"})
        check(r.isError and r.structuredContent["error"]["code"] == "collection_not_found", f"missing collection: {r}")
        for name, arguments in [("no_such_tool", {}), ("search", {"collection": COLLECTION}), ("search", {"collection": COLLECTION, "query": "x", "top_k": "many"})]:
            try:
                r = await s.call_tool(name, arguments)
                check(False, f"{name} {arguments} was accepted: {r}")
            except McpError as e:
                check(e.error.code == -32602, f"{name}: {e.error}")
        try:
            await s.read_resource("ragd://nothing-here/x")
            check(False, "a missing resource was read")
        except McpError as e:
            check(e.error.code in (-32002, -32602), f"missing resource: {e.error}")
        print("errors: ok")

    # Another tenant sees none of it.
    async with Session(KEY_B) as s:
        r = await s.call_tool("list_collections", {})
        check(r.structuredContent["collections"] == [], f"tenant B lists {r.structuredContent}")
        for name, arguments in [
            ("search", {"collection": COLLECTION, "query": "lighthouse"}),
            ("ask", {"collection": COLLECTION, "question": "When was the lighthouse built?"}),
            ("get_chunks", {"collection": COLLECTION, "document": "lighthouse"}),
        ]:
            r = await s.call_tool(name, arguments)
            check(r.isError and r.structuredContent["error"]["code"] == "collection_not_found", f"tenant B {name}: {r}")
        check((await s.list_resources()).resources == [], "tenant B's resources")
        try:
            await s.read_resource(f"ragd://{COLLECTION}/lighthouse")
            check(False, "tenant B read tenant A's document")
        except McpError as e:
            check(e.error.code == -32002, f"tenant B read: {e.error}")
        print("another tenant: ok")

    # The same tools over stdio, through `ragd mcp` (what a desktop client launches).
    params = StdioServerParameters(command=RAGD, args=["mcp", "--server", BASE], env={"RAGD_API_KEY": KEY_A, "RAGD_LOG": "warn"})
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as s:
            await s.initialize()
            tools = {t.name for t in (await s.list_tools()).tools}
            check("ask" in tools, f"stdio tools: {tools}")
            r = await s.call_tool("search", {"collection": COLLECTION, "query": "bakery opening hours", "top_k": 1})
            check(not r.isError and r.structuredContent["results"][0]["doc_id"] == "bakery", f"stdio search: {r}")
            r = await s.call_tool("ask", {"collection": COLLECTION, "question": "In which year was the Brisa lighthouse built?"})
            check(not r.isError and "1874" in r.structuredContent["answer"], f"stdio ask: {r}")
            contents = (await s.read_resource(f"ragd://{COLLECTION}/lighthouse")).contents
            check("1874" in contents[0].text, "stdio resources/read")
            try:
                await s.call_tool("no_such_tool", {})
                check(False, "stdio: an unknown tool was accepted")
            except McpError as e:
                check(e.error.code == -32602, f"stdio unknown tool: {e.error}")
    print("stdio: ok")

    # No key: the gateway's 401, before any MCP (checked with plain HTTP: the SDK reports it from
    # inside its task group).
    async with httpx.AsyncClient(timeout=30) as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        r = await http.post(f"{BASE}/mcp", json=body, headers={"Accept": "application/json, text/event-stream"})
        check(r.status_code == 401, f"no key: {r.status_code} {r.text[:200]}")
    print("no key: ok")


asyncio.run(main())
