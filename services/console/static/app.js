// The console: one Alpine.js component made of the screens' parts, routed by the URL's #fragment.

import Alpine from "./vendor/alpinejs/alpine.esm.min.js";
import { createApi, storedKey, storeKey } from "./api.js";
import { collectionsScreen } from "./collections.js";
import { documentsScreen } from "./documents.js";
import { evaluationScreen } from "./evaluation.js";
import { MESSAGES } from "./i18n.js";
import { searchScreen } from "./search.js";
import { uploadScreen } from "./upload.js";
import { describeFusion, describeRerank, fmtBytes, fmtDate, fmtScore } from "./util.js";

const LANG_STORAGE = "saekin.lang";
const SCREENS = ["collections", "upload", "documents", "document", "search", "evaluation"];

// Merge the screens' parts, keeping their property descriptors.
function compose(...parts) {
  const out = {};
  for (const part of parts) Object.defineProperties(out, Object.getOwnPropertyDescriptors(part));
  return out;
}

function consoleApp() {
  const root = document.body.dataset.root || "";
  return compose(
    {
      lang: localStorage.getItem(LANG_STORAGE) === "en" ? "en" : "ko",
      route: { name: "collections", args: [] },
      current: "",
      auth: { needed: false, input: "", error: "", checking: false, hasKey: !!storedKey() },
      ready: { state: "unknown", detail: "" },
      api: null,

      init() {
        this.api = createApi(root, (error) => this.onUnauthorized(error));
        document.documentElement.lang = this.lang;
        window.addEventListener("hashchange", () => this.parseRoute());
        this.parseRoute();
        this.checkReady();
      },

      // --- language -----------------------------------------------------------------------------
      t(key, vars) {
        let text = MESSAGES[this.lang][key] ?? MESSAGES.ko[key] ?? key;
        for (const [k, v] of Object.entries(vars || {})) text = text.replaceAll(`{${k}}`, v);
        return text;
      },

      setLang(lang) {
        this.lang = lang;
        localStorage.setItem(LANG_STORAGE, lang);
        document.documentElement.lang = lang;
      },

      // --- API key ------------------------------------------------------------------------------
      onUnauthorized(error) {
        this.auth.needed = true;
        this.auth.error = storedKey() ? this.t("keyRejected") : "";
        if (storedKey()) storeKey("");
        this.auth.hasKey = false;
        this.auth.serverMessage = error.message;
      },

      async submitKey() {
        const key = this.auth.input.trim();
        if (!key) return;
        storeKey(key);
        this.auth.checking = true;
        this.auth.error = "";
        try {
          await this.api.get("/v1/collections");
          this.auth.needed = false;
          this.auth.hasKey = true;
          this.auth.input = "";
          this.enterRoute();
        } catch (e) {
          if (e.status !== 401) this.auth.error = this.errorText(e);
        } finally {
          this.auth.checking = false;
        }
      },

      // The next call (collections, reloaded now) meets the 401 and brings the prompt back.
      forgetKey() {
        storeKey("");
        this.auth.hasKey = false;
        this.loadCollections();
      },

      errorText(e) {
        if (!e) return "";
        if (e.status === 0) return this.t("networkError");
        return e.status ? `${e.status} ${e.code}: ${e.message}` : String(e.message || e);
      },

      // --- readiness (/readyz: the model loads in the background after start) --------------------
      async checkReady() {
        try {
          const response = await fetch(`${root}/readyz`, { cache: "no-store" });
          const body = await response.json();
          this.ready.state = body.status === "ready" ? "ready" : "loading";
          this.ready.detail = Object.entries(body.checks || {})
            .map(([k, v]) => `${k}: ${v}` + (body.details && body.details[k] ? ` (${body.details[k]})` : ""))
            .join("\n");
        } catch {
          this.ready.state = "down";
        }
        if (this.ready.state !== "ready") setTimeout(() => this.checkReady(), 3000);
      },

      // --- routing: #/collections, #/upload, #/documents/<c>, #/document/<c>/<id>, #/search/<c>,
      // #/evaluation ----------------------------------------------------------------------------------
      parseRoute() {
        const parts = window.location.hash
          .replace(/^#\/?/, "")
          .split("/")
          .filter(Boolean)
          .map(decodeURIComponent);
        const name = SCREENS.includes(parts[0]) ? parts[0] : "collections";
        this.route = { name, args: parts.slice(1) };
        this.enterRoute();
      },

      go(name, ...args) {
        window.location.hash = `#/${[name, ...args].map(encodeURIComponent).join("/")}`;
      },

      async enterRoute() {
        const { name, args } = this.route;
        if (!this.cols.loaded || name === "collections") await this.loadCollections();
        if (name === "documents") {
          if (args[0]) this.current = args[0];
          await this.firstDocsPage();
        } else if (name === "document") {
          await this.loadDoc(args[0], args[1]);
        } else if (name === "search" && args[0]) {
          this.current = args[0];
        } else if (name === "upload" && !this.upload.collection) {
          this.upload.collection = this.current || "docs";
        }
      },

      onCollectionChange() {
        if (this.route.name === "documents") this.go("documents", this.current);
        else if (this.route.name === "search") this.go("search", this.current);
      },

      // --- formatting, for the templates ------------------------------------------------------------
      fmtBytes,
      fmtScore,
      describeFusion,
      describeRerank,
      fmtDate(iso) {
        return fmtDate(iso, this.lang);
      },
    },
    collectionsScreen(),
    uploadScreen(),
    documentsScreen(),
    searchScreen(),
    evaluationScreen(),
  );
}

Alpine.data("consoleApp", consoleApp);
window.Alpine = Alpine;
Alpine.start();
