// Collections: profile, model, documents by status, chunks; default search settings (PATCH).

import {
  blankFusion,
  blankRerank,
  describeFusion,
  describeRerank,
  fusionForm,
  fusionValue,
  rerankForm,
  rerankValue,
} from "./util.js";

export function collectionsScreen() {
  return {
    cols: { items: [], loading: false, loaded: false, error: "" },
    edit: { name: null, mode: "", fusion: blankFusion(), rerank: blankRerank(), error: "", saving: false, saved: "" },
    confirmDelete: null,

    async loadCollections() {
      this.cols.loading = true;
      this.cols.error = "";
      try {
        const { body } = await this.api.get("/v1/collections");
        this.cols.items = body.items;
        this.cols.loaded = true;
        const names = body.items.map((c) => c.name);
        if (!names.includes(this.current)) this.current = names[0] || "";
        if (!this.upload.collection) this.upload.collection = this.current;
      } catch (e) {
        if (e.status !== 401) this.cols.error = this.errorText(e); // a 401 brings up the key prompt
      } finally {
        this.cols.loading = false;
      }
    },

    collectionNames() {
      return this.cols.items.map((c) => c.name);
    },

    startEdit(c) {
      const d = c.search_defaults || {};
      this.edit = {
        name: c.name,
        mode: d.mode || "",
        fusion: fusionForm(d.fusion),
        rerank: rerankForm(d.rerank),
        error: "",
        saving: false,
        saved: "",
      };
    },

    cancelEdit() {
      this.edit.name = null;
    },

    async saveDefaults() {
      const defaults = {};
      if (this.edit.mode) defaults.mode = this.edit.mode;
      const fusion = fusionValue(this.edit.fusion);
      if (fusion) defaults.fusion = fusion;
      const rerank = rerankValue(this.edit.rerank);
      if (rerank !== null) defaults.rerank = rerank;
      this.edit.saving = true;
      this.edit.error = "";
      try {
        const name = this.edit.name;
        const { body } = await this.api.patch(`/v1/collections/${encodeURIComponent(name)}`, {
          search_defaults: defaults,
        });
        this.cols.items = this.cols.items.map((c) => (c.name === body.name ? body : c));
        this.edit.name = null;
        this.edit.saved = name;
      } catch (e) {
        this.edit.error = this.errorText(e);
      } finally {
        this.edit.saving = false;
      }
    },

    async deleteCollection(name) {
      if (this.confirmDelete !== name) {
        this.confirmDelete = name;
        return;
      }
      this.confirmDelete = null;
      try {
        await this.api.del(`/v1/collections/${encodeURIComponent(name)}`);
      } catch (e) {
        this.cols.error = this.errorText(e);
      }
      await this.loadCollections();
    },

    defaultsSummary(d) {
      if (!d || (!d.mode && !d.fusion && (d.rerank === null || d.rerank === undefined))) return this.t("serviceDefaults");
      const parts = [];
      if (d.mode) parts.push(d.mode);
      if (d.fusion) parts.push(describeFusion(d.fusion));
      if (d.rerank !== null && d.rerank !== undefined) parts.push(`rerank ${describeRerank(d.rerank)}`);
      return parts.join(" · ");
    },

    modelLabel(c) {
      const model = c.model || "—";
      return c.model_sha256 ? `${model} (${c.model_sha256.slice(0, 12)})` : model;
    },
  };
}
