// PoUW explorer: a single page driven by the node's own JSON API (docs/api.md). Routes live in the URL
// hash (#/block/<id>, #/tx/<id>, #/address/<a>, #/job/<id>, #/jobs, #/economy, #/network). Every value
// from the API is put into the page as text (never as HTML).
"use strict";

const API = "/api/v1";
const UNIT = 1e8;            // base units per token
const state = { status: null, route: null, renderedHeight: -1, chartBlocks: 120 };

// --- helpers -----------------------------------------------------------------------------------------
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of kids.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel) => document.querySelector(sel);
const short = (x, n = 10) => (x && x.length > 2 * n + 1 ? x.slice(0, n) + "…" + x.slice(-6) : x || "");
const link = (href, text, cls) => h("a", { href, class: cls }, text);
const blockLink = (hash, text) => link("#/block/" + hash, text || short(hash), "mono");
const txLink = (id) => link("#/tx/" + id, short(id), "mono");
const addrLink = (a) => (a ? link("#/address/" + a, short(a, 8), "mono") : h("span", { class: "muted" }, "—"));
const jobLink = (id) => link("#/job/" + id, short(id), "mono");
const tokens = (units) => (units === null || units === undefined ? "—" :
  (units / UNIT).toLocaleString("en-US", { maximumFractionDigits: 8 }) + " tok");
function si(x, unit) {
  if (x === null || x === undefined || !isFinite(x)) return "—";
  const p = ["", "k", "M", "G", "T", "P", "E", "Z"];
  let i = 0;
  while (Math.abs(x) >= 1000 && i < p.length - 1) { x /= 1000; i++; }
  return x.toLocaleString("en-US", { maximumFractionDigits: x < 10 ? 2 : 1 }) + " " + p[i] + (unit || "");
}
function ago(ts) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s ago";
  if (s < 172800) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
  return Math.floor(s / 86400) + " days ago";
}
const agoEl = (ts) => h("span", { class: "ago", "data-ts": ts }, ago(ts));  // kept live by the 1 s timer
const when = (ts) => new Date(ts * 1000).toISOString().replace("T", " ").replace(".000Z", " UTC");

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}
async function api(path) {
  const r = await fetch(API + path, { headers: { Accept: "application/json" } });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) {
    const err = (body && body.error) || {};
    throw new ApiError(r.status, err.code || "http-" + r.status, err.message || r.statusText);
  }
  return body;
}
async function tryApi(path) {
  try { return await api(path); } catch (e) { return null; }
}

function kv(rows) {
  return h("table", { class: "kv" }, rows.filter(Boolean).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))));
}
function table(headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "none");
  return h("table", {}, h("tr", {}, headers.map((x) => h("th", {}, x))), rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))));
}
const panel = (title, ...kids) => h("section", { class: "panel" }, title ? h("h2", {}, title) : null, ...kids);
const card = (k, v, id) => h("div", { class: "card" }, h("div", { class: "k" }, k), h("div", { class: "v", id }, v));

function notFound(what, id, err) {
  return [h("h1", {}, what + " not found"),
    h("div", { class: "banner bad", id: "not-found" }, `No ${what.toLowerCase()} ${id} here`,
      err ? ` (${err.code}: ${err.message})` : "", "."),
    h("p", {}, link("#/", "Back to the chain"))];
}
function show(...kids) {
  const m = $("#main");
  m.replaceChildren(...kids.flat(Infinity).filter((x) => x !== null && x !== undefined && x !== false));
}

