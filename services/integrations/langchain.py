"""LangChain retriever over a running Saekin service (`pip install 'saekin[langchain]'`).

from services.integrations.langchain import SaekinRetriever

retriever = SaekinRetriever(base_url="http://127.0.0.1:8000", collections=["laws"], max_tokens=2000)
docs = retriever.invoke("지방자치단체 이행계획은 몇 년마다 세우나요?")
docs[0].metadata["n"], docs[0].metadata["title"], docs[0].metadata["pages"]
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from services.client import SaekinClient
from services.integrations.common import retrieve


class SaekinRetriever(BaseRetriever):
    """Documents from Saekin with citation metadata (n, title, pages, heading, char_start/end, score).

    `max_tokens` unset: one Document per search hit. Set: the context endpoint's passages within
    that budget (touching hits merged, neighbours added), one Document per citation `[n]`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    collections: list[str] = Field(..., min_length=1, max_length=20)
    top_k: int = 5
    mode: Literal["hybrid", "sparse", "dense"] = "hybrid"
    filter: dict[str, Any] | None = None
    max_tokens: int | None = None
    tokenizer: Literal["o200k_base", "cl100k_base", "embedding"] = "o200k_base"
    neighbors: int = 1
    timeout: float = 60.0
    _client: SaekinClient | None = PrivateAttr(default=None)

    def _saekin(self) -> SaekinClient:
        if self._client is None:
            self._client = SaekinClient(self.base_url, api_key=self.api_key, timeout=self.timeout)
        return self._client

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        passages = retrieve(
            self._saekin(),
            self.collections if len(self.collections) > 1 else self.collections[0],
            query,
            top_k=self.top_k,
            mode=self.mode,
            filter=self.filter,
            max_tokens=self.max_tokens,
            tokenizer=self.tokenizer,
            neighbors=self.neighbors,
        )
        return [Document(page_content=p.text, metadata=p.metadata, id=p.id) for p in passages]
