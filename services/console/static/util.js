// Small pure helpers shared by the screens.

export const COLLECTION_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

// A passage split into plain and highlighted pieces. The API's spans count Unicode code points
// (Python string offsets), so the text is indexed by code point, not by UTF-16 unit.
export function segments(text, spans) {
  const chars = Array.from(text || "");
  const sorted = [...(spans || [])].sort((a, b) => a[0] - b[0]);
  const out = [];
  let pos = 0;
  for (const [s0, e] of sorted) {
    const s = Math.max(s0, pos);
    if (e <= s) continue;
    if (s > pos) out.push({ t: chars.slice(pos, s).join(""), hl: false });
    out.push({ t: chars.slice(s, e).join(""), hl: true });
    pos = e;
  }
  if (pos < chars.length) out.push({ t: chars.slice(pos).join(""), hl: false });
  return out;
}

export function fmtBytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function fmtDate(iso, lang) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(lang === "ko" ? "ko-KR" : "en-GB");
}

export function fmtScore(x, digits = 4) {
  return x === null || x === undefined ? "—" : Number(x).toFixed(digits);
}

// A typed value from a filter box: true/false, numbers, "quoted" text, else text as typed.
export function parseValue(raw) {
  const s = String(raw).trim();
  if (s === "true") return true;
  if (s === "false") return false;
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
  if (s.length >= 2 && s.startsWith('"') && s.endsWith('"')) return s.slice(1, -1);
  return s;
}

// --- fusion and rerank settings: a form object <-> the API's values ----------------------------

export function blankFusion() {
  return { method: "", alpha: 0.05, k: 60, dense: 1, sparse: 1 };
}

export function fusionValue(form) {
  switch (form.method) {
    case "rrf":
      return { method: "rrf", k: Number(form.k), weights: { dense: Number(form.dense), sparse: Number(form.sparse) } };
    case "dbsf":
      return { method: "dbsf", weights: { dense: Number(form.dense), sparse: Number(form.sparse) } };
    case "convex":
      return { method: "convex", alpha: Number(form.alpha) };
    default:
      return null;
  }
}

export function fusionForm(value) {
  const form = blankFusion();
  if (!value) return form;
  if (typeof value === "string") return { ...form, method: value };
  form.method = value.method;
  if (value.alpha !== undefined) form.alpha = value.alpha;
  if (value.k !== undefined) form.k = value.k;
  if (value.weights) {
    form.dense = value.weights.dense;
    form.sparse = value.weights.sparse;
  }
  return form;
}

export function blankRerank() {
  return { choice: "", depth: 50 };
}

export function rerankValue(form) {
  if (form.choice === "on") return { enabled: true, depth: Number(form.depth) };
  if (form.choice === "off") return false;
  return null;
}

export function rerankForm(value) {
  if (value === null || value === undefined) return blankRerank();
  if (value === false) return { choice: "off", depth: 50 };
  if (value === true) return { choice: "on", depth: 50 };
  return { choice: value.enabled === false ? "off" : "on", depth: value.depth || 50 };
}

// One line for a fusion or rerank value, e.g. "convex α=0.05", "rrf k=60 (1, 1)".
export function describeFusion(value) {
  if (!value) return "";
  if (typeof value === "string") return value;
  if (value.method === "convex") return `convex α=${value.alpha}`;
  const w = value.weights ? ` (dense ${value.weights.dense}, sparse ${value.weights.sparse})` : "";
  if (value.method === "rrf") return `rrf k=${value.k ?? 60}${w}`;
  return `${value.method}${w}`;
}

export function describeRerank(value) {
  if (value === null || value === undefined) return "";
  if (value === false) return "off";
  if (value === true) return "on";
  return value.enabled === false ? "off" : `on (depth ${value.depth})`;
}
