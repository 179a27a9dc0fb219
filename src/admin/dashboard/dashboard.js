// The hypache dashboard: frontends and their backends, dead and ejected marks, the last minute's figures,
// refreshed every 2 s from the admin API of the listener that served this page. Written by hand, no
// dependencies. The token typed in the page lives in this script's memory only: no cookie, no storage.
"use strict";

(function () {
  const REFRESH_MS = 2000;
  const state = {
    token: "",
    filter: "",
    frontends: [],
    stats: new Map(),
    error: "",
    updated: null,
    busy: false,
  };

  const byId = (id) => document.getElementById(id);

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  async function api(method, path) {
    const headers = {};
    if (state.token) headers.Authorization = "Bearer " + state.token;
    const resp = await fetch(path, { method, headers, cache: "no-store", credentials: "omit" });
    let body = null;
    try {
      body = await resp.json();
    } catch (e) {
      body = null;
    }
    if (!resp.ok) {
      const why = body && body.error ? body.error : resp.status + " " + resp.statusText;
      throw new Error(resp.status === 401 ? "enter the admin token: " + why : why);
    }
    return body;
  }

  // Every page of the SCAN, up to 100 pages of 1,000.
  async function loadFrontends() {
    const all = [];
    let cursor = "0";
    for (let pages = 0; pages < 100; pages++) {
      const page = await api("GET", "/api/v1/frontends?count=1000&cursor=" + encodeURIComponent(cursor));
      all.push(...page.frontends);
      cursor = page.cursor;
      if (cursor === "0") break;
    }
    all.sort((a, b) => (a.frontend < b.frontend ? -1 : a.frontend > b.frontend ? 1 : 0));
    return all;
  }

  async function refresh() {
    try {
      const [frontends, stats, ready] = await Promise.all([
        loadFrontends(),
        api("GET", "/api/v1/stats"),
        fetch("/ready", { cache: "no-store" }).then((r) => r.json()),
      ]);
      state.frontends = frontends;
      state.stats = new Map(stats.frontends.map((f) => [f.frontend, f]));
      state.source = ready.source || "";
      state.error = "";
      state.updated = new Date();
    } catch (e) {
      state.error = e.message;
    }
    render();
  }

  function loop() {
    refresh().finally(() => window.setTimeout(loop, REFRESH_MS));
  }

  function rate(figures) {
    return figures ? figures.rate.toFixed(1) : "";
  }

  function ms(value) {
    if (value === null || value === undefined) return "";
    if (value < 1) return value.toFixed(2) + " ms";
    if (value < 100) return value.toFixed(1) + " ms";
    return Math.round(value) + " ms";
  }

  function figureCells(row, figures) {
    const r = figures ? figures.requests : null;
    row.append(
      el("td", "num", rate(figures)),
      el("td", "num", r ? r["2xx"] : ""),
      el("td", "num", r ? r["3xx"] : ""),
      el("td", "num", r ? r["4xx"] : ""),
      el("td", "num" + (r && r["5xx"] > 0 ? " bad" : ""), r ? r["5xx"] : ""),
      el("td", "num", figures ? ms(figures.p50_ms) : ""),
      el("td", "num", figures ? ms(figures.p99_ms) : "")
    );
  }

  function backendState(backend) {
    if (backend.dead) {
      const left = backend.dead_ttl_ms === null ? "" : " " + Math.ceil(backend.dead_ttl_ms / 1000) + "s";
      return ["dead", "dead" + left];
    }
    if (backend.ejected) return ["ejected", "ejected"];
    return ["live", "live"];
  }

  async function toggle(button, frontend, backend) {
    button.disabled = true;
    const path =
      "/api/v1/frontends/" + encodeURIComponent(frontend) + "/backends/" + backend.index + "/dead";
    try {
      await api(backend.dead ? "DELETE" : "POST", path);
      state.error = "";
    } catch (e) {
      state.error = e.message;
      render();
      return;
    }
    await refresh();
  }

  function render() {
    const rows = byId("rows");
    const filter = state.filter;
    const shown = state.frontends.filter((f) => !filter || f.frontend.toLowerCase().includes(filter));
    const fragment = document.createDocumentFragment();
    for (const frontend of shown) {
      const stats = state.stats.get(frontend.frontend);
      const head = el("tr", "frontend");
      head.dataset.frontend = frontend.frontend;
      const name = el("td", "name", frontend.frontend);
      if (frontend.identifier) name.append(el("span", "identifier", frontend.identifier));
      head.append(name, el("td", "", frontend.backends.length + " backend" + (frontend.backends.length === 1 ? "" : "s")));
      figureCells(head, stats);
      head.append(el("td"));
      fragment.append(head);
      const perBackend = new Map(((stats && stats.backends) || []).map((b) => [b.url, b]));
      for (const backend of frontend.backends) {
        const [kind, label] = backendState(backend);
        const row = el("tr", "backend " + kind);
        row.dataset.frontend = frontend.frontend;
        row.dataset.index = String(backend.index);
        row.dataset.state = kind;
        row.append(el("td", "name", backend.url), el("td"));
        row.lastChild.append(el("span", "state " + kind, label));
        figureCells(row, perBackend.get(backend.url));
        const cell = el("td");
        const button = el("button", "toggle", backend.dead ? "Revive" : "Mark dead");
        button.type = "button";
        button.addEventListener("click", () => toggle(button, frontend.frontend, backend));
        cell.append(button);
        row.append(cell);
        fragment.append(row);
      }
    }
    rows.replaceChildren(fragment);
    byId("empty").hidden = shown.length > 0;
    byId("source").textContent = state.source ? "routes from " + state.source : "";
    const status = byId("status");
    if (state.error) {
      status.textContent = state.error;
      status.className = "error";
    } else {
      const time = state.updated ? state.updated.toLocaleTimeString() : "";
      status.textContent = state.frontends.length + " frontends" + (time ? ", updated " + time : "");
      status.className = "";
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("filter").addEventListener("input", (e) => {
      state.filter = e.target.value.trim().toLowerCase();
      render();
    });
    byId("token").addEventListener("input", (e) => {
      state.token = e.target.value.trim();
    });
    byId("token").addEventListener("change", () => refresh());
    loop();
  });
})();
