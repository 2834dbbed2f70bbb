// The model overview: every served model with links to what it can do.
"use strict";
(async () => {
  convgen.nav("/");
  const box = document.getElementById("models");
  try {
    const c = await convgen.models();
    const tools = Object.fromEntries(c.tools.map((t) => [t.name, t]));
    for (const m of c.models) {
      const card = document.createElement("div");
      card.className = "card";
      const h = document.createElement("h3");
      h.textContent = m.name;
      const tags = document.createElement("div");
      const links = [];
      if (m.generate) links.push(["generate", `/generate?model=${encodeURIComponent(m.name)}`]);
      for (const v of m.verbs) links.push([v, `/restore?model=${encodeURIComponent(m.name)}&verb=${v}`]);
      for (const t of m.tools) links.push([tools[t].title.toLowerCase(), `/tool/${t}?model=${encodeURIComponent(m.name)}`]);
      for (const [text, href] of links) {
        const a = document.createElement("a");
        a.className = "tag";
        a.href = href;
        a.textContent = text;
        tags.append(a);
      }
      const p = document.createElement("p");
      p.className = "small";
      p.textContent = m.summary || m.task;
      card.append(h, tags, p);
      box.append(card);
    }
  } catch (e) {
    convgen.status(document.getElementById("status"), e.message, true);
  }
})();
