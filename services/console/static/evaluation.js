// Evaluation: a `saekin eval --output-json` file read in the browser (nothing is sent anywhere):
// the runs table and, per run, each question's result: which failed and what came first instead.

const METRIC_ORDER = ["recall", "precision", "f1", "mrr", "map", "ndcg"];

function metricKey(name) {
  const [metric, k] = name.split("@");
  const i = METRIC_ORDER.indexOf(metric);
  return [i < 0 ? METRIC_ORDER.length : i, Number(k) || 0, name];
}

function compareKeys(a, b) {
  for (let i = 0; i < a.length; i++) {
    if (a[i] < b[i]) return -1;
    if (a[i] > b[i]) return 1;
  }
  return 0;
}

export function evaluationScreen() {
  return {
    evaluation: {
      data: null,
      fileName: "",
      error: "",
      run: 0,
      filter: "missed",
      allMetrics: false,
      applyTo: "",
      applied: "",
      applyError: "",
    },

    async loadEvalFile(event) {
      const file = event.target.files && event.target.files[0];
      event.target.value = "";
      if (file) await this.readEvalFile(file);
    },

    async onEvalDrop(event) {
      const file = event.dataTransfer.files && event.dataTransfer.files[0];
      if (file) await this.readEvalFile(file);
    },

    async readEvalFile(file) {
      const ev = this.evaluation;
      ev.error = "";
      ev.applied = "";
      try {
        const data = JSON.parse(await file.text());
        if (!data || !Array.isArray(data.runs) || !data.runs.length || !data.runs[0].metrics) {
          throw new Error(this.t("evalNotARun"));
        }
        ev.data = data;
        ev.fileName = file.name;
        ev.run = 0;
      } catch (e) {
        ev.data = null;
        ev.error = `${file.name}: ${e.message}`;
      }
    },

    // The metric columns: recall at every k, MRR and NDCG at the largest k (as `saekin eval` prints),
    // or all of them.
    metricColumns() {
      const data = this.evaluation.data;
      if (!data) return [];
      const names = new Set();
      for (const run of data.runs) for (const name of Object.keys(run.metrics || {})) names.add(name);
      const sorted = [...names].sort((a, b) => compareKeys(metricKey(a), metricKey(b)));
      if (this.evaluation.allMetrics) return sorted;
      const ks = sorted.map((n) => Number(n.split("@")[1]) || 0);
      const top = Math.max(...ks);
      return sorted.filter((n) => n.startsWith("recall@") || n === `mrr@${top}` || n === `ndcg@${top}`);
    },

    bestOf(column) {
      const values = this.evaluation.data.runs.map((r) => (r.metrics || {})[column] ?? -Infinity);
      return Math.max(...values);
    },

    selectedRun() {
      const data = this.evaluation.data;
      return data ? data.runs[this.evaluation.run] : null;
    },

    perQuery() {
      const run = this.selectedRun();
      if (!run) return [];
      const rows = run.per_query || [];
      const f = this.evaluation.filter;
      if (f === "missed") return rows.filter((q) => q.first_relevant_rank !== 1);
      if (f === "notfound") return rows.filter((q) => q.first_relevant_rank === null || q.first_relevant_rank === undefined);
      return rows;
    },

    queryCounts() {
      const rows = (this.selectedRun() || {}).per_query || [];
      const notFound = rows.filter((q) => q.first_relevant_rank === null || q.first_relevant_rank === undefined).length;
      const first = rows.filter((q) => q.first_relevant_rank === 1).length;
      return { all: rows.length, first, missed: rows.length - first, notFound };
    },

    isRelevant(q, doc) {
      return (q.relevant || []).includes(doc);
    },

    describeSettings(settings) {
      if (!settings) return "";
      const parts = [settings.mode];
      if (settings.fusion) parts.push(this.describeFusion(settings.fusion));
      if (settings.rerank) parts.push(`rerank ${this.describeRerank(settings.rerank)}`);
      return parts.join(" · ");
    },

    // PATCH the chosen run's settings onto a collection: exactly what the README says to do by hand.
    async applyRunSettings() {
      const ev = this.evaluation;
      const run = this.selectedRun();
      ev.applied = "";
      ev.applyError = "";
      if (!run || !ev.applyTo) return;
      try {
        await this.api.patch(`/v1/collections/${encodeURIComponent(ev.applyTo)}`, { search_defaults: run.settings });
        ev.applied = ev.applyTo;
        this.loadCollections();
      } catch (e) {
        ev.applyError = this.errorText(e);
      }
    },
  };
}
