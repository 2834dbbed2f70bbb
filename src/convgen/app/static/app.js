// convgen: what every page shares (navigation, the model list, requests, errors). No external scripts.
"use strict";
const convgen = (() => {
  let catalog = null;
  async function models() {
    if (!catalog) catalog = await api("/api/models");
    return catalog;
  }
  async function api(url, options = {}) {
    const r = await fetch(url, options);
    const type = r.headers.get("content-type") || "";
    if (!r.ok) {
      let message = `${r.status} ${r.statusText}`;
      if (type.includes("json")) message = (await r.json()).error || message;
      throw new Error(message);
    }
    if (type.includes("json")) return r.json();
    return r;
  }
  function postJSON(url, body) {
    return api(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  }
  async function imageURL(response) {
    return URL.createObjectURL(await response.blob());
  }
  function status(el, text, isError = false) {
    el.textContent = text;
    el.classList.toggle("error", isError);
  }
  function fillSelect(select, items, label = (x) => x.name) {
    select.replaceChildren(...items.map((m) => {
      const o = document.createElement("option");
      o.value = m.name;
      o.textContent = label(m);
      return o;
    }));
  }
  async function nav(active) {
    const el = document.querySelector("header nav");
    if (!el) return;
    const links = [["/", "Models"], ["/generate", "Generate"], ["/restore", "Restore"]];
    try {
      const c = await models();
      for (const t of c.tools) if (c.models.some((m) => m.tools.includes(t.name))) links.push([`/tool/${t.name}`, t.title]);
    } catch (e) { /* the page reports its own errors */ }
    el.replaceChildren(...links.map(([href, text]) => {
      const a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      if (href === active) a.classList.add("active");
      return a;
    }));
  }
  async function busy(button, statusEl, work) {
    button.disabled = true;
    status(statusEl, "working…");
    const t0 = performance.now();
    try {
      await work();
      status(statusEl, `done in ${((performance.now() - t0) / 1000).toFixed(2)} s`);
    } catch (e) {
      status(statusEl, e.message, true);
    } finally {
      button.disabled = false;
    }
  }
  return {api, postJSON, models, imageURL, status, fillSelect, nav, busy};
})();