// --- status strip (every page, refreshed every 2 s) ----------------------------------------------------
function renderStrip() {
  const s = state.status;
  if (!s) return;
  const sync = s.sync && s.sync.syncing ? ` · syncing ${s.sync.percent}%` : "";
  const storage = s.storage && !s.storage.ok ? " · STORAGE FAULT" : "";
  $("#strip").replaceChildren(
    h("span", {}, s.network + " · height "), h("b", { id: "strip-height" }, s.height),
    h("span", {}, ` · last block ${ago(s.tip_time)} · ${s.peers} peer(s) · mempool ${s.mempool.size}`
      + ` · miner: ${s.mining.state}${sync}${storage}`));
  const since = $("#since");
  if (since) since.textContent = ago(s.tip_time);
  for (const el of document.querySelectorAll(".ago")) el.textContent = ago(Number(el.dataset.ts));
}
async function poll() {
  try {
    state.status = await api("/status");
    renderStrip();
    const r = state.route || "";
    if ((r === "" || r === "/") && state.status.height !== state.renderedHeight) route();
  } catch (e) {
    $("#strip").textContent = "node unreachable: " + e.message;
  }
}

// --- chart ---------------------------------------------------------------------------------------------
function chart(stats) {
  const pts = stats.points;
  const W = 1000, H = 220, L = 60, R = 50, T = 12, B = 26;
  const svg = (tag, attrs) => { const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); return e; };
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", id: "chart" });
  if (pts.length < 2) {
    const t = svg("text", { x: L, y: H / 2 }); t.textContent = "not enough blocks for a chart yet"; root.append(t);
    return root;
  }
  // work rate smoothed over a window of blocks (work / elapsed time), interval per block
  const win = Math.max(1, Math.min(10, Math.floor(pts.length / 10)));
  const rate = pts.map((p, i) => {
    const lo = Math.max(0, i - win + 1);
    let work = 0, time = 0;
    for (let j = lo; j <= i; j++) { work += pts[j].work; time += Math.max(1, pts[j].interval); }
    return work / time;
  });
  const x0 = pts[0].height, x1 = pts[pts.length - 1].height;
  const X = (hh) => L + (W - L - R) * (hh - x0) / Math.max(1, x1 - x0);
  const rmax = Math.max(...rate) * 1.1 || 1, imax = Math.max(...pts.map((p) => p.interval), 1) * 1.1;
  const Yr = (v) => T + (H - T - B) * (1 - v / rmax), Yi = (v) => T + (H - T - B) * (1 - v / imax);
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  for (const f of [0, 0.5, 1]) {
    const y = T + (H - T - B) * (1 - f);
    root.append(svg("line", { class: "axis", x1: L, y1: y, x2: W - R, y2: y }));
    const a = svg("text", { x: 4, y: y + 4 }); a.textContent = si(rmax * f, "MAC/s"); root.append(a);
    const b = svg("text", { x: W - R + 4, y: y + 4 }); b.textContent = Math.round(imax * f) + " s"; root.append(b);
  }
  for (const hh of [x0, Math.round((x0 + x1) / 2), x1]) {
    const t = svg("text", { x: X(hh) - 12, y: H - 8 }); t.textContent = "#" + hh; root.append(t);
  }
  root.append(svg("polyline", { class: "intv", points: pts.map((p) => `${X(p.height)},${Yi(p.interval)}`).join(" ") }));
  root.append(svg("polyline", { class: "rate", points: pts.map((p, i) => `${X(p.height)},${Yr(rate[i])}`).join(" ") }));
  return root;
}

