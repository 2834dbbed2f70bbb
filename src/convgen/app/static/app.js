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
  // Form fields for a model's declared options (GET /api/models: name, type, default, bounds, choices, help).
  // Returns {values(typed)}: the fields the user filled in (empty = the model's default), typed for a JSON body
  // (typed = true) or as text for a multipart form.
  function optionFields(container, options) {
    const inputs = [];
    container.replaceChildren(...options.map((o) => {
      const label = document.createElement("label");
      let input;
      if (o.type === "choice") {
        input = document.createElement("select");
        const items = [{name: ""}, ...o.choices.map((c) => ({name: String(c)}))];
        fillSelect(input, items, (x) => x.name || `default (${o.model_default ?? o.default ?? "model's"})`);
        if (o.default !== null && o.model_default === undefined) input.value = String(o.default);
      } else {
        input = document.createElement("input");
        if (o.type === "bool") {
          input.type = "checkbox";
          input.checked = Boolean(o.default);
          label.className = "check";
        } else if (o.type === "int" || o.type === "float") {
          input.type = "number";
          const lo = o.lo ?? o.gt, hi = o.hi ?? o.lt;
          if (lo !== null && lo !== undefined) input.min = lo;
          if (hi !== null && hi !== undefined) input.max = hi;
          input.step = o.type === "int" ? "1" : "any";
        } else {
          input.type = "text";
        }
        if (o.type !== "bool" && o.default !== null) input.value = Array.isArray(o.default) ? o.default.join(" ") : o.default;
        if (o.type !== "bool" && o.default === null) input.placeholder = o.model_default !== undefined ? `model's: ${o.model_default}` : "default";
      }
      input.id = `option-${o.name}`;
      input.dataset.option = o.name;
      label.title = o.help;
      const text = document.createTextNode(o.name.replaceAll("_", " "));
      if (o.type === "bool") label.append(input, text); else label.append(text, input);
      inputs.push([o, input]);
      return label;
    }));
    return {
      values(typed) {
        const out = {};
        for (const [o, input] of inputs) {
          if (o.type === "bool") { out[o.name] = typed ? input.checked : String(input.checked); continue; }
          const raw = input.value.trim();
          if (raw === "") continue;
          if (!typed) out[o.name] = raw;
          else if (o.type === "int" || o.type === "float") out[o.name] = Number(raw);
          else if (o.type.startsWith("list")) out[o.name] = raw.split(/[\s,]+/).map((v) => (o.type === "list[str]" ? v : Number(v)));
          else out[o.name] = raw;
        }
        return out;
      },
    };
  }
  return {api, postJSON, models, imageURL, status, fillSelect, nav, busy, optionFields};
})();
