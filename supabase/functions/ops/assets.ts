// The console's page, script and style, as string modules so `supabase functions deploy` bundles them
// with the function (a deployed function has no files of its own to read). No inline script or style:
// the page is served with a Content-Security-Policy that allows only these.

export const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Reserve Connect ops console</title>
<link rel="stylesheet" href="app.css">
<script src="app.js" defer></script>
</head>
<body>
<header>
  <h1>Reserve Connect ops</h1>
  <nav id="tabs" hidden>
    <button data-view="overview" class="active">Overview</button>
    <button data-view="alerts">Alerts</button>
    <button data-view="incidents">Incidents</button>
    <button data-view="payments">Payments</button>
    <button data-view="webhooks">Webhooks</button>
    <button data-view="repairs">Repairs</button>
  </nav>
  <span id="who"></span>
  <button id="sign-out" hidden>Sign out</button>
</header>
<div id="flash" role="status" aria-live="polite"></div>
<main>
  <section id="sign-in">
    <h2>Sign in</h2>
    <p>Paste your operator token (<code>npm run -s token -- --operator --email you@company</code> locally).
       It is kept in this tab only (sessionStorage) and sent as a bearer token; never in a URL.</p>
    <form id="sign-in-form">
      <textarea name="token" rows="4" cols="80" required autocomplete="off" spellcheck="false"></textarea>
      <button type="submit">Sign in</button>
    </form>
  </section>
  <section id="view-overview" class="view" hidden>
    <h2>Overview <small id="generated"></small></h2>
    <div class="grid">
      <div><h3>Ledger check</h3><table id="ledger"></table></div>
      <div><h3>Overbooking</h3><table id="overbooking"></table></div>
      <div><h3>Notification outbox</h3><table id="outbox"></table></div>
    </div>
    <h3>Payments success rate per hour (last 24 h)</h3><div id="success-chart" class="chart"></div>
    <h3>Webhook lag per hour (seconds, average and max)</h3><div id="lag-chart" class="chart"></div>
    <h3>Health checks</h3><table id="health"></table>
  </section>
  <section id="view-alerts" class="view" hidden>
    <h2>Alerts</h2><table id="alerts"></table>
    <h3>Silences</h3><button data-open="create_alert_silence">New silence</button><table id="silences"></table>
  </section>
  <section id="view-incidents" class="view" hidden>
    <h2>Incidents</h2><table id="incidents"></table>
    <div id="review" hidden><h3>Post-incident review <span id="review-ref"></span></h3>
      <button data-open="add_incident_action_item" id="add-item">Add action item</button>
      <pre id="review-md"></pre></div>
  </section>
  <section id="view-payments" class="view" hidden>
    <h2>Stuck payments</h2><table id="stuck"></table>
  </section>
  <section id="view-webhooks" class="view" hidden>
    <h2>Webhooks by status</h2><table id="webhooks"></table>
    <h3>Failed and dead</h3><table id="failed-webhooks"></table>
  </section>
  <section id="view-repairs" class="view" hidden>
    <h2>Repairs</h2>
    <p>Each asks for a reason and is recorded with your identity in the audit trail. Write the incident reference into the reason.</p>
    <div class="buttons">
      <button data-open="block_unit_dates">Block dates</button>
      <button data-open="move_reservation">Move a reservation</button>
      <button data-open="cancel_reservation_with_refund">Cancel with refund</button>
      <button data-open="propose_ledger_correction">Propose a ledger correction</button>
    </div>
    <h3>Blocks in force</h3><table id="blocks"></table>
    <h3>Ledger corrections awaiting a second operator</h3><table id="corrections"></table>
  </section>
</main>
<dialog id="action-dialog">
  <form id="action-form" method="dialog">
    <h3 id="action-title"></h3>
    <div id="action-fields"></div>
    <label id="reason-label">Reason <textarea name="reason" rows="3" required minlength="3"></textarea></label>
    <p class="error" id="action-error"></p>
    <menu><button type="button" id="action-cancel">Cancel</button><button type="submit" id="action-submit">Run</button></menu>
  </form>
