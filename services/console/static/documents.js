// Documents: a collection's list with a status filter and cursor paging; one document's page with
// its metadata and chunks (GET .../documents/{id}/chunks).

const CHUNK_PAGE = 50;

export function documentsScreen() {
  return {
    docs: { status: "", limit: 20, items: [], cursor: null, previous: [], next: null, loading: false, error: "" },
    doc: { collection: "", item: null, chunks: [], generation: null, next: null, loading: false, error: "" },
    docConfirmDelete: null,
    retryTarget: null,
    // Only the latest list request may fill the table: a slower earlier response (another filter or
    // page size) would otherwise overwrite it.
    docsRequest: 0,

    async loadDocs({ cursor = null } = {}) {
      if (!this.current) {
        this.docs.items = [];
        return;
      }
      const request = ++this.docsRequest;
      this.docs.loading = true;
      this.docs.error = "";
      try {
        const { body } = await this.api.get(`/v1/collections/${encodeURIComponent(this.current)}/documents`, {
          status: this.docs.status,
          cursor,
          limit: this.docs.limit,
        });
        if (request !== this.docsRequest) return;
        this.docs.items = body.items;
        this.docs.cursor = cursor;
        this.docs.next = body.next_cursor;
      } catch (e) {
        if (request !== this.docsRequest) return;
        this.docs.items = [];
        this.docs.error = this.errorText(e);
      } finally {
        if (request === this.docsRequest) this.docs.loading = false;
      }
    },

    firstDocsPage() {
      this.docs.previous = [];
      return this.loadDocs();
    },

    nextDocsPage() {
      this.docs.previous.push(this.docs.cursor);
      return this.loadDocs({ cursor: this.docs.next });
    },

    previousDocsPage() {
      return this.loadDocs({ cursor: this.docs.previous.pop() || null });
    },

    docLabel(d) {
      return d.title || d.filename || d.external_id || d.id;
    },

    statusLabel(d) {
      if (d.status === "processing") return this.t(`stage_${d.stage || "extracting"}`);
      return this.t(`st_${d.status}`);
    },

    docHref(collection, d) {
      return `#/document/${encodeURIComponent(collection)}/${d.id}`;
    },

    async deleteDoc(collection, d) {
      if (this.docConfirmDelete !== d.id) {
        this.docConfirmDelete = d.id;
        return;
      }
      this.docConfirmDelete = null;
      try {
        await this.api.del(`/v1/collections/${encodeURIComponent(collection)}/documents/${d.id}`);
        if (this.route.name === "document") {
          window.location.hash = `#/documents/${encodeURIComponent(collection)}`;
        } else {
          await this.loadDocs({ cursor: this.docs.cursor });
        }
      } catch (e) {
        this.docs.error = this.doc.error = this.errorText(e);
      }
    },

    // The API keeps no copy a client could re-send, so a retry is an upload of the file again: with
    // the document's external id (which replaces it) or, without one, the same bytes (which match it).
    chooseRetryFile(collection, d) {
      this.retryTarget = { collection, doc: d };
      this.$refs.retryInput.click();
    },

    async retryWithFile(event) {
      const file = event.target.files && event.target.files[0];
      event.target.value = "";
      const target = this.retryTarget;
      this.retryTarget = null;
      if (!file || !target) return;
      const { collection, doc } = target;
      try {
        await this.api.upload(
          collection,
          file,
          {
            external_id: doc.external_id || "",
            title: doc.title || "",
            metadata: JSON.stringify(doc.metadata || {}),
          },
          () => {},
        );
        if (this.route.name === "document") await this.loadDoc(collection, doc.id);
        else await this.loadDocs({ cursor: this.docs.cursor });
      } catch (e) {
        this.docs.error = this.doc.error = this.errorText(e);
      }
    },

    async loadDoc(collection, id) {
      this.doc = { collection, item: null, chunks: [], generation: null, next: null, loading: true, error: "" };
      try {
        const { body } = await this.api.get(`/v1/collections/${encodeURIComponent(collection)}/documents/${id}`);
        this.doc.item = body;
        await this.moreChunks(true);
        if (body.status === "queued" || body.status === "processing") this.followDoc(collection, id);
      } catch (e) {
        this.doc.error = this.errorText(e);
      } finally {
        this.doc.loading = false;
      }
    },

    async moreChunks(first = false) {
      const { collection, item } = this.doc;
      const { body } = await this.api.get(
        `/v1/collections/${encodeURIComponent(collection)}/documents/${item.id}/chunks`,
        { cursor: first ? null : this.doc.next, limit: CHUNK_PAGE },
      );
      this.doc.generation = body.generation;
      this.doc.chunks = first ? body.items : this.doc.chunks.concat(body.items);
      this.doc.next = body.next_cursor;
    },

    // While the document is processed, its page follows it until indexed or failed.
    followDoc(collection, id) {
      setTimeout(async () => {
        if (this.route.name !== "document" || !this.doc.item || this.doc.item.id !== id) return;
        try {
          const { body } = await this.api.get(`/v1/collections/${encodeURIComponent(collection)}/documents/${id}`);
          this.doc.item = body;
          if (body.status === "queued" || body.status === "processing") this.followDoc(collection, id);
          else await this.moreChunks(true);
        } catch (e) {
          this.doc.error = this.errorText(e);
        }
      }, 1000);
    },

    metadataRows(item) {
      return Object.entries(item.metadata || {}).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]);
    },
  };
}