// --- pages ---------------------------------------------------------------------------------------------
async function pageHome() {
  const [s, blocks, stats, jobs] = await Promise.all([api("/status"), api("/blocks?limit=20"),
    api("/blockstats?blocks=" + state.chartBlocks), tryApi("/jobs?status=live&limit=5")]);
  state.status = s; state.renderedHeight = s.height; renderStrip();
  const span = stats.points.length ? stats.points[stats.points.length - 1].timestamp - stats.points[0].timestamp : 0;
  show(
    h("div", { class: "cards" },
      card("Height", s.height, "height"),
      card("Tip", blockLink(s.tip, short(s.tip, 8))),
      card("Since last block", ago(s.tip_time), "since"),
      card("Difficulty (MACs / block)", si(s.difficulty)),
      card("Network work rate", si(stats.network_work_rate, "MAC/s"), "netrate"),
      card("This node's miners", si(s.work_rate, "MAC/s")),
      card("Peers", s.peers),
      card("Mempool", `${s.mempool.size} tx · ${si(s.mempool.bytes, "B")}`)),
    panel(`Work rate and block interval, last ${stats.blocks} blocks (${(span / 3600).toFixed(1)} h)`,
      h("div", { class: "legend" }, h("span", { class: "r" }, "━ work rate (block work / time, moving window)"),
        h("span", { class: "i" }, "━ block interval (s)"),
        h("span", { class: "muted" }, `mean interval ${stats.mean_interval ? stats.mean_interval.toFixed(1) : "—"} s`),
        [120, 500, 2000].map((n) => h("button", { class: n === state.chartBlocks ? "" : "secondary", id: "chart-" + n,
          onclick: () => { state.chartBlocks = n; route(); } }, n + " blocks"))),
      chart(stats)),
    h("div", { class: "grid2" },
      panel("Recent blocks", table(["height", "hash", "age", "txs", "miner", "work"],
        blocks.blocks.map((b) => [blockLink(b.hash, String(b.height)), blockLink(b.hash), agoEl(b.timestamp), b.tx_count,
          addrLink(b.miner), si(b.work)]))),
      panel("Live jobs", jobs ? table(["job", "status", "shape", "fee", "client"], jobs.jobs.map((j) =>
        [jobLink(j.job_id), j.status, `${j.m}×${j.k}×${j.n}`, tokens(j.fee), addrLink(j.client)]),
        "no live jobs") : h("p", { class: "muted" }, "jobs are not available on this node"),
        h("p", {}, link("#/jobs", "all jobs →")))));
}

async function pageBlock(id) {
  let b;
  try { b = await api("/blocks/" + encodeURIComponent(id)); } catch (e) {
    if (e.status === 404 || e.status === 400) return show(notFound("Block", id, e));
    throw e;
  }
  const proof = await api("/blocks/" + b.hash + "/proof");
  const next = b.active ? await tryApi("/blocks/" + (b.height + 1)) : null;
  const verdict = h("div", { class: "verdict", id: "verdict" }, h("span", { class: "muted" }, "checking the proof…"));
  const recheck = async () => {
    verdict.replaceChildren(h("span", { class: "muted" }, "checking the proof…"));
    try {
      const v = await api("/blocks/" + b.hash + "/verify");
      verdict.replaceChildren(v.valid ? h("span", { class: "ok" }, "✔ proof valid") :
        h("span", { class: "bad" }, "✘ proof invalid: " + v.reason),
      h("span", { class: "muted" }, ` — re-checked by this node in ${v.elapsed_ms} ms at ${when(v.checked_at)}. ${v.detail}`));
    } catch (e) { verdict.replaceChildren(h("span", { class: "bad" }, "check failed: " + e.message)); }
  };
  const p = proof.proof;
  show(
    h("h1", {}, `Block ${b.height}`),
    b.active ? null : h("div", { class: "banner bad", id: "inactive" },
      "This block is not on the active chain: it is on a side branch (left the chain in a reorganisation, or lost a race)."),
    panel("Header", kv([
      ["hash", h("span", { class: "mono", id: "block-hash" }, b.hash)],
      ["status", b.active ? h("span", { class: "ok" }, `active, ${b.confirmations} confirmation(s)`) :
        h("span", { class: "bad" }, "not on the active chain")],
      ["previous", blockLink(b.prev, b.prev)],
      ["next", next ? blockLink(next.hash, next.hash) : h("span", { class: "muted" }, "—")],
      ["time", h("span", {}, when(b.timestamp) + " (", agoEl(b.timestamp), ")")],
      ["miner", addrLink(b.miner)],
      ["target", h("span", { class: "mono" }, b.target)],
      ["work / chainwork", `${si(b.work, "MAC")} / ${si(b.chainwork, "MAC")}`],
      ["tx root", h("span", { class: "mono" }, b.tx_root)], ["state root", h("span", { class: "mono" }, b.state_root)],
      ["nonce", b.nonce], ["size", `${b.size} bytes (proof ${b.proof_bytes})`]])),
    panel("Useful-work proof",
      kv([
        ["job", proof.kind === "genesis" ? "genesis (no proof)" : h("span", {},
          h("span", { class: "pill " + proof.kind, id: "job-kind" }, proof.kind === "paid" ? "paid job" : "filler"), " ",
          proof.paid_job ? jobLink(proof.paid_job) : "")],
        ["shape m×k×n", `${proof.job.m}×${proof.job.k}×${proof.job.n} = ${si(proof.job.macs, "MAC")}`],
        ["H_A (rows of A)", h("span", { class: "mono" }, proof.job.h_a)],
        ["H_B (columns of B)", h("span", { class: "mono" }, proof.job.h_b)],
        p && p.tile ? ["winning tile", `(${p.tile.ti}, ${p.tile.tj}) of ${p.tiles}: rows ${p.tile.rows[0]}–${p.tile.rows[1] - 1}, ` +
          `columns ${p.tile.cols[0]}–${p.tile.cols[1] - 1}, k = ${p.tile.k}`] : null,
        p && p.tile ? ["ticket", h("span", { class: "mono" }, p.ticket)] : null,
        p && p.tile ? ["threshold (target × tile work)", h("span", { class: "mono" }, p.threshold.length > 64 ? p.threshold + " (≥ 2^256: every tile wins)" : p.threshold)] : null,
        p && p.tile ? ["ticket / threshold", h("span", {}, h("span", { class: p.ticket_below_threshold ? "ok" : "bad" },
          p.ticket_fraction.toExponential(3)), p.ticket_below_threshold ? " (below: the tile wins)" : " (not below!)")] : null,
        p && p.error ? ["proof", h("span", { class: "bad" }, p.error)] : null]),
      verdict, h("button", { id: "recheck", onclick: recheck }, "Re-check the proof")),
    panel(`Transactions (${b.txs.length})`, table(["txid", "kind", "sender", "to", "amount", "fee"],
      b.txs.map((t) => [txLink(t.txid), kindName(t.kind), addrLink(t.sender), t.recipient ? addrLink(t.recipient) : "",
        t.amount !== undefined ? tokens(t.amount) : "", tokens(t.fee)]), "no transactions (the miner's reward is not a transaction)")));
  recheck();
}

