// The Orders live dashboard. Plain JavaScript, no framework and no build step: the page is a
// client of the service's own HTTP API, kept live by server-sent events (see docs/dashboard.md).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Amounts arrive as exact decimal strings ("1176.00"): group the digits, never through a float.
function money(amount) {
  const [whole, cents = "00"] = String(amount).split(".");
  return whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + "." + cents;
}

function clock(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleTimeString([], { hour12: false }) + "." + String(date.getMilliseconds()).padStart(3, "0");
}

function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + clock(iso);
}

const ms = (seconds) => (seconds * 1000).toFixed(1) + " ms";
const orderOf = (streamId) => streamId.startsWith("order-") ? streamId.slice(6) : streamId;
const orderLink = (orderId) => el("a", { href: "/ui/orders/" + encodeURIComponent(orderId) }, orderId);

// -- connection state: one indicator for every live stream of the page --

const streams = new Set();
function showConnection() {
  const indicator = $("#connection");
  const states = Array.from(streams, (source) => source.readyState);
  const state = states.every((s) => s === EventSource.OPEN) ? "live"
    : states.some((s) => s === EventSource.CLOSED) ? "reconnecting" : "connecting";
  indicator.dataset.state = state;
  indicator.textContent = state === "live" ? "live" : state + "…";
}

// An EventSource that reconnects by itself (the browser resumes with Last-Event-ID).
function subscribe(url, handlers) {
  const source = new EventSource(url);
  streams.add(source);
  for (const [name, handle] of Object.entries(handlers)) {
    source.addEventListener(name, (message) => handle(JSON.parse(message.data), message));
  }
  source.addEventListener("open", showConnection);
  source.addEventListener("error", () => {
    showConnection();
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (a refused request): try again, as a new stream, a moment later.
      streams.delete(source);
      setTimeout(() => subscribe(url, handlers), 2000);
    }
  });
  return {
    close() { source.close(); streams.delete(source); showConnection(); },
  };
}

