// A family's image tool page (/tool/<name>): the form comes from the tool's description in GET /api/models.
"use strict";
(async () => {
  const name = location.pathname.split("/").pop();
  convgen.nav(`/tool/${name}`);
  const $ = (id) => document.getElementById(id);
  const status = $("status");
  let tool, models;
  try {
    const c = await convgen.models();
    tool = c.tools.find((t) => t.name === name);
    models = c.models.filter((m) => m.tools.includes(name));
  } catch (e) {
    convgen.status(status, e.message, true);
    return;
  }
  document.title = `${tool.title} — convgen`;
  $("title").textContent = tool.title;
  $("blurb").textContent = tool.blurb;
  convgen.fillSelect($("model"), models);
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && models.some((m) => m.name === wanted)) $("model").value = wanted;
  let fields = null;
  const showFields = () => {
    const m = models.find((x) => x.name === $("model").value);
    fields = convgen.optionFields($("fields"), m ? m.options[name] || [] : []);
  };
  $("model").addEventListener("change", showFields);
  showFields();
  let file = null;
  $("file").addEventListener("change", () => {
    file = $("file").files[0];
    if (!file) return;
    $("before").src = URL.createObjectURL(file);
    $("before").classList.remove("hidden");
  });
  $("run").addEventListener("click", () => convgen.busy($("run"), status, async () => {
    if (!file) throw new Error("choose a photo first");
    const form = new FormData();
    form.append("model", $("model").value);
    form.append("image", file, file.name);
    for (const [key, value] of Object.entries(fields.values(false))) form.append(key, value);
    const r = await convgen.api(`/api/tool/${name}`, {method: "POST", body: form});
    const info = [];
    r.headers.forEach((v, k) => { if (k.startsWith("x-convgen-")) info.push(`${k.slice(10)}: ${v}`); });
    $("info").textContent = info.join(" · ");
    const url = await convgen.imageURL(r);
    $("after").src = url;
    $("after").classList.remove("hidden");
    $("download").href = url;
    $("download").classList.remove("hidden");
  }));
})();