const KINDS = { 0: "transfer", 1: "job submit", 2: "job result", 3: "job dispute", 4: "order place", 5: "order cancel",
  6: "job claim", 7: "job challenge", 8: "job answer", 9: "job cancel" };
const kindName = (k) => KINDS[k] || "kind " + k;

async function pageTx(id) {
  let r;
  try { r = await api("/tx/" + encodeURIComponent(id)); } catch (e) {
    if (e.status === 404 || e.status === 400) return show(notFound("Transaction", id, e));
    throw e;
  }
  const t = r.tx;
  show(h("h1", {}, "Transaction"), panel(null, kv([
    ["txid", h("span", { class: "mono" }, t.txid)],
    ["status", r.status === "confirmed" ? h("span", { class: "ok" }, `confirmed, ${r.confirmations} confirmation(s)`) :
      h("span", { class: "warn" }, "pending in the mempool")],
    r.block ? ["block", blockLink(r.block, `${r.height} (${short(r.block)})`)] : null,
    ["kind", kindName(t.kind)], ["sender", addrLink(t.sender)], ["nonce", t.nonce],
    t.recipient ? ["recipient", addrLink(t.recipient)] : null,
    t.amount !== undefined ? ["amount", tokens(t.amount)] : null,
    ["fee", tokens(t.fee)], ["size", t.size + " bytes"],
    t.kind === 1 ? ["job", jobLink(t.txid)] : null])));
}

