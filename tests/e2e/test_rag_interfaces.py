"""What RAG stacks plug into, each tested with its own real client against `saekin serve`:
the official `openai` client on /v1/embeddings, the `mcp` SDK's client over streamable HTTP (/mcp)
and over stdio (`saekin mcp`), LangChain's and LlamaIndex's SaekinRetriever, the typed client."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import REPO
from tests.e2e.test_embedded_service import _free_port, _saekin

KEY = "test-key-16"
LAW = (
    "탄소중립 기본법은 기후위기에 대응하기 위한 법률이다. 정부는 2050년까지 온실가스 순배출량을 영으로 줄이는 "
    "목표를 세웠다.\n\n지방자치단체는 지역 실정에 맞는 탄소중립 이행계획을 5년마다 수립해야 한다. 이행계획에는 "
    "부문별 감축 목표가 들어간다. 환경부 장관은 이행 상황을 매년 점검한다."
)
CITRUS = "제주도의 감귤은 겨울에 수확한다. 농가는 수확한 감귤을 전국으로 보낸다."


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_twin: Path):
    """`saekin serve` with an API key and two collections indexed through the typed client."""
    from services.client import SaekinClient

    tmp_path = tmp_path_factory.mktemp("rag")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAEKIN_")}
    env.update(
        SAEKIN_DATA_DIR=str(tmp_path / "data"),
        SAEKIN_EMBEDDING_MODEL=str(small_twin),
        SAEKIN_PORT=str(port),
        SAEKIN_API_KEYS=KEY,
        SAEKIN_CHUNK_TOKENS="32",
        SAEKIN_CHUNK_OVERLAP_TOKENS="8",
    )
    proc = _saekin(env, "serve")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"saekin serve exited: {proc.communicate()[0]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail(f"saekin serve did not become ready: {proc.communicate()[0]}")
    with SaekinClient(base, api_key=KEY) as client:
        for col, text, ext, title in [("laws", LAW, "carbon", "탄소중립 기본법"), ("farm", CITRUS, "jeju", "감귤")]:
            doc = client.upload_text(col, text, external_id=ext, title=title, metadata={"kind": col})
            assert client.wait_until_indexed(col, doc.id).status.value == "indexed"
    yield base, env
    proc.terminate()
    proc.wait(timeout=30)


def test_typed_client(served):
    from services.client import SaekinAPIError, SaekinClient

    base, _ = served
    with SaekinClient(base, api_key=KEY) as client:
        ctx = client.context("laws", "지방자치단체 이행계획", max_tokens=200, mode="sparse")
        assert ctx.context.startswith("[1] **탄소중립 기본법**") and ctx.citations[0].external_id == "carbon"
        assert client.get_document("laws", external_id="carbon").title == "탄소중립 기본법"
        assert {c.name for c in client.list_collections().items} == {"laws", "farm"}
        hits = client.search(["laws", "farm"], "감귤 수확", mode="sparse").results
        assert hits[0].collection == "farm"
    with SaekinClient(base, api_key="wrong") as client, pytest.raises(SaekinAPIError) as err:
        client.list_collections()
    assert err.value.status == 401


def test_openai_client_embeddings(served):
    from openai import OpenAI

    base, _ = served
    client = OpenAI(base_url=f"{base}/v1", api_key=KEY)
    texts = ["탄소중립 기본법", "지방자치단체 이행계획", "감귤"]
    default = client.embeddings.create(model="bge-m3-ko", input=texts)  # the client asks for base64
    floats = client.embeddings.create(model="dragonkue/bge-m3-ko", input=texts, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1, 2]
    a, b = np.array([d.embedding for d in default.data]), np.array([d.embedding for d in floats.data])
    assert a.shape == b.shape and a.shape[0] == 3 and np.allclose(a, b, atol=1e-6)
    assert default.usage.prompt_tokens > 0 and default.usage.total_tokens == default.usage.prompt_tokens
    one = client.embeddings.create(model="bge-m3-ko", input="탄소중립 기본법", encoding_format="float")
    assert np.allclose(one.data[0].embedding, b[0], atol=1e-5)
    with pytest.raises(Exception) as err:
        client.embeddings.create(model="text-embedding-3-small", input="a")
    assert "bge-m3-ko" in str(err.value)


def _tool_json(result) -> dict:
    assert not result.is_error, result
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def _use_mcp(client_arg) -> dict:
    from mcp import Client

    async with Client(client_arg) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        listed = _tool_json(await client.call_tool("list_collections", {}))
        found = _tool_json(
            await client.call_tool("search", {"query": "감귤 수확", "collections": ["laws", "farm"], "mode": "sparse"})
        )
        ctx = _tool_json(
            await client.call_tool(
                "get_context",
                {"query": "지방자치단체 이행계획", "collections": ["laws"], "max_tokens": 300, "mode": "sparse"},
            )
        )
        doc = _tool_json(await client.call_tool("get_document", {"collection": "laws", "external_id": "carbon"}))
        missing = await client.call_tool("get_document", {"collection": "laws", "external_id": "nope"})
    return dict(tools=tools, listed=listed, found=found, ctx=ctx, doc=doc, missing=missing)


def _check_mcp(out: dict) -> None:
    assert set(out["tools"]) == {"search", "get_context", "list_collections", "get_document"}
    schema = out["tools"]["get_context"].input_schema
    assert {"query", "collections", "max_tokens"} <= set(schema["properties"])
    assert "한국어" in (out["tools"]["search"].description or "")
    assert {c["name"] for c in out["listed"]["items"]} == {"laws", "farm"}
    assert out["found"]["results"][0]["collection"] == "farm"
    assert out["ctx"]["context"].startswith("[1] ") and out["ctx"]["citations"][0]["external_id"] == "carbon"
    assert out["doc"]["title"] == "탄소중립 기본법"
    assert out["missing"].is_error


def test_mcp_over_streamable_http(served):
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    base, _ = served
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    out = asyncio.run(_use_mcp(streamable_http_client(f"{base}/mcp", http_client=http)))
    _check_mcp(out)

    async def unauthorized() -> None:
        from mcp import Client

        async with Client(f"{base}/mcp") as client:
            await client.list_tools()

    with pytest.raises(BaseException):  # noqa: B017 - the SDK wraps the 401 in its own error group
        asyncio.run(unauthorized())


def test_mcp_over_stdio(served):
    from mcp import StdioServerParameters

    base, env = served
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "services.cli", "mcp", "--url", base],
        env={**env, "SAEKIN_API_KEY": KEY},
        cwd=str(REPO),
    )
    _check_mcp(asyncio.run(_use_mcp(params)))


def test_langchain_retriever(served):
    from services.integrations.langchain import SaekinRetriever

    base, _ = served
    retriever = SaekinRetriever(base_url=base, api_key=KEY, collections=["laws", "farm"], mode="sparse", top_k=3)
    docs = retriever.invoke("감귤 수확")
    assert docs and docs[0].metadata["collection"] == "farm" and docs[0].metadata["external_id"] == "jeju"
    assert "감귤" in docs[0].page_content
    budgeted = SaekinRetriever(base_url=base, api_key=KEY, collections=["laws"], mode="sparse", max_tokens=120)
    docs = budgeted.invoke("지방자치단체 이행계획")
    assert docs[0].metadata["n"] == 1 and docs[0].metadata["title"] == "탄소중립 기본법"
    assert LAW[docs[0].metadata["char_start"] : docs[0].metadata["char_end"]] == docs[0].page_content


def test_llamaindex_retriever(served):
    from services.integrations.llamaindex import SaekinRetriever

    base, _ = served
    retriever = SaekinRetriever(base_url=base, api_key=KEY, collections=["laws"], mode="sparse", max_tokens=200)
    nodes = retriever.retrieve("지방자치단체 이행계획")
    assert nodes and nodes[0].node.metadata["title"] == "탄소중립 기본법" and nodes[0].score > 0
    assert "이행계획" in nodes[0].node.get_content()
    plain = SaekinRetriever(base_url=base, api_key=KEY, collections=["farm"], mode="sparse")
    assert plain.retrieve("감귤")[0].node.metadata["external_id"] == "jeju"
