// Search playground: question, mode, fusion, rerank, metadata filters; results with highlights,
// the explain view (each leg's rank and score beside the fused one) and the context a chatbot gets.

import { blankFusion, blankRerank, fusionValue, parseValue, rerankValue, segments } from "./util.js";

export function searchScreen() {
  return {
    search: {
      query: "",
      topK: 10,
      mode: "",
      fusion: blankFusion(),
      rerank: blankRerank(),
      filters: [],
      externalIds: "",
      tab: "results",
      loading: false,
      error: "",
      response: null,
      roundTripMs: null,
      asked: null, // the request body of the shown results
    },
    ctx: { maxTokens: 2000, tokenizer: "o200k_base", neighbors: 1, loading: false, error: "", response: null, asked: null },
    searchRequest: 0,

    addFilter() {
      this.search.filters.push({ key: "", op: "eq", value: "", gte: "", lte: "" });
    },

    removeFilter(i) {
      this.search.filters.splice(i, 1);
    },

    searchFilter() {
      const metadata = {};
      for (const f of this.search.filters) {
        const key = f.key.trim();
        if (!key) continue;
        if (f.op === "eq") metadata[key] = parseValue(f.value);
        else if (f.op === "in")
          metadata[key] = f.value
            .split(",")
            .map((v) => v.trim())
            .filter(Boolean)
            .map(parseValue);
        else {
          const range = {};
          if (String(f.gte).trim()) range.gte = parseValue(f.gte);
          if (String(f.lte).trim()) range.lte = parseValue(f.lte);
          metadata[key] = range;
        }
      }
      const filter = {};
      if (Object.keys(metadata).length) filter.metadata = metadata;
      const ids = this.search.externalIds
        .split(",")
        .map((v) => v.trim())
        .filter(Boolean);
      if (ids.length) filter.external_ids = ids;
      return Object.keys(filter).length ? filter : null;
    },

    // The fields a search and a context request share.
    searchFields() {
      const s = this.search;
      const body = { query: s.query, top_k: Number(s.topK) };
      if (s.mode) body.mode = s.mode;
      const fusion = fusionValue(s.fusion);
      if (fusion) body.fusion = fusion;
      const rerank = rerankValue(s.rerank);
      if (rerank !== null) body.rerank = rerank;
      const filter = this.searchFilter();
      if (filter) body.filter = filter;
      return body;
    },

    async runSearch() {
      const s = this.search;
      if (!s.query.trim() || !this.current) return;
      const body = { ...this.searchFields(), explain: true, highlight: true };
      // A slower answer to an earlier question must not replace the latest one's.
      const request = ++this.searchRequest;
      s.loading = true;
      s.error = "";
      const started = performance.now();
      try {
        const { body: response } = await this.api.post(`/v1/collections/${encodeURIComponent(this.current)}/search`, body);
        if (request !== this.searchRequest) return;
        s.roundTripMs = performance.now() - started;
        s.asked = { collection: this.current, ...this.searchFields() };
        s.response = response;
        this.ctx.response = null;
        if (s.tab === "context") await this.loadContext();
      } catch (e) {
        if (request === this.searchRequest) s.error = this.errorText(e);
      } finally {
        if (request === this.searchRequest) s.loading = false;
      }
    },

    async showTab(tab) {
      this.search.tab = tab;
      if (tab === "context" && this.search.asked && !this.ctx.response) await this.loadContext();
    },

    async loadContext() {
      const asked = this.search.asked;
      if (!asked) return;
      const { collection, ...fields } = asked;
      const body = {
        ...fields,
        max_tokens: Number(this.ctx.maxTokens),
        tokenizer: this.ctx.tokenizer,
        neighbors: Number(this.ctx.neighbors),
      };
      this.ctx.loading = true;
      this.ctx.error = "";
      try {
        const { body: response } = await this.api.post(`/v1/collections/${encodeURIComponent(collection)}/context`, body);
        this.ctx.response = response;
      } catch (e) {
        this.ctx.response = null;
        this.ctx.error = this.errorText(e);
      } finally {
        this.ctx.loading = false;
      }
    },

    hitSegments(hit) {
      return segments(hit.text, hit.highlights);
    },

    hitTitle(hit) {
      return hit.title || hit.external_id || hit.document_id;
    },

    // A leg's rank of the hit, or "—" when the hit was not among that leg's candidates.
    legRank(leg) {
      return leg && leg.rank !== null && leg.rank !== undefined ? leg.rank : "—";
    },

    legScore(leg) {
      return leg && leg.score !== null && leg.score !== undefined ? Number(leg.score).toFixed(4) : "—";
    },

    hasRerank() {
      const r = this.search.response;
      return !!(r && r.results.some((h) => h.explain && h.explain.rerank));
    },

    settingsLine(settings) {
      if (!settings) return "";
      const parts = [settings.mode];
      if (settings.fusion) parts.push(this.describeFusion(settings.fusion));
      if (settings.rerank) parts.push(`rerank depth ${settings.rerank.depth}`);
      return parts.join(" · ");
    },

    citationPages(c) {
      return c.pages && c.pages.length ? c.pages.join(", ") : "—";
    },
  };
}