async function api(method, path, body, headers = {}) {
  const started = performance.now();
  const response = await fetch(path, {
    method,
    headers: body === undefined ? headers : { "Content-Type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const seconds = (performance.now() - started) / 1000;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  return { ok: response.ok, status: response.status, headers: response.headers, data, seconds };
}

// ================================ the dashboard ================================

function dashboard() {
  const log = eventLog();
  const orders = ordersPanel();
  const trace = commandPanel(log);
  let live = null;

  function connect() {
    if (live) live.close();
    const params = new URLSearchParams(orders.query());
    live = subscribe("/live/dashboard?" + params, {
      log: (event) => { log.add(event); trace.seen(event); },
      stats: renderStats,
      daily: renderChart,
      orders: orders.render,
      projections: renderProjections,
    });
  }
  orders.onChange(connect);
  connect();
}

function renderStats(stats) {
  for (const [name, value] of Object.entries(stats)) {
    const cell = $("#kpi-" + name);
    if (!cell) continue;
    const shown = name.endsWith("revenue") || name.endsWith("value") ? money(value) : String(value);
    if (cell.textContent !== shown) {
      cell.textContent = shown;
      const card = cell.parentElement;
      card.classList.remove("fresh");
      void card.offsetWidth;  // restart the highlight
      card.classList.add("fresh");
    }
  }
}

function renderChart(daily) {
  const svg = $("#daily-chart");
  const ns = "http://www.w3.org/2000/svg";
  const shape = (tag, attributes, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const days = daily.days.slice(-14);
  const width = 600, height = 180, left = 34, right = 46, top = 10, bottom = 24;
  svg.replaceChildren(shape("line", { class: "axis", x1: left, x2: width - right, y1: height - bottom, y2: height - bottom }));
  if (!days.length) {
    svg.append(shape("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no submitted orders yet"));
    return;
  }
  const maxCount = Math.max(1, ...days.map((d) => d.count));
  const maxRevenue = Math.max(1, ...days.map((d) => Number(d.revenue)));
  const slot = (width - left - right) / days.length;
  const y = (fraction) => height - bottom - fraction * (height - top - bottom);
  const points = [];
  days.forEach((day, i) => {
    const x = left + i * slot;
    const barHeight = (height - top - bottom) * (day.count / maxCount);
    const barWidth = Math.min(slot * 0.6, 36);
    svg.append(shape("rect", { class: "bar", x: x + (slot - barWidth) / 2, width: barWidth, y: height - bottom - barHeight, height: barHeight, rx: 3 }));
    svg.lastChild.append(shape("title", {}, `${day.date}: ${day.count} orders, ${money(day.revenue)}`));
    svg.append(shape("text", { x: x + slot / 2, y: height - 8, "text-anchor": "middle" }, day.date.slice(5)));
    points.push([x + slot / 2, y(Number(day.revenue) / maxRevenue)]);
  });
  svg.append(shape("polyline", { class: "rev", points: points.map((p) => p.join(",")).join(" ") }));
  for (const [px, py] of points) svg.append(shape("circle", { class: "dot", cx: px, cy: py, r: 3.5 }));
  svg.append(shape("text", { x: 4, y: top + 10 }, String(maxCount)));
  svg.append(shape("text", { x: width - 4, y: top + 10, "text-anchor": "end" }, money(maxRevenue.toFixed(2)).replace(/\.\d\d$/, "")));
}

let projectionsReported = false;

function renderProjections(report) {
  projectionsReported = true;
  $("section.projections").hidden = false;
  const body = $("#projections-table tbody");
  body.replaceChildren(...report.projections.map((p) => el("tr", { "data-projection": p.name },
    el("td", {}, p.name),
    el("td", { class: "state-" + p.state, title: p.last_error ?? "" }, p.state.replace("_", " ")),
    el("td", { class: "num" }, p.position),
    el("td", { class: "num" }, p.head ?? "–"),
    el("td", { class: "num" }, p.lag_events ?? "–"),
    el("td", { class: "num" }, p.lag_seconds == null ? "–" : ms(p.lag_seconds)),
    el("td", { class: "num" }, p.events_per_second.toFixed(1)),
    el("td", { class: "num dead-letters" }, p.dead_letters ?? "–"),
  )));
  // Dead letters are shown once the service reports them.
  const dead = report.projections.some((p) => p.dead_letters !== undefined);
  for (const cell of $$("#projections-table .dead-letters, #projections-table th:last-child")) cell.hidden = !dead;
}

function eventLog() {
  const body = $("#event-log tbody");
  const seen = new Set();
  const limit = 100;
  return {
    add(event) {
      if (seen.has(event.position)) return;
      seen.add(event.position);
      const row = el("tr", { class: "fresh", "data-position": event.position },
        el("td", { class: "num" }, event.position),
        el("td", {}, clock(event.recorded_at)),
        el("td", { class: "type-" + event.type }, event.type),
        el("td", { class: "id" }, orderLink(orderOf(event.stream_id))),
        el("td", { class: "num" }, event.version),
      );
      // Newest first; the log may arrive out of display order only on a reconnect's replay.
      const next = $$("tr", body).find((r) => Number(r.dataset.position) < Number(event.position));
      body.insertBefore(row, next || null);
      while (body.rows.length > limit) body.deleteRow(-1);
      $("#head-label").textContent = "head #" + body.rows[0].dataset.position;
    },
  };
}

function ordersPanel() {
  const form = $("#order-filters");
  const body = $("#orders-table tbody");
  const cursors = [null];
  let page = 0;
  let searching = null;
  let changed = () => {};

  function query() {
    const data = new FormData(form);
    const params = { limit: 10, order: "newest" };
    if (data.get("status")) params.status = data.get("status");
    if (data.get("customer_id").trim()) params.customer_id = data.get("customer_id").trim();
    if (cursors[page]) params.cursor = cursors[page];
    return params;
  }

  function rows(orders) {
    if (!orders.length) return [el("tr", { class: "empty" }, el("td", { colspan: 6 }, "no orders here yet: send a command"))];
    return orders.map((o) => el("tr", { "data-order": o.order_id },
      el("td", { class: "id" }, orderLink(o.order_id)),
      el("td", {}, o.customer_id),
      el("td", {}, el("span", { class: "badge " + o.status }, o.status)),
      el("td", { class: "num" }, o.item_count),
      el("td", { class: "num" }, money(o.total)),
      el("td", {}, when(o.created_at)),
    ));
  }

  function render(result) {
    if (searching !== null) return;
    const before = new Map($$("tr[data-order]", body).map((r) => [r.dataset.order, r.textContent]));
    body.replaceChildren(...rows(result.orders));
    for (const row of $$("tr[data-order]", body)) {
      if (before.get(row.dataset.order) !== row.textContent) row.classList.add("fresh");
    }
    cursors[page + 1] = result.next_cursor;
    $("#next-page").disabled = !result.next_cursor;
    $("#prev-page").disabled = page === 0;
    $("#page-label").textContent = "page " + (page + 1);
  }

  async function search(orderId) {
    searching = orderId;
    const found = await api("GET", "/orders/" + encodeURIComponent(orderId));
    if (searching !== orderId) return;
    body.replaceChildren(...(found.ok ? rows([found.data])
      : [el("tr", { class: "empty" }, el("td", { colspan: 6 }, `no order with id ${orderId}`))]));
    $("#next-page").disabled = $("#prev-page").disabled = true;
  }

  function restart() { cursors.length = 1; page = 0; changed(); }
  form.addEventListener("change", (event) => { if (event.target.name !== "search") restart(); });
  form.addEventListener("submit", (event) => event.preventDefault());
  let typing;
  form.elements.customer_id.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(restart, 300); });
  form.elements.search.addEventListener("input", (event) => {
    const orderId = event.target.value.trim();
    if (orderId) { search(orderId); } else { searching = null; changed(); }
  });
  $("#next-page").addEventListener("click", () => { page += 1; changed(); });
  $("#prev-page").addEventListener("click", () => { page = Math.max(0, page - 1); changed(); });
  return { query, render, onChange(callback) { changed = callback; } };
}

// -- the command panel: command -> events -> projections -> query, with timings --

function commandPanel(log) {
  const form = $("#command-form");
  const pending = [];  // commands waiting for their events to show in the log
  const lastSeen = new Map();  // stream id -> last position seen in the log
  const recent = [];  // the log's latest events: a command's may come before its answer
  let kind = "create";
  let lastOrderId = "";

  for (const tab of $$(".tabs button")) {
    tab.addEventListener("click", () => {
      const field = form.elements.order_id;
      if (tab.dataset.tab === "create") field.value = "";
      else if (kind === "create" || !field.value) field.value = lastOrderId;
      kind = tab.dataset.tab;
      for (const other of $$(".tabs button")) other.setAttribute("aria-selected", String(other === tab));
      form.dataset.command = kind;
      for (const part of $$("[data-for]", form)) part.hidden = !part.dataset.for.split(" ").includes(kind);
      form.elements.order_id.required = kind !== "create";
      form.elements.order_id.placeholder = kind === "create" ? "leave empty: the service picks one" : "ORD-…";
      $("#send").textContent = "Send " + { create: "CreateOrder", add: "AddItems", submit: "SubmitOrder" }[kind];
    });
  }

  function item() {
    const f = form.elements;
    return { name: f.name.value.trim(), price: f.price.value.trim(), quantity: Number(f.quantity.value) };
  }

  function request() {
    const orderId = form.elements.order_id.value.trim();
    if (kind === "create") {
      const body = { customer_id: form.elements.customer_id.value.trim(), items: [item()] };
      if (orderId) body.order_id = orderId;
      return ["CreateOrder", "POST", "/orders", body];
    }
    const path = "/orders/" + encodeURIComponent(orderId);
    return kind === "add" ? ["AddItems", "POST", path + "/items", item()] : ["SubmitOrder", "POST", path + "/submit", undefined];
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    await send(...request());
  });
  $("#demo").addEventListener("click", async () => {
    const suffix = Math.random().toString(36).slice(2, 7).toUpperCase();
    const first = `ORD-${suffix}-001`, second = `ORD-${suffix}-002`;
    const steps = [
      ["CreateOrder", "POST", "/orders", { order_id: first, customer_id: "CUST-123", items: [
        { name: "Laptop", price: "999.00", quantity: 1 }, { name: "Mouse", price: "49.00", quantity: 2 }] }],
      ["AddItems", "POST", `/orders/${first}/items`, { name: "Keyboard", price: "79.00", quantity: 1 }],
      ["SubmitOrder", "POST", `/orders/${first}/submit`, undefined],
      ["CreateOrder", "POST", "/orders", { order_id: second, customer_id: "CUST-123", items: [
        { name: "Monitor", price: "399.00", quantity: 1 }] }],
    ];
    for (const step of steps) if (!(await send(...step))) break;
  });

  async function send(name, method, path, body) {
    const problem = $("#problem");
    problem.hidden = true;
    lightUp("command");
    const sentAt = new Date();
    const seenBefore = new Map(lastSeen);
    const answer = await api(method, path, body);
    timing("command", `${name} ${ms(answer.seconds)}`);
    if (!answer.ok) {
      // A rule violation is an answer, not a failure: show the problem document's message.
      const detail = answer.data?.detail || answer.data?.title || `HTTP ${answer.status}`;
      const errors = (answer.data?.errors || []).map((e) => `${e.loc.slice(1).join(".")}: ${e.msg}`);
      problem.replaceChildren(el("b", {}, answer.data?.title || "Refused"), detail, ...errors.map((e) => el("div", {}, e)));
      problem.hidden = false;
      $("#trace").hidden = true;
      lightUp(null);
      return false;
    }
    const accepted = answer.data;
    const token = Number(accepted.consistency_token);
    const stream = "order-" + accepted.order_id;
    lastOrderId = accepted.order_id;
    const entry = { stream, token, after: seenBefore.get(stream) ?? 0, events: [], sentAt };
    entry.events = recent.filter((event) => belongs(event, entry));
    pending.push(entry);
    show("command", `${method} ${path} → ${answer.status} in ${ms(answer.seconds)}`);
    show("token", `Consistency-Token: ${accepted.consistency_token} (the position of its last event)`);
    show("events", "waiting for the event log…");
    show("projections", "waiting…");
    show("query", "…");
    $("#trace").hidden = false;
    flush();
    await Promise.all([projectionsApplied(token, sentAt), readYourWrite(accepted.order_id, token)]);
    return true;
  }

  async function projectionsApplied(token, sentAt) {
    lightUp("projections");
    if (!projectionsReported) { show("projections", "not reported by this service"); return; }
    const answer = await api("GET", `/projections/applied/${token}`);
    if (!answer.ok) { show("projections", "not known"); return; }
    const parts = answer.data.projections.map((p) => p.applied_at
      ? `${p.name}: applied ${ms((new Date(p.applied_at) - sentAt) / 1000)} after the command was sent`
      : `${p.name}: not applied yet`);
    show("projections", ...parts);
    const slowest = Math.max(...answer.data.projections.map((p) => p.applied_at ? new Date(p.applied_at) - sentAt : 0));
    timing("projections", `+${ms(slowest / 1000)}`);
  }

  async function readYourWrite(orderId, token) {
    const answer = await api("GET", "/orders/" + encodeURIComponent(orderId), undefined, { "Consistency-Token": String(token) });
    lightUp("query");
    if (answer.ok) {
      const o = answer.data;
      show("query", `GET /orders/${orderId} with the token → ${answer.status} in ${ms(answer.seconds)}: ${o.status}, ${o.item_count} items, total ${money(o.total)}`);
      timing("query", ms(answer.seconds));
    } else {
      show("query", `GET /orders/${orderId} → ${answer.status}: ${answer.data?.detail ?? ""}`);
    }
  }

  function belongs(event, entry) {
    const position = Number(event.position);
    return event.stream_id === entry.stream && position > entry.after && position <= entry.token;
  }

  function seen(event) {
    lastSeen.set(event.stream_id, Math.max(lastSeen.get(event.stream_id) ?? 0, Number(event.position)));
    recent.push(event);
    if (recent.length > 200) recent.shift();
    for (const entry of pending) if (belongs(event, entry)) entry.events.push(event);
    flush();
  }

  function flush() {
    while (pending.length) {
      const entry = pending[0];
      const complete = entry.events.some((e) => Number(e.position) === entry.token);
      if (entry === pending[pending.length - 1] && entry.events.length) {
        show("events", ...entry.events.map((e) => `${e.type} v${e.version} at position ${e.position}, recorded ${clock(e.recorded_at)}`));
        lightUp("events");
        timing("events", entry.events.map((e) => "#" + e.position).join(" "));
      }
      if (!complete) return;
      pending.shift();
    }
  }

  return { seen };
}

function show(field, ...lines) {
  $(`[data-trace="${field}"]`).replaceChildren(...lines.map((line) => el("span", {}, line)));
}

function timing(step, text) {
  $(`[data-timing="${step}"]`).textContent = text;
}

function lightUp(step) {
  for (const item of $$(".flow li")) {
    if (step === "command" && item.dataset.step !== "command") $("em", item).textContent = "";
    item.classList.toggle("lit", item.dataset.step === step);
  }
}

// ================================ an order's page ================================

function orderPage() {
  const orderId = decodeURIComponent(location.pathname.split("/").pop());
  document.title = `${orderId} · Orders`;
  $("#order-id").textContent = orderId;
  subscribe("/live/orders/" + encodeURIComponent(orderId), {
    result: async (order) => {
      $("#order-missing").hidden = order !== null;
      if (order === null) return;
      const badge = $("#order-status");
      badge.textContent = order.status;
      badge.className = "badge " + order.status;
      $("#order-customer").textContent = order.customer_id;
      $("#order-total").textContent = money(order.total);
      $("#order-count").textContent = order.item_count;
      $("#order-created").textContent = when(order.created_at);
      $("#order-submitted").textContent = when(order.submitted_at);
      $("#items-table tbody").replaceChildren(...order.items.map((item) => el("tr", {},
        el("td", {}, item.name),
        el("td", { class: "num" }, money(item.price)),
        el("td", { class: "num" }, item.quantity),
        el("td", { class: "num" }, money(cents(item.price, item.quantity))),
      )));
      const events = await api("GET", `/orders/${encodeURIComponent(orderId)}/events`);
      if (events.ok) renderStream(events.data.events);
    },
  });
}

function cents(price, quantity) {
  const [whole, fraction = "00"] = price.split(".");
  const total = (BigInt(whole) * 100n + BigInt(fraction.padEnd(2, "0"))) * BigInt(quantity);
  return `${total / 100n}.${String(total % 100n).padStart(2, "0")}`;
}

function renderStream(events) {
  $("#stream").replaceChildren(...events.map((e) => el("li", { "data-version": e.version },
    el("header", {}, el("b", { class: "type-" + e.type }, `v${e.version} ${e.type}`), el("span", { class: "muted" }, `position ${e.position} · ${when(e.recorded_at)}`)),
    el("pre", {}, JSON.stringify(e.data, null, 1)),
  )));
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "order") orderPage();
  else dashboard();
});