</dialog>
</body>
</html>
`;

export const APP_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { display: flex; align-items: center; gap: 1rem; padding: .5rem 1rem; background: #1d2330; color: #fff; }
header h1 { font-size: 1.1rem; margin: 0; }
nav button { background: none; border: 0; color: #cfd6e4; padding: .4rem .6rem; cursor: pointer; }
nav button.active { color: #fff; border-bottom: 2px solid #6aa9ff; }
#who { margin-left: auto; opacity: .8; }
main { padding: 1rem; }
table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 1rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e3e6ec; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 1rem; }
.state-firing, .CRITICAL, .overdue { color: #b3261e; font-weight: 600; }
.state-pending, .WARNING { color: #a15c00; font-weight: 600; }
.state-resolved, .OK { color: #1e7b34; }
.chart svg { background: #fff; width: 100%; height: 160px; }
.chart rect.ok { fill: #4c9a5b; } .chart rect.bad { fill: #c7472f; } .chart rect.max { fill: #e8b04a; } .chart rect.avg { fill: #4a7fe8; }
.chart text { font-size: 9px; fill: #555; }
#flash { padding: .4rem 1rem; min-height: 1.2rem; }
#flash.ok { background: #e2f4e6; } #flash.error { background: #fbe4e1; }
dialog { border: 1px solid #ccd; border-radius: 6px; min-width: 28rem; }
dialog label { display: block; margin: .4rem 0; }
dialog input, dialog textarea, dialog select { display: block; width: 100%; box-sizing: border-box; }
.error { color: #b3261e; }
pre { background: #fff; padding: 1rem; white-space: pre-wrap; }
button { cursor: pointer; }
`;

