// Upload: files and folders by drag-and-drop or picker, several at once; each file's status
// followed live through the API (queued → extracting → chunking → embedding → indexed | failed).

import { COLLECTION_NAME } from "./util.js";

const PARALLEL_UPLOADS = 3;
const POLL_MS = 700;
const LIST_ABOVE = 8; // more files than this in flight: poll with the collection's listing
const FINAL = new Set(["indexed", "failed"]);

// Every file under the dropped entries (folders walked), skipping hidden files such as .DS_Store.
async function collectEntries(entries) {
  const out = [];
  async function walk(entry, prefix) {
    if (entry.name.startsWith(".")) return;
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
      out.push({ file, path: prefix + entry.name });
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        // readEntries answers in batches (100 in Chromium) until an empty one.
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
        if (!batch.length) break;
        for (const child of batch) await walk(child, `${prefix}${entry.name}/`);
      }
    }
  }
  for (const entry of entries) await walk(entry, "");
  return out;
}

export function uploadScreen() {
  return {
    upload: {
      collection: "",
      externalId: "",
      pathAsId: false,
      metadata: "",
      dragging: false,
      files: [],
      error: "",
      polling: false,
    },
    nextFileKey: 1,

    onDragOver(event) {
      event.dataTransfer.dropEffect = "copy";
      this.upload.dragging = true;
    },

    async onDrop(event) {
      this.upload.dragging = false;
      const dt = event.dataTransfer;
      // Entries must be taken before the first await: the DataTransfer empties after the event.
      const entries = [];
      for (const item of Array.from(dt.items || [])) {
        if (item.kind !== "file") continue;
        const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
        if (entry) entries.push(entry);
      }
      const plain = Array.from(dt.files || []).map((file) => ({ file, path: file.name }));
      const picked = entries.length ? await collectEntries(entries) : plain;
      this.addFiles(picked);
    },

    onPick(event) {
      const picked = Array.from(event.target.files || [])
        .filter((file) => !file.name.startsWith("."))
        .map((file) => ({ file, path: file.webkitRelativePath || file.name }));
      this.addFiles(picked);
      event.target.value = "";
    },

    addFiles(picked) {
      for (const { file, path } of picked) {
        this.upload.files.push({
          key: this.nextFileKey++,
          file,
          path,
          size: file.size,
          state: "ready", // ready | uploading | stored | rejected
          sent: 0,
          total: file.size,
          fields: null,
          doc: null,
          error: "",
          confirmDelete: false,
        });
      }
    },

    // The fields sent with every file of the batch; null (with upload.error set) when invalid.
    uploadFields(files) {
      const u = this.upload;
      u.error = "";
      const collection = u.collection.trim();
      if (!COLLECTION_NAME.test(collection)) {
        u.error = this.t("badCollectionName");
        return null;
      }
      let metadata = "";
      if (u.metadata.trim()) {
        try {
          const parsed = JSON.parse(u.metadata);
          if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
          metadata = JSON.stringify(parsed);
        } catch {
          u.error = this.t("badMetadata");
          return null;
        }
      }
      const externalId = u.externalId.trim();
      if (externalId && !u.pathAsId && files.length > 1) {
        u.error = this.t("externalIdOneFile");
        return null;
      }
      return { collection, metadata, externalId, pathAsId: u.pathAsId };
    },

    async startUploads() {
      const ready = this.upload.files.filter((f) => f.state === "ready");
      if (!ready.length) return;
      const fields = this.uploadFields(ready);
      if (!fields) return;
      for (const f of ready) {
        f.fields = {
          collection: fields.collection,
          metadata: fields.metadata,
          external_id: fields.pathAsId ? f.path : fields.externalId,
        };
      }
      const queue = [...ready];
      const worker = async () => {
        while (queue.length) await this.sendFile(queue.shift());
      };
      await Promise.all(Array.from({ length: Math.min(PARALLEL_UPLOADS, queue.length) }, worker));
      this.current = fields.collection;
    },

    async sendFile(f) {
      f.state = "uploading";
      f.sent = 0;
      f.error = "";
      const { collection, metadata, external_id } = f.fields;
      try {
        const { body } = await this.api.upload(collection, f.file, { external_id, metadata }, (sent, total) => {
          f.sent = sent;
          f.total = total;
        });
        f.doc = body;
        f.state = "stored";
        this.pollUploads();
      } catch (e) {
        f.state = "rejected";
        f.error = this.errorText(e);
      }
    },

    // Follow every stored file that is not indexed or failed yet, until none is left.
    pollUploads() {
      if (this.upload.polling) return;
      this.upload.polling = true;
      const tick = async () => {
        const pending = this.upload.files.filter((f) => f.state === "stored" && f.doc && !FINAL.has(f.doc.status));
        if (!pending.length) {
          this.upload.polling = false;
          this.loadCollections();
          return;
        }
        // Many at once: one listing per collection (newest first, where fresh uploads are) answers
        // for most of them; the rest are asked one by one.
        let single = pending;
        if (pending.length > LIST_ABOVE) {
          single = [];
          for (const collection of new Set(pending.map((f) => f.fields.collection))) {
            const mine = pending.filter((f) => f.fields.collection === collection);
            try {
              const { body } = await this.api.get(`/v1/collections/${encodeURIComponent(collection)}/documents`, {
                limit: 500,
              });
              const byId = new Map(body.items.map((d) => [d.id, d]));
              for (const f of mine) {
                if (byId.has(f.doc.id)) f.doc = byId.get(f.doc.id);
                else single.push(f);
              }
            } catch {
              single.push(...mine);
            }
          }
        }
        for (let i = 0; i < single.length; i += 6) {
          await Promise.all(
            single.slice(i, i + 6).map(async (f) => {
              try {
                const { body } = await this.api.get(
                  `/v1/collections/${encodeURIComponent(f.fields.collection)}/documents/${f.doc.id}`,
                );
                f.doc = body;
              } catch (e) {
                if (e.status === 404) {
                  f.state = "rejected";
                  f.error = this.errorText(e);
                }
              }
            }),
          );
        }
        setTimeout(tick, POLL_MS);
      };
      setTimeout(tick, POLL_MS);
    },

    async retryFile(f) {
      await this.sendFile(f);
    },

    async deleteFile(f) {
      if (f.doc && !f.confirmDelete) {
        f.confirmDelete = true;
        return;
      }
      if (f.doc) {
        try {
          await this.api.del(`/v1/collections/${encodeURIComponent(f.fields.collection)}/documents/${f.doc.id}`);
        } catch (e) {
          if (e.status !== 404) {
            f.error = this.errorText(e);
            f.confirmDelete = false;
            return;
          }
        }
      }
      this.upload.files = this.upload.files.filter((x) => x.key !== f.key);
      this.loadCollections();
    },

    clearFinished() {
      this.upload.files = this.upload.files.filter((f) => !(f.state === "stored" && f.doc && f.doc.status === "indexed"));
    },

    fileStatus(f) {
      if (f.state === "ready") return "ready";
      if (f.state === "uploading") return "uploading";
      if (f.state === "rejected") return "rejected";
      return f.doc.status;
    },

    fileStatusLabel(f) {
      const s = this.fileStatus(f);
      if (s === "uploading") return `${this.t("st_uploading")} ${Math.round((100 * f.sent) / (f.total || 1))}%`;
      if (s === "processing") return this.t(`stage_${f.doc.stage || "extracting"}`);
      return this.t(`st_${s}`);
    },

    // 0-100: bytes sent are the first 15%, then the stages, embedding by chunks embedded.
    fileProgress(f) {
      if (f.state === "ready") return 0;
      if (f.state === "uploading") return Math.round((15 * f.sent) / (f.total || 1));
      if (f.state === "rejected") return 100;
      const d = f.doc;
      if (d.status === "indexed" || d.status === "failed") return 100;
      if (d.status === "queued") return 20;
      if (d.stage === "extracting") return 30;
      if (d.stage === "chunking") return 45;
      if (d.stage === "embedding") return 50 + Math.round((45 * d.embedded_count) / Math.max(1, d.chunk_count));
      return 95;
    },

    batchProgress() {
      const files = this.upload.files;
      if (!files.length) return 0;
      return Math.round(files.reduce((sum, f) => sum + this.fileProgress(f), 0) / files.length);
    },

    batchCounts() {
      const c = { total: 0, ready: 0, indexed: 0, failed: 0, active: 0 };
      for (const f of this.upload.files) {
        c.total++;
        const s = this.fileStatus(f);
        if (s === "ready") c.ready++;
        else if (s === "indexed") c.indexed++;
        else if (s === "failed" || s === "rejected") c.failed++;
        else c.active++;
      }
      return c;
    },
  };
}
