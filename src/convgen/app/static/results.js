// The results page: GET /api/study/<name>/report (served to this machine only).
"use strict";
(() => {
  const name = decodeURIComponent(location.pathname.split("/")[2]);
  const $ = (id) => document.getElementById(id);
  convgen.nav("");
  const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
  const ci = (c) => `[${fmt(c[0])}, ${fmt(c[1])}]`;
  function table(el, head, rows) {
    const tr = (cells, tag) => {
      const r = document.createElement("tr");
      for (const c of cells) { const x = document.createElement(tag); x.textContent = c; r.append(x); }
      return r;
    };
    el.replaceChildren(tr(head, "th"), ...rows.map((row) => tr(row, "td")));
  }
  async function refresh() {
    try {
      const r = await convgen.api(`/api/study/${name}/report`);
      $("title").textContent = `Study ${r.study} (${r.kind})`;
      $("summary").textContent = `${r.raters} raters, ${r.answers} answers (${r.answers_by_phase.main} main, ` +
        `${r.answers_by_phase.catch} catch, ${r.answers_by_phase.practice} practice), ${r.excluded_raters.length} excluded.`;
      const mos = r.kind === "mos";
      table($("sources"), ["source", mos ? "MOS" : "judged real", "95% CI (Wilson / t)", "95% CI (bootstrap, raters)",
                           "answers", "raters", "median ms", "before exclusions (answers)"],
        Object.entries(r.per_source).map(([s, v]) => [s, fmt(mos ? v.mos : v.judged_real_rate), ci(v.ci95),
          ci(v.bootstrap_ci95), v.n, v.raters, fmt(v.response_time.median_ms, 0),
          `${fmt(v.all_raters.value)} (${v.all_raters.n})`]));
      $("note").textContent = mos ? "Mean opinion score, 1 (bad) to 5 (excellent)." : "0.5 = raters could not tell this source from real images.";
      $("rule").textContent = `Attention rule: ${r.attention_rule}.`;
      table($("raters"), ["rater", "answers", "catch accuracy", mos ? "" : "accuracy", "median ms", "excluded"],
        r.per_rater.map((p) => [p.rater, p.answers, fmt(p.catch_accuracy, 2), mos ? "" : fmt(p.accuracy, 2), fmt(p.median_ms, 0), p.excluded ? "yes" : ""]));
      convgen.status($("status"), "");
    } catch (e) {
      convgen.status($("status"), e.message, true);
    }
  }
  $("refresh").addEventListener("click", refresh);
  refresh();
})();
