// The rater's page: POST /api/study/<name>/session, then one POST .../answer per trial (with the response time).
"use strict";
(() => {
  const name = decodeURIComponent(location.pathname.split("/")[2]);
  const $ = (id) => document.getElementById(id);
  const key = `convgen-study-${name}`;
  let session = null, queue = [], current = null, shownAt = 0, answering = false, total = 0;

  function instructions(kind, exposure) {
    const t = exposure ? ` The images show for ${(exposure / 1000).toFixed(1)} s; answer when they are gone if you need to.` : "";
    return kind === "2afc"
      ? `Each screen shows two images. One is a real image, the other was made by a computer. Choose the one you think is real.${t} The first few are practice: you will be told whether you were right.`
      : `Each screen shows one image. Rate its quality from 1 (bad) to 5 (excellent).${t} The first few are practice.`;
  }
  function button(text, label, onClick) {
    const b = document.createElement("button");
    b.textContent = text;
    b.setAttribute("aria-label", label);
    b.addEventListener("click", onClick);
    return b;
  }
  function load(src, alt) {
    return new Promise((resolve, reject) => {
      const img = new Image();
      img.alt = alt;
      img.onload = () => resolve(img);
      img.onerror = () => reject(new Error("an image failed to load"));
      img.src = src;
    });
  }
  async function next() {
    current = queue.shift();
    if (!current) return finish();
    const done = total - queue.length;
    $("progress").textContent = current.practice ? `Practice ${done} of ${total}` : `Trial ${done} of ${total}`;
    $("feedback").textContent = "";
    $("feedback").className = "feedback";
    const images = session.kind === "2afc"
      ? await Promise.all([load(current.left, "left image"), load(current.right, "right image")])
      : [await load(current.image, "image to rate")];
    const fix = document.createElement("div");
    fix.className = "fixation";
    fix.textContent = "+";
    $("images").replaceChildren(fix);
    $("answers").replaceChildren();
    await new Promise((r) => setTimeout(r, 400));
    $("images").replaceChildren(...images);
    const answers = session.kind === "2afc"
      ? [button("Left is real", "left image is real", () => answer("left")),
         button("Right is real", "right image is real", () => answer("right"))]
      : [1, 2, 3, 4, 5].map((s) => button(`${s}${s === 1 ? " bad" : s === 5 ? " excellent" : ""}`, `score ${s}`, () => answer(s)));
    $("answers").replaceChildren(...answers);
    shownAt = performance.now();
    answering = true;
    if (session.exposure_ms > 0) {
      const shown = current;
      setTimeout(() => {
        if (current !== shown) return;
        $("images").replaceChildren(...images.map(() => { const d = document.createElement("div"); d.className = "blank"; return d; }));
      }, session.exposure_ms);
    }
  }
  async function answer(choice) {
    if (!answering) return;
    answering = false;
    const ms = Math.round(performance.now() - shownAt);
    for (const b of $("answers").querySelectorAll("button")) b.disabled = true;
    try {
      const r = await convgen.postJSON(`/api/study/${name}/answer`, {token: session.token, trial: current.id, choice, ms});
      if ("correct" in r) {
        $("feedback").textContent = r.correct ? "Correct" : "Not quite: the other one was real";
        $("feedback").className = `feedback ${r.correct ? "good" : "bad"}`;
        await new Promise((res) => setTimeout(res, 900));
      }
    } catch (e) {
      if (!e.message.includes("answered already")) {
        $("feedback").textContent = `${e.message} — try again`;
        $("feedback").className = "feedback bad";
        queue.unshift(current);
      }
    }
    next();
  }
  function finish() {
    $("trial").classList.add("hidden");
    $("intro").classList.add("hidden");
    $("done").classList.remove("hidden");
    $("done-text").textContent = `All ${total} answers are saved. You can close this page.`;
    localStorage.removeItem(key);
  }
  document.addEventListener("keydown", (ev) => {
    if (!answering || !session) return;
    if (session.kind === "2afc" && ev.key === "ArrowLeft") answer("left");
    else if (session.kind === "2afc" && ev.key === "ArrowRight") answer("right");
    else if (session.kind === "mos" && /^[1-5]$/.test(ev.key)) answer(Number(ev.key));
  });
  async function begin() {  // the first trial appears under the instructions: no extra click before it
    try {
      const saved = localStorage.getItem(key);
      session = saved ? await convgen.postJSON(`/api/study/${name}/session`, {token: saved}).catch(() => null) : null;
      if (!session) session = await convgen.postJSON(`/api/study/${name}/session`, {});
      localStorage.setItem(key, session.token);
      total = session.trials.length;
      queue = session.trials.filter((t) => !session.answered.includes(t.id));
      $("trial").classList.remove("hidden");
      next();
    } catch (e) {
      convgen.status($("status"), e.message, true);
    }
  }
  convgen.api(`/api/study/${name}`).then((info) => {
    const p = document.createElement("p");
    p.textContent = instructions(info.kind, info.exposure_ms);
    $("instructions").replaceChildren(p);
    begin();
  }).catch((e) => convgen.status($("status"), e.message, true));
})();
