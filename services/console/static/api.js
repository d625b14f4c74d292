// The console's only way to the service: the public HTTP API, with the API key (if any) as a
// Bearer header. The key lives in sessionStorage: gone when the browser tab closes.

const KEY_STORAGE = "saekin.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || null;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function storeKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function authHeaders() {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function errorFrom(status, text, fallback) {
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const err = (body && body.error) || {};
  return new ApiError(status, err.code || `http_${status}`, err.message || fallback || `HTTP ${status}`, err.details);
}

// base: the service's root path ("" or "/prefix"); onUnauthorized(error) runs on every 401.
export function createApi(base, onUnauthorized) {
  async function request(method, path, { json, query } = {}) {
    const url = new URL(base + path, window.location.origin);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
    }
    const headers = { Accept: "application/json", ...authHeaders() };
    if (json !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body: json === undefined ? undefined : JSON.stringify(json),
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "network", String(e && e.message ? e.message : e));
    }
    const text = response.status === 204 ? "" : await response.text();
    if (!response.ok) {
      const error = errorFrom(response.status, text, response.statusText);
      if (response.status === 401) onUnauthorized(error);
      throw error;
    }
    if (!text) return { status: response.status, body: null };
    return { status: response.status, body: JSON.parse(text) };
  }

  // Multipart upload through XMLHttpRequest, the one browser API that reports upload progress.
  function upload(collection, file, fields, onProgress) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      form.append("file", file, file.name);
      for (const [k, v] of Object.entries(fields || {})) {
        if (v !== undefined && v !== null && v !== "") form.append(k, v);
      }
      const xhr = new XMLHttpRequest();
      xhr.open("POST", `${base}/v1/collections/${encodeURIComponent(collection)}/documents`);
      for (const [k, v] of Object.entries({ Accept: "application/json", ...authHeaders() })) {
        xhr.setRequestHeader(k, v);
      }
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) onProgress(e.loaded, e.total);
      };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          resolve({ status: xhr.status, body: JSON.parse(xhr.responseText) });
        } else {
          const error = errorFrom(xhr.status, xhr.responseText, xhr.statusText);
          if (xhr.status === 401) onUnauthorized(error);
          reject(error);
        }
      };
      xhr.onerror = () => reject(new ApiError(0, "network", "the upload could not reach the service"));
      xhr.send(form);
    });
  }

  return {
    get: (path, query) => request("GET", path, { query }),
    post: (path, json) => request("POST", path, { json }),
    patch: (path, json) => request("PATCH", path, { json }),
    del: (path, query) => request("DELETE", path, { query }),
    upload,
  };
}