async function pageAddress(a, before) {
  let acct;
  try { acct = await api("/accounts/" + encodeURIComponent(a)); } catch (e) {
    if (e.status === 404 || e.status === 400) return show(notFound("Address", a, e));
    throw e;
  }
  const [hist, jobs, econ] = await Promise.all([
    api(`/accounts/${acct.address}/history?limit=50` + (before ? "&before=" + before : "")),
    tryApi(`/accounts/${acct.address}/jobs?limit=20`), tryApi(`/economy/accounts/${acct.address}`)]);
  show(h("h1", {}, "Address " + acct.address),
    h("div", { class: "cards" }, card("Balance", tokens(acct.balance), "balance"), card("Nonce", acct.nonce),
      card("Pending transactions", acct.pending_txs), card("History entries shown", hist.entries.length)),
    panel("History (newest first)", table(["height", "change", "balance after", "nonce", "transactions"],
      hist.entries.map((e) => [blockLink(e.block, String(e.height)),
        h("span", { class: e.delta > 0 ? "ok" : e.delta < 0 ? "bad" : "muted" }, (e.delta > 0 ? "+" : "") + tokens(e.delta)),
        tokens(e.balance_after), e.nonce, h("span", {}, e.txs.map((x) => [txLink(x), " "]))]), "no history on the active chain"),
    hist.next_before ? h("p", { class: "pager" }, link(`#/address/${acct.address}/${hist.next_before}`, "older →")) : null),
    jobs && jobs.jobs.length ? panel("Jobs as client", table(["job", "status", "shape", "fee"],
      jobs.jobs.map((j) => [jobLink(j.job_id), j.status, j.m ? `${j.m}×${j.k}×${j.n}` : "", tokens(j.fee)]))) : null,
    econ ? panel("Economy balances", kv([["free", tokens(econ.free)], ["spend-only", tokens(econ.spend_only)],
      ["vintages", tokens(econ.vintage_total)], ["live orders", (econ.orders || []).length]])) : null);
}

async function pageJob(id) {
  let j;
  try { j = await api("/jobs/" + encodeURIComponent(id)); } catch (e) {
    if (e.status === 404 || e.status === 400) return show(notFound("Job", id, e));
    throw e;
  }
  const [rc, prog] = await Promise.all([tryApi(`/jobs/${j.job_id}/receipt`), tryApi(`/jobs/${j.job_id}/progress`)]);
  const steps = rc ? ["submit", "claim", "result", "challenge", "answer", "dispute", "cancel"].filter((k) => rc[k])
    .map((k) => [k, blockLink(String(rc[k].height), String(rc[k].height)),
      txLink(rc[k].txid), addrLink(rc[k].sender), tokens(rc[k].fee)]) : [];
  show(h("h1", {}, "Job " + j.job_id),
    h("div", { class: "cards" }, card("Status", h("span", { id: "job-status" }, j.status)),
      card("Shape", j.m ? `${j.m}×${j.k}×${j.n}` : "—"), card("Fee", tokens(j.fee)),
      card("Fee per MAC", j.macs ? (j.fee / j.macs).toExponential(2) + " units" : "—")),
    j.status === "pending" ? h("div", { class: "banner warn" }, "The submit is in the mempool, not yet on the chain.") : null,
    panel("Record", kv([
      ["client", addrLink(j.client)], ["miner", addrLink(j.miner)],
      ["submitted at", j.submit_height !== undefined ? blockLink(String(j.submit_height), String(j.submit_height)) : "—"],
      ["deadline (height)", j.deadline], ["claim until", j.claim_until || "—"], ["bond", tokens(j.bond)],
      ["result at", j.result_height || "—"], ["challenge window until", j.challenge_until || "—"],
      ["closed at", j.closed_height || "—"], ["escrow held", tokens(j.escrow)],
      ["H_A / H_B", h("span", { class: "mono" }, `${j.h_a || ""} / ${j.h_b || ""}`)],
      ["H_C", h("span", { class: "mono" }, j.h_c || "—")],
      prog && prog.queue_position ? ["queue position", `${prog.queue_position} of ${prog.queue_length}`] : null,
      prog && prog.estimate_blocks !== undefined && prog.estimate_blocks !== null ?
        ["estimate", `${prog.estimate_blocks} block(s), ~${Math.round(prog.estimate_s)} s`] : null])),
    panel("History", table(["step", "height", "transaction", "sender", "fee"], steps, "no transactions on the chain yet"),
      rc && rc.settled ? h("p", {}, `settled: ${rc.settled.status} at height ${rc.settled.height}`) :
        rc && rc.settles_at ? h("p", {}, `settles at height ${rc.settles_at} unless challenged`) : null));
}

