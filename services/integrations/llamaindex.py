"""LlamaIndex retriever over a running Saekin service (`pip install 'saekin[llamaindex]'`).

from services.integrations.llamaindex import SaekinRetriever

retriever = SaekinRetriever(base_url="http://127.0.0.1:8000", collections=["laws"], max_tokens=2000)
nodes = retriever.retrieve("지방자치단체 이행계획은 몇 년마다 세우나요?")
nodes[0].node.metadata["title"], nodes[0].score
"""

from __future__ import annotations

from typing import Any, Literal

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from services.client import SaekinClient
from services.integrations.common import retrieve


class SaekinRetriever(BaseRetriever):
    """Nodes from Saekin with citation metadata (n, title, pages, heading, char_start/end, score).

    `max_tokens` unset: one node per search hit; set: the context endpoint's passages within that
    budget, one node per citation `[n]`.
    """

    def __init__(
        self,
        *,
        collections: list[str],
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        top_k: int = 5,
        mode: Literal["hybrid", "sparse", "dense"] = "hybrid",
        filter: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        tokenizer: Literal["o200k_base", "cl100k_base", "embedding"] = "o200k_base",
        neighbors: int = 1,
        timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        if not 1 <= len(collections) <= 20:
            raise ValueError("collections: 1 to 20 names")
        self.client = SaekinClient(base_url, api_key=api_key, timeout=timeout)
        self.collections = collections
        self.options = dict(
            top_k=top_k, mode=mode, filter=filter, max_tokens=max_tokens, tokenizer=tokenizer, neighbors=neighbors
        )
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        passages = retrieve(
            self.client,
            self.collections if len(self.collections) > 1 else self.collections[0],
            query_bundle.query_str,
            **self.options,  # type: ignore[arg-type]
        )
        return [
            NodeWithScore(node=TextNode(id_=p.id, text=p.text, metadata=p.metadata), score=p.score) for p in passages
        ]