export const APP_JS = String.raw`"use strict";
(() => {
const TOKEN_KEY = "reserve_ops_token";
const $ = (sel) => document.querySelector(sel);
let data = null;
let reviewRef = null;

// a token handed over in the fragment (never sent to a server, so never in a log) moves to this tab's storage
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem(TOKEN_KEY, fragment.get("token"));
  history.replaceState(null, "", location.pathname + location.search);
}
const token = () => sessionStorage.getItem(TOKEN_KEY);

async function api(path, body) {
  const res = await fetch("api/" + path, {
    method: body ? "POST" : "GET",
    headers: { authorization: "Bearer " + token(), ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const out = await res.json().catch(() => ({ error: "bad_answer", message: "the console API answered " + res.status }));
  if (res.status === 401 || res.status === 403) {
    if (path === "me" || res.status === 401) signOut(out.message || out.error);
  }
  if (!res.ok) { const e = new Error(out.message || out.error); e.body = out; e.status = res.status; throw e; }
  return out;
}

function flash(text, kind) {
  const f = $("#flash");
  f.textContent = text;
  f.className = kind || "";
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

const fmtTime = (t) => t ? new Date(t).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "";
function fmtSpan(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  return (h ? h + "h " : "") + String(m).padStart(h ? 2 : 1, "0") + "m " + String(sec).padStart(2, "0") + "s";
}
function clock(due, label) {
  if (!due) return "";
  const left = new Date(due).getTime() - Date.now();
  return left >= 0 ? label + " in " + fmtSpan(left) : label + " overdue by " + fmtSpan(left);
}

function table(id, columns, rows, empty) {
  const t = $("#" + id);
  t.replaceChildren();
  t.append(el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c.title)))));
  const body = el("tbody");
  if (!rows.length) body.append(el("tr", {}, el("td", { colSpan: columns.length, class: "empty" }, empty || "none")));
  for (const r of rows) {
    body.append(el("tr", { "data-row": r.reference || r.payment_id || r.alert_name || r.check_name || r.id || r.provider || "" },
      columns.map((c) => { const v = c.render ? c.render(r) : r[c.key]; return el("td", { class: c.cls ? c.cls(r) : "" }, v ?? ""); })));
  }
  t.append(body);
}

const btn = (label, action, fields) => el("button", { class: "act", "data-action": action, "data-args": JSON.stringify(fields || {}), type: "button" }, label);

// ---- actions: one dialog, fields per action, a reason always
const ACTIONS = {
  acknowledge_incident: { title: "Acknowledge incident", fields: [["incident", "Incident", "text"]] },
  post_incident_update: { title: "Post a status update", reasonLabel: "Update", fields: [["incident", "Incident", "text"]] },
  resolve_incident: { title: "Resolve (fix deployed): start monitoring", reasonLabel: "What fixed it", fields: [["incident", "Incident", "text"]] },
  add_incident_action_item: { title: "Add an action item", fields: [["incident", "Incident", "text"], ["item", "Action", "text"], ["owner", "Owner", "text"], ["due_date", "Due date", "date"]] },
  create_alert_silence: { title: "Silence an alert", fields: [["alert_name", "Alert (empty: any)", "text"], ["severity", "Severity (empty: any)", "text"], ["ends_at", "Until", "datetime-local"]] },
  end_alert_silence: { title: "End a silence", fields: [["silence_id", "Silence", "text"]] },
  replay_webhook: { title: "Replay webhook event", fields: [["webhook_id", "Webhook", "text"]] },
  recover_payment: { title: "Recover payment from what the provider shows", fields: [["payment_id", "Payment", "text"], ["status", "Provider status (succeeded, failed, canceled)", "text"], ["amount_received", "Amount received (centavos)", "number"], ["currency", "Currency", "text"]] },
  mark_payment_failed: { title: "Mark payment failed", fields: [["payment_id", "Payment", "text"]] },
  block_unit_dates: { title: "Block dates of a unit", fields: [["unit_id", "Unit", "text"], ["from", "From", "date"], ["to", "To (the first night not blocked)", "date"]] },
  unblock_unit_dates: { title: "Unblock", fields: [["block_id", "Block", "text"]] },
  move_reservation: { title: "Move a reservation to another unit", fields: [["reservation_id", "Reservation", "text"], ["new_unit_id", "New unit", "text"]] },
  cancel_reservation_with_refund: { title: "Cancel a reservation with refund", fields: [["reservation_id", "Reservation", "text"], ["refund_amount", "Refund (centavos, empty: policy)", "number"]] },
  propose_ledger_correction: { title: "Propose a ledger correction (a second operator approves)", fields: [["target_transaction_id", "Transaction to balance (optional)", "text"], ["entries", "Legs, one per line: account debit|credit amount", "textarea"]] },
  approve_ledger_correction: { title: "Approve ledger correction (4 eyes)", reasonLabel: "Note", fields: [["correction_id", "Correction", "text"]] },
  reject_ledger_correction: { title: "Reject ledger correction", fields: [["correction_id", "Correction", "text"]] },
};

let current = null;
function openAction(action, preset) {
  const spec = ACTIONS[action];
  current = { action, preset: preset || {} };
  $("#action-title").textContent = spec.title;
  $("#action-error").textContent = "";
  const box = $("#action-fields");
  box.replaceChildren();
  for (const [name, label, type] of spec.fields) {
    const input = type === "textarea" ? el("textarea", { name, rows: 3 }) : el("input", { name, type });
    if (current.preset[name] !== undefined) { input.value = current.preset[name]; input.readOnly = true; }
    box.append(el("label", {}, label, input));
  }
  $("#action-form").elements.namedItem("reason").value = "";
  $("#reason-label").firstChild.textContent = (spec.reasonLabel || "Reason") + " ";
  $("#action-dialog").showModal();
}

function collect() {
  const spec = ACTIONS[current.action];
  const form = $("#action-form");
  const body = { action: current.action, reason: form.elements.namedItem("reason").value.trim() };
  for (const [name, , type] of spec.fields) {
    // namedItem: a field called "item" would otherwise be the collection's item() method
    const v = form.elements.namedItem(name).value.trim();
    if (v === "") continue;
    if (type === "number") body[name] = Number(v);
    else if (type === "datetime-local") body[name] = new Date(v).toISOString();
    else if (name === "entries") body[name] = v.split("\n").filter((l) => l.trim()).map((l) => { const [account, direction, amount] = l.trim().split(/\s+/); return { account, direction, amount: Number(amount) }; });
    else body[name] = v;
  }
  return body;
}

async function submitAction(ev) {
  ev.preventDefault();
  try {
    const body = collect();
    const out = await api("action", body);
    $("#action-dialog").close();
    await refresh();
    if (reviewRef && body.incident === reviewRef) await showReview(reviewRef);
    // said once the page shows the new state
    flash(ACTIONS[body.action].title + ": done by " + out.operator, "ok");
  } catch (e) {
    const issues = e.body && e.body.issues ? " (" + e.body.issues.map((i) => i.path + ": " + i.message).join("; ") + ")" : "";
    $("#action-error").textContent = (e.body && e.body.error ? e.body.error + ": " : "") + e.message + issues;
  }
}

async function showReview(ref) {
  reviewRef = ref;
  const out = await api("review?incident=" + encodeURIComponent(ref));
  $("#review").hidden = false;
  $("#review-ref").textContent = ref;
  $("#add-item").setAttribute("data-args", JSON.stringify({ incident: ref }));
  $("#review-md").textContent = out.markdown;
}

// ---- rendering
function chart(id, rows, bars, max) {
  const box = $("#" + id);
  box.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 480 160");
  svg.setAttribute("data-points", String(rows.length));
  const w = 480 / Math.max(rows.length, 1);
  rows.forEach((r, i) => {
    bars.forEach((b, j) => {
      const v = b.value(r);
      if (v === null || v === undefined || Number.isNaN(v)) return;
      const h = max > 0 ? (Math.min(v, max) / max) * 130 : 0;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", String(i * w + 2 + j * ((w - 4) / bars.length)));
      rect.setAttribute("y", String(140 - h));
      rect.setAttribute("width", String(Math.max((w - 4) / bars.length - 1, 1)));
      rect.setAttribute("height", String(h));
      rect.setAttribute("class", b.cls(r));
      const title = document.createElementNS(ns, "title");
      title.textContent = new Date(r.hour).toISOString().slice(11, 16) + " " + b.label(r);
      rect.append(title);
      svg.append(rect);
    });
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", String(i * w + 2));
    t.setAttribute("y", "155");
    t.textContent = new Date(r.hour).toISOString().slice(11, 13);
    svg.append(t);
  });
  if (!rows.length) { const t = document.createElementNS(ns, "text"); t.setAttribute("x", "10"); t.setAttribute("y", "80"); t.textContent = "no data in the last 24 hours"; svg.append(t); }
  box.append(svg);
}

function render() {
  const d = data;
  $("#generated").textContent = "as of " + fmtTime(d.generated_at);
  table("ledger", [{ title: "check", key: "check_name" }, { title: "status", key: "status", cls: (r) => r.status }, { title: "details", key: "details" }], d.ledger);
  table("overbooking", [{ title: "unit", key: "unit_name" }, { title: "night", render: (r) => String(r.date).slice(0, 10) }, { title: "allotment", key: "allotment" }, { title: "oversold by", key: "oversold_by", cls: () => "CRITICAL" }], d.overbooking, "no night sold past its allotment");
  table("outbox", [{ title: "channel", key: "channel" }, { title: "waiting", key: "waiting" }, { title: "failing", key: "failing" }, { title: "oldest due", render: (r) => fmtTime(r.oldest_due) }, { title: "last delivered", render: (r) => fmtTime(r.last_delivered) }], d.outbox, "nothing sent yet");
  table("health", [{ title: "check", key: "check_name" }, { title: "status", key: "status", cls: (r) => r.status }, { title: "value", key: "observed_value" }, { title: "threshold", key: "threshold" }, { title: "details", key: "details" }], d.health);
  chart("success-chart", d.success_rate, [{ value: (r) => r.decided ? (100 * r.succeeded) / r.decided : null, cls: (r) => r.decided && r.succeeded / r.decided < 0.8 ? "bad" : "ok", label: (r) => r.succeeded + "/" + r.decided + " succeeded" }], 100);
  const lagMax = Math.max(1, ...d.webhook_lag.map((r) => r.max_s || 0));
  chart("lag-chart", d.webhook_lag, [
    { value: (r) => r.avg_s, cls: () => "avg", label: (r) => "avg " + r.avg_s + " s of " + r.events },
    { value: (r) => r.max_s, cls: () => "max", label: (r) => "max " + r.max_s + " s" }], lagMax);

  table("alerts", [
    { title: "alert", key: "alert_name" }, { title: "severity", key: "severity" },
    { title: "state", key: "state", cls: (r) => "state-" + r.state },
    { title: "value", render: (r) => (r.observed_value ?? "-") + " (" + (r.threshold ?? "") + ")" },
    { title: "since", render: (r) => r.state === "resolved" ? fmtTime(r.resolved_at) : fmtTime(r.active_since) },
    { title: "details", key: "details" }, { title: "runbook", key: "runbook_section" },
    { title: "", render: (r) => r.silenced_by ? "silenced" : btn("Silence", "create_alert_silence", { alert_name: r.alert_name }) },
  ], d.alerts);
  table("silences", [{ title: "alert", key: "alert_name" }, { title: "severity", key: "severity" }, { title: "until", render: (r) => fmtTime(r.ends_at) },
    { title: "author", key: "author" }, { title: "reason", key: "reason" }, { title: "", render: (r) => btn("End", "end_alert_silence", { silence_id: r.id }) }], d.silences, "no silence in force");

  table("incidents", [
    { title: "incident", key: "reference" }, { title: "severity", key: "severity" }, { title: "status", key: "status" },
    { title: "alert", render: (r) => r.alert_name + " (" + (r.alert_state || "-") + ")" },
    { title: "clocks", render: (r) => el("span", { class: "clocks", "data-incident": r.reference }) },
    { title: "acknowledged", render: (r) => r.acknowledged_by ? r.acknowledged_by + " after " + fmtSpan(r.seconds_to_acknowledge * 1000) : "" },
    { title: "", render: (r) => [
      r.status === "open" ? btn("Acknowledge", "acknowledge_incident", { incident: r.reference }) : null,
      r.status !== "closed" ? btn("Post update", "post_incident_update", { incident: r.reference }) : null,
      r.status === "open" || r.status === "acknowledged" ? btn("Resolve", "resolve_incident", { incident: r.reference }) : null,
      el("button", { class: "review", "data-incident": r.reference, type: "button" }, "Review")] },
  ], d.incidents, "no incident in the last 7 days");
  tick();

  table("stuck", [{ title: "payment", key: "payment_id" }, { title: "provider", render: (r) => r.provider + " " + r.method }, { title: "status", key: "status" },
    { title: "amount", render: (r) => (r.amount / 100).toFixed(2) + " " + r.currency }, { title: "age", render: (r) => r.age_minutes + " min (limit " + r.threshold_minutes + ")" },
    { title: "last poll", render: (r) => fmtTime(r.last_polled_at) + " " + (r.last_poll_result || "") },
    { title: "", render: (r) => [btn("Recover", "recover_payment", { payment_id: r.payment_id }), btn("Mark failed", "mark_payment_failed", { payment_id: r.payment_id })] },
  ], d.stuck_payments, "no payment stuck");
  table("webhooks", [{ title: "provider", key: "provider" }, { title: "received 1h", key: "received_1h" }, { title: "completed 1h", key: "completed_1h" },
    { title: "failed 1h", key: "failed_1h" }, { title: "awaiting retry", key: "failed_awaiting_retry" }, { title: "dead", key: "dead" },
    { title: "last completed", render: (r) => fmtTime(r.last_completed_at) }], d.webhooks);
  table("failed-webhooks", [{ title: "event", render: (r) => r.provider + " " + r.event_type + " " + r.event_id }, { title: "status", key: "status" },
    { title: "attempts", key: "attempts" }, { title: "error", key: "error_message" }, { title: "received", render: (r) => fmtTime(r.received_at) },
    { title: "", render: (r) => btn("Replay", "replay_webhook", { webhook_id: r.id }) }], d.failed_webhooks, "no failed or dead event");
  table("blocks", [{ title: "unit", key: "unit_id" }, { title: "nights", render: (r) => String(r.from_date).slice(0, 10) + " .. " + String(r.to_date).slice(0, 10) },
    { title: "by", key: "blocked_by" }, { title: "reason", key: "reason" }, { title: "", render: (r) => btn("Unblock", "unblock_unit_dates", { block_id: r.id }) }], d.blocks, "no block");
  table("corrections", [{ title: "correction", key: "id" }, { title: "legs", render: (r) => r.entries.map((e) => e.account + " " + e.direction + " " + e.amount).join(", ") },
    { title: "proposed by", key: "proposed_by" }, { title: "reason", key: "reason" },
    { title: "", render: (r) => [btn("Approve", "approve_ledger_correction", { correction_id: r.id }), btn("Reject", "reject_ledger_correction", { correction_id: r.id })] }],
    d.corrections, "none awaiting approval");
}

function tick() {
  if (!data) return;
  for (const span of document.querySelectorAll(".clocks")) {
    const r = data.incidents.find((i) => i.reference === span.getAttribute("data-incident"));
    if (!r) continue;
    const parts = [];
    if (r.status === "open") { parts.push(clock(r.triage_due_at, "triage")); parts.push(clock(r.ack_due_at, "ack")); if (r.escalated_at) parts.push("escalated " + fmtTime(r.escalated_at)); }
    if (r.status === "open" || r.status === "acknowledged") parts.push(clock(r.next_update_due_at, "update"));
    if (r.status === "monitoring") parts.push(clock(r.monitoring_until, "monitoring ends"));
    if (r.review_due_at) parts.push(clock(r.review_due_at, "review"));
    span.textContent = parts.filter(Boolean).join(" · ");
    span.classList.toggle("overdue", parts.some((p) => p.includes("overdue")));
  }
}

async function refresh() {
  // aria-busy: assistive technology (and a test) can tell the lists are about to be replaced
  $("main").setAttribute("aria-busy", "true");
  try {
    data = await api("overview");
    render();
  } finally {
    $("main").removeAttribute("aria-busy");
  }
}

function show(view) {
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.getAttribute("data-view") === view);
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  data = null;
  $("#sign-in").hidden = false;
  $("#tabs").hidden = true;
  $("#sign-out").hidden = true;
  for (const s of document.querySelectorAll(".view")) s.hidden = true;
  // the next operator to sign in on this tab must not see, or act on, what the previous one was shown
  for (const t of document.querySelectorAll("main table, main .chart")) t.replaceChildren();
  reviewRef = null;
  $("#review").hidden = true;
  $("#review-md").textContent = "";
  $("#generated").textContent = "";
  if ($("#action-dialog").open) $("#action-dialog").close();
  $("#who").textContent = "";
  if (why) flash(why, "error");
}

async function start() {
  if (!token()) return signOut();
  try {
    const me = await api("me");
    $("#who").textContent = me.operator;
    $("#sign-in").hidden = true;
    $("#tabs").hidden = false;
    $("#sign-out").hidden = false;
    show("overview");
    await refresh();
    flash("");
  } catch (e) {
    if (token()) flash(e.message, "error");
  }
}

document.addEventListener("click", (ev) => {
  const t = ev.target.closest("button");
  if (!t) return;
  if (t.hasAttribute("data-view")) show(t.getAttribute("data-view"));
  else if (t.hasAttribute("data-action")) openAction(t.getAttribute("data-action"), JSON.parse(t.getAttribute("data-args") || "{}"));
  else if (t.hasAttribute("data-open")) openAction(t.getAttribute("data-open"), JSON.parse(t.getAttribute("data-args") || "{}"));
  else if (t.classList.contains("review")) showReview(t.getAttribute("data-incident")).catch((e) => flash(e.message, "error"));
  else if (t.id === "sign-out") signOut("signed out");
  else if (t.id === "action-cancel") $("#action-dialog").close();
});
$("#action-form").addEventListener("submit", submitAction);
$("#sign-in-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, ev.target.token.value.trim());
  ev.target.token.value = "";
  start();
});
setInterval(tick, 1000);
setInterval(() => { if (data && !$("#action-dialog").open) refresh().catch(() => {}); }, 30000);
start();
})();
`;