async function pageJobs(status) {
  status = status || "all";
  let r;
  try { r = await api(`/jobs?status=${encodeURIComponent(status)}&limit=200`); } catch (e) {
    if (e.status === 400) return show(notFound("Job list", status, e));
    throw e;
  }
  const tabs = ["all", "open", "live", "claimed", "resulted", "challenged", "released", "refunded", "slashed", "cancelled"]
    .map((s) => [s === status ? h("b", {}, s) : link("#/jobs/" + s, s), " · "]);
  show(h("h1", {}, "Jobs"), h("p", {}, tabs),
    panel(`${r.count} job(s) · ${status}`, table(["job", "status", "shape", "fee", "fee / MAC", "client", "miner", "deadline",
      "submitted", "challenge window until"],
      r.jobs.map((j) => [jobLink(j.job_id), j.status, `${j.m}×${j.k}×${j.n}`, tokens(j.fee),
        (j.fee / j.macs).toExponential(2), addrLink(j.client), addrLink(j.miner), j.deadline, j.submit_height,
        j.challenge_until || "—"]), "no jobs")));
}

async function pageEconomy() {
  const supply = await tryApi("/economy/supply");
  if (!supply) {
    return show(h("h1", {}, "Economy"), h("div", { class: "banner info", id: "no-market" },
      "This chain has no market yet: the node does not serve the economy endpoints."));
  }
  const [issuers, vel] = await Promise.all([tryApi("/economy/issuers"), tryApi("/economy/velocity?limit=12")]);
  const iss = issuers ? issuers.issuers : [];
  const books = await Promise.all(iss.slice(0, 5).map((i) => tryApi(`/economy/market/${i.issuer}/trades?limit=10`)));
  const depth = await Promise.all(iss.slice(0, 5).map((i) => tryApi(`/economy/market/${i.issuer}/book?limit=8`)));
  const levels = (side) => (side && side.levels ? side.levels : []);
  const bookTable = (bk) => (bk ? table(["bid qty", "bid price (bps)", "ask price (bps)", "ask qty"],
    Array.from({ length: Math.max(levels(bk.bids).length, levels(bk.asks).length) }, (_, i) => {
      const b = levels(bk.bids)[i], a = levels(bk.asks)[i];
      return [b ? tokens(b.qty) : "", b ? b.price : "", a ? a.price : "", a ? tokens(a.qty) : ""];
    }), "empty order book") : h("p", { class: "muted" }, "no order book"));
  const conserved = supply.conserved ? h("span", { class: "ok" }, "conserved") : h("span", { class: "bad" }, "NOT conserved");
  show(h("h1", {}, "Economy"),
    panel("Supply", kv(["minted", "burned", "free", "job_escrow", "job_bonds", "spend_only", "vintage", "locked_in_asks", "deposits",
      "reserved_in_grants"].filter((k) => supply[k] !== undefined).map((k) => [k.replace(/_/g, " "), tokens(supply[k])])
      .concat([["invariant", conserved]]))),
    panel("Token velocity per window", vel && vel.windows ? table(["window", "heights", "volume", "trades", "velocity"],
      vel.windows.map((w) => [w.window, `${w.from_height}–${w.to_height}`, tokens(w.volume), w.trades, Number(w.velocity).toFixed(4)]),
      "no windows yet") : h("p", { class: "muted" }, "no velocity data")),
    iss.length ? iss.slice(0, 5).map((i, n) => panel("Issuer " + short(i.issuer, 8), kv([["mode", i.mode], ["fee", i.fee_bps + " bps"],
      ["credits outstanding", tokens(i.credits_outstanding)],
      ["buyback price", depth[n] && depth[n].buyback_price !== undefined ? depth[n].buyback_price + " bps" : "—"]]),
      h("h2", {}, "Order book"), bookTable(depth[n]), h("h2", {}, "Recent trades"),
      books[n] && books[n].trades && books[n].trades.length ? table(["height", "price (bps)", "qty", "taker"],
        books[n].trades.map((t) => [t.height, t.price, tokens(t.qty), t.taker_side])) : h("p", { class: "muted" }, "no trades yet")))
      : h("div", { class: "banner info", id: "no-market" }, "No issuer is registered: the chain has no market yet."));
}

