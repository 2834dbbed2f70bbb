// The Restore page: upload, optional brush mask (inpainting), POST /api/restore/<verb>, before/after.
"use strict";
(async () => {
  convgen.nav("/restore");
  const $ = (id) => document.getElementById(id);
  const status = $("status");
  let restorers = [];
  try {
    restorers = (await convgen.models()).models.filter((m) => m.verbs.length);
  } catch (e) {
    convgen.status(status, e.message, true);
    return;
  }
  convgen.fillSelect($("model"), restorers, (m) => `${m.name} — ${m.verbs.join(", ")}`);
  const params = new URLSearchParams(location.search);
  if (params.get("model") && restorers.some((m) => m.name === params.get("model"))) $("model").value = params.get("model");
  const model = () => restorers.find((m) => m.name === $("model").value);
  function showVerbs() {
    convgen.fillSelect($("verb"), model().verbs.map((v) => ({name: v})));
    if (params.get("verb") && model().verbs.includes(params.get("verb"))) $("verb").value = params.get("verb");
    showOptions();
  }
  let verbOptions = null;
  function showOptions() {
    const verb = $("verb").value;
    const inpaint = verb === "inpaint";
    verbOptions = convgen.optionFields($("options"), model().options.restore[verb] || []);
    $("brush-box").classList.toggle("hidden", !inpaint);
    $("clear").classList.toggle("hidden", !inpaint);
    $("mask").classList.toggle("hidden", !inpaint);
    $("hint").textContent = inpaint ? "Paint over the region to fill (red); the mask has the photo's own size." : "";
  }
  $("model").addEventListener("change", showVerbs);
  $("verb").addEventListener("change", showOptions);
  showVerbs();

  // the photo and its mask: the mask is kept at the photo's own resolution, 1 = missing, never antialiased
  const before = $("before"), overlay = $("mask");
  let file = null, width = 0, height = 0, mask = null;
  function drawMask() {
    const ctx = overlay.getContext("2d");
    const img = ctx.createImageData(width, height);
    for (let i = 0; i < mask.length; i++) if (mask[i]) { img.data[4 * i] = 230; img.data[4 * i + 3] = 150; }
    ctx.putImageData(img, 0, 0);
  }
  $("file").addEventListener("change", async () => {
    file = $("file").files[0];
    if (!file) return;
    try {
      const bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});
      width = bitmap.width; height = bitmap.height;
      for (const c of [before, overlay]) { c.width = width; c.height = height; }
      before.getContext("2d").drawImage(bitmap, 0, 0);
      mask = new Uint8Array(width * height);
      drawMask();
      $("size").textContent = `(${width} × ${height})`;
      convgen.status(status, "");
    } catch (e) {
      convgen.status(status, "the browser cannot show this file; the server will still check it", true);
    }
  });
  function dab(x, y, rad) {
    for (let j = Math.max(0, Math.floor(y - rad)); j <= Math.min(height - 1, Math.ceil(y + rad)); j++)
      for (let i = Math.max(0, Math.floor(x - rad)); i <= Math.min(width - 1, Math.ceil(x + rad)); i++)
        if ((i + 0.5 - x) ** 2 + (j + 0.5 - y) ** 2 <= rad * rad) mask[j * width + i] = 1;
  }
  let last = null;
  function paint(ev) {
    if (!mask) return;
    const r = overlay.getBoundingClientRect();
    const x = (ev.clientX - r.left) * width / r.width, y = (ev.clientY - r.top) * height / r.height;
    const rad = Math.max(0.5, Number($("brush").value) * width / r.width / 2);
    const from = last || [x, y];
    const steps = Math.max(1, Math.ceil(Math.hypot(x - from[0], y - from[1]) / Math.max(rad / 2, 0.5)));
    for (let s = 1; s <= steps; s++) dab(from[0] + (x - from[0]) * s / steps, from[1] + (y - from[1]) * s / steps, rad);
    last = [x, y];
    drawMask();
  }
  let drawing = false;
  overlay.addEventListener("pointerdown", (ev) => { drawing = true; last = null; overlay.setPointerCapture(ev.pointerId); paint(ev); });
  overlay.addEventListener("pointermove", (ev) => { if (drawing) paint(ev); });
  overlay.addEventListener("pointerup", () => { drawing = false; last = null; });
  $("clear").addEventListener("click", () => { if (mask) { mask.fill(0); drawMask(); } });

  function maskPNG() {
    const c = document.createElement("canvas");
    c.width = width; c.height = height;
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(width, height);
    for (let i = 0; i < mask.length; i++) {
      const v = mask[i] ? 255 : 0;
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return new Promise((resolve) => c.toBlob(resolve, "image/png"));
  }

  $("run").addEventListener("click", () => convgen.busy($("run"), status, async () => {
    if (!file) throw new Error("choose a photo first");
    const verb = $("verb").value;
    const form = new FormData();
    form.append("model", $("model").value);
    form.append("image", file, file.name);
    if (verb === "inpaint") {
      if (!mask.some((v) => v)) throw new Error("paint the region to fill first");
      form.append("mask", await maskPNG(), "mask.png");
    }
    for (const [key, value] of Object.entries(verbOptions.values(false))) form.append(key, value);
    const url = await convgen.imageURL(await convgen.api(`/api/restore/${verb}`, {method: "POST", body: form}));
    $("after").src = url;
    $("after").classList.remove("hidden");
    $("download").href = url;
    $("download").classList.remove("hidden");
  }));
})();
