// The Generate page: a grid from POST /api/sample, an interpolation from POST /api/interpolate.
"use strict";
(async () => {
  convgen.nav("/generate");
  const $ = (id) => document.getElementById(id);
  const status = $("status");
  let generators = [];
  try {
    const c = await convgen.models();
    // a distilled (few-step) diffusion model comes first: the page opens on it, its slow teacher right after
    const fast = (m) => (m.distilled_from ? 0 : 1);
    generators = c.models.filter((m) => m.generate).sort((a, b) => fast(a) - fast(b));
    $("count").max = c.limits.max_samples;
  } catch (e) {
    convgen.status(status, e.message, true);
    return;
  }
  const label = (m) => m.name + (m.classes.length ? " (conditional)" : "") +
    (m.distilled_from ? ", fast: distilled from " + m.distilled_from : "") + (m.fast ? ", slow: see " + m.fast : "");
  convgen.fillSelect($("model"), generators, label);
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && generators.some((m) => m.name === wanted)) $("model").value = wanted;
  const current = () => generators.find((m) => m.name === $("model").value);
  function showClasses() {
    const m = current();
    const items = (m ? m.classes : []).map((c) => ({name: c}));
    convgen.fillSelect($("class"), [{name: ""}, ...items], (x) => x.name || "every class in turn");
    convgen.fillSelect($("to-class"), [{name: ""}, ...items], (x) => x.name || "(latent walk)");
    $("class-box").classList.toggle("hidden", !items.length);
    $("to-box").classList.toggle("hidden", !items.length);
    sampleOptions = convgen.optionFields($("options"), m ? m.options.sample : []);
    walkOptions = convgen.optionFields($("ioptions"), m ? m.options.interpolate : []);
  }
  let sampleOptions = null, walkOptions = null;
  $("model").addEventListener("change", showClasses);
  showClasses();

  $("generate").addEventListener("click", () => convgen.busy($("generate"), status, async () => {
    const body = {...sampleOptions.values(true), model: $("model").value, n: Number($("count").value),
                  seed: Number($("seed").value)};
    if ($("class").value) body.class = $("class").value;
    const url = await convgen.imageURL(await convgen.postJSON("/api/sample", body));
    $("grid").src = url;
    $("grid").classList.remove("hidden");
    $("download").href = url;
    $("download").classList.remove("hidden");
  }));

  let frames = [];
  $("interpolate").addEventListener("click", () => convgen.busy($("interpolate"), $("istatus"), async () => {
    const body = {...walkOptions.values(true), model: $("model").value, seed: Number($("seed").value),
                  steps: Number($("frames").value)};
    if ($("to-class").value) body.classes = [$("class").value || current().classes[0], $("to-class").value];
    else if ($("class").value) body.class = $("class").value;
    frames = (await convgen.postJSON("/api/interpolate", body)).frames;
    $("slider").max = frames.length - 1;
    $("slider").value = 0;
    $("slider").disabled = false;
    $("frame").src = frames[0];
    $("frame").classList.remove("hidden");
  }));
  $("slider").addEventListener("input", () => { if (frames.length) $("frame").src = frames[Number($("slider").value)]; });
})();