async function pageNetwork() {
  const [s, peers, tips] = await Promise.all([api("/status"), api("/peers"), api("/chaintips")]);
  const m = s.mining;
  show(h("h1", {}, "Network and node health"),
    h("div", { class: "cards" }, card("Sync", s.sync && s.sync.syncing ? `${s.sync.percent}% (${s.sync.height}/${s.sync.target_height})` : "in sync"),
      card("Storage", s.storage && s.storage.ok ? "ok" : "FAULT: " + ((s.storage && s.storage.error) || "")),
      card("Mining", m.state), card("Device", `${m.device || "—"} · ${m.device_state || "—"}`),
      card("Device faults", m.device_faults), card("Useful fraction", (100 * (m.useful_fraction || 0)).toFixed(1) + " %"),
      card("Uptime", Math.round(s.uptime_s) + " s")),
    panel("Remote miners", table(["worker", "device", "work rate", "last seen"], (m.workers || []).map((w) =>
      [w.id, w.device || "—", si(w.work_rate, "MAC/s"), w.last_seen_s + " s ago"]), "no remote workers")),
    panel(`Peers (${peers.peers.length} connected, ${peers.known.length} known, ${peers.banned} banned)`,
      table(["id", "address", "direction", "height", "score", "connected"], peers.peers.map((p) =>
        [h("span", { class: "mono" }, short(p.id || "", 8)), p.addr, p.inbound ? "in" : "out", p.height, p.score, p.connected_s + " s"]),
      "no peers")),
    panel("Chain tips", table(["height", "hash", "branch length", "status"], tips.tips.map((t) =>
      [t.height, blockLink(t.hash), t.branchlen, h("span", { class: t.status === "active" ? "ok" : t.status === "invalid" ? "bad" : "" }, t.status)]))),
    panel("Node", kv([["node id", h("span", { class: "mono" }, s.node_id)], ["network", `${s.network} (chain id ${s.chain_id})`],
      ["genesis", blockLink(s.genesis, s.genesis)], ["mining address", addrLink(m.address)], ["blocks found", m.blocks_found]])));
}

async function pageSearch(q) {
  try {
    const r = await api("/search?q=" + encodeURIComponent(q));
    location.replace("#/" + r.kind + "/" + r.id);
  } catch (e) {
    if (e.status === 404) {
      return show(h("h1", {}, "Nothing found"), h("div", { class: "banner bad", id: "not-found" },
        `Nothing matches “${q}”. Search for a height, a block hash, a transaction id, a job id or an address.`));
    }
    throw e;
  }
}

// --- router --------------------------------------------------------------------------------------------
async function route() {
  const r = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  state.route = r;
  const [, page, a, b] = r.split("/");
  try {
    if (!page) await pageHome();
    else if (page === "block") await pageBlock(a);
    else if (page === "tx") await pageTx(a);
    else if (page === "address") await pageAddress(a, b);
    else if (page === "job") await pageJob(a);
    else if (page === "jobs") await pageJobs(a);
    else if (page === "economy") await pageEconomy();
    else if (page === "network") await pageNetwork();
    else if (page === "search") await pageSearch(r.slice("/search/".length));
    else show(notFound("Page", r));
  } catch (e) {
    show(h("h1", {}, "Error"), h("div", { class: "banner bad" }, e.message));
  }
  document.body.dataset.route = r;
  document.body.dataset.ready = "1";
}

$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const q = $("#q").value.trim();
  if (q) location.hash = "#/search/" + q;
});
window.addEventListener("hashchange", () => { document.body.dataset.ready = "0"; route(); });
route();
poll();
setInterval(poll, 2000);
setInterval(() => { if (state.status) renderStrip(); }, 1000);
