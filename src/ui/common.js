// credit-ledger: what the console and the portal share. Pages are built with DOM calls, never
// with innerHTML, so no value from the API is ever read as markup.
"use strict";

(function () {
  /** An element: el("td", {class: "num"}, "12", otherNode). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** A new Idempotency-Key: 128 random bits as a UUID-shaped string. */
  function newKey() {
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  /** An error the API answered: its own sentence, its code and status. */
  class ApiError extends Error {
    constructor(status, code, message, details) {
      super(message);
      this.status = status;
      this.code = code;
      this.details = details;
    }
  }

  /** Calls the API (`/v1/...`, resolved next to the page) with a bearer token; answers the JSON body or throws an ApiError. */
  async function api(path, { method = "GET", token, body, idempotencyKey } = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      // Relative to the page, so that a ledger served under a path prefix works too.
      response = await fetch(path.replace(/^\//, ""), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (e) {
      throw new ApiError(0, "network", "The ledger could not be reached. Check the connection and try again.");
    }
    const text = await response.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
    if (!response.ok) {
      const error = (json && json.error) || {};
      throw new ApiError(response.status, error.code || "error",
        error.message || `The ledger answered ${response.status}.`, error.details || {});
    }
    return json;
  }

  const numberFormat = new Intl.NumberFormat(undefined);
  const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const dayFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", timeZone: "UTC" });

  const fmt = {
    n: (x) => (x === null || x === undefined ? "unlimited" : numberFormat.format(x)),
    signed: (x) => (x > 0 ? "+" : "") + numberFormat.format(x),
    date: (iso) => (iso ? dateFormat.format(new Date(iso)) : "never"),
    day: (iso) => dayFormat.format(new Date(iso)),
    /** "in 3 days", "in 5 hours", or "expired". */
    until: (iso) => {
      if (!iso) return "never expires";
      const ms = new Date(iso).getTime() - Date.now();
      if (ms <= 0) return "expired";
      const hours = ms / 3600000;
      if (hours < 1) return `in ${Math.max(1, Math.round(ms / 60000))} min`;
      if (hours < 48) return `in ${Math.round(hours)} h`;
      return `in ${Math.round(hours / 24)} days`;
    },
    money: (price) => {
      if (!price) return "";
      const currency = String(price.currency || "").toUpperCase();
      // Stripe's zero-decimal currencies are few; the common ones have two decimals.
      const zero = ["JPY", "KRW", "VND", "CLP", "PYG", "UGX", "XAF", "XOF"].includes(currency);
      try {
        return new Intl.NumberFormat(undefined, { style: "currency", currency })
          .format(zero ? price.amount : price.amount / 100);
      } catch (e) {
        return `${price.amount} ${currency}`;
      }
    },
  };

  const PALETTE = ["#2456c7", "#e8710a", "#1e8e3e", "#a142f4", "#d93025", "#12a4af", "#9aa0a6", "#f9ab00"];

  /**
   * A stacked bar chart of usage rows ({start, operation, credits}) by day, as SVG, with a
   * legend and the same numbers as a table for screen readers and copying.
   */
  function usageChart(rows, { from, to } = {}) {
    const days = new Map();
    const operations = [];
    for (const row of rows) {
      const day = row.start.slice(0, 10);
      const op = row.operation || "(cost only)";
      if (!operations.includes(op)) operations.push(op);
      if (!days.has(day)) days.set(day, new Map());
      const ops = days.get(day);
      ops.set(op, (ops.get(op) || 0) + row.credits);
    }
    // Every day of the range gets a bar, empty or not.
    if (from && to) {
      const end = new Date(to);
      for (let d = new Date(from.slice(0, 10) + "T00:00:00Z"); d < end; d.setUTCDate(d.getUTCDate() + 1)) {
        const key = d.toISOString().slice(0, 10);
        if (!days.has(key)) days.set(key, new Map());
        if (days.size > 400) break;
      }
    }
    const ordered = [...days.keys()].sort();
    const total = (day) => [...days.get(day).values()].reduce((a, b) => a + b, 0);
    const max = Math.max(1, ...ordered.map(total));
    const color = (op) => PALETTE[operations.indexOf(op) % PALETTE.length];
    const sum = ordered.reduce((a, d) => a + total(d), 0);

    const W = 720, H = 220, left = 48, bottom = 24, top = 8;
    const plotW = W - left - 8, plotH = H - top - bottom;
    const svgNs = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNs, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", `Credits used per day: ${numberFormat.format(sum)} in all over ${ordered.length} days`);
    const add = (name, attrs, text) => {
      const node = document.createElementNS(svgNs, name);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
      if (text !== undefined) node.textContent = text;
      svg.append(node);
      return node;
    };
    for (const f of [0, 0.5, 1]) {
      const y = top + plotH - f * plotH;
      add("line", { x1: left, x2: W - 8, y1: y, y2: y, class: "grid-line" });
      add("text", { x: left - 6, y: y + 4, "text-anchor": "end", class: "axis" }, numberFormat.format(Math.round(max * f)));
    }
    const slot = plotW / Math.max(1, ordered.length);
    const barW = Math.max(2, Math.min(40, slot * 0.7));
    ordered.forEach((day, i) => {
      let y = top + plotH;
      const x = left + i * slot + (slot - barW) / 2;
      for (const op of operations) {
        const credits = days.get(day).get(op) || 0;
        if (!credits) continue;
        const h = (credits / max) * plotH;
        y -= h;
        const rect = add("rect", { x, y, width: barW, height: Math.max(h, 1), fill: color(op), "data-day": day, "data-operation": op });
        const title = document.createElementNS(svgNs, "title");
        title.textContent = `${day}: ${op} ${numberFormat.format(credits)} credits`;
        rect.append(title);
      }
      const every = Math.ceil(ordered.length / 8);
      if (i % every === 0) {
        add("text", { x: x + barW / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, fmt.day(day + "T00:00:00Z"));
      }
    });

    const legend = el("ul", { class: "legend" },
      operations.map((op) => el("li", {}, el("i", { style: null, "data-color": color(op) }), op)));
    // Colours are set through the DOM, not a style attribute (the page's CSP allows no inline style).
    legend.querySelectorAll("i").forEach((i) => { i.style.background = i.dataset.color; });

    const table = el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Day"), el("th", {}, "Operation"), el("th", { class: "num" }, "Credits"))),
      el("tbody", {}, ordered.flatMap((day) => [...days.get(day).entries()].map(([op, credits]) =>
        el("tr", {}, el("td", {}, day), el("td", {}, op), el("td", { class: "num" }, fmt.n(credits)))))));
    return el("div", { class: "chart", "data-total": sum },
      svg,
      operations.length ? legend : el("p", { class: "muted" }, "No credits used in this period yet."),
      el("details", {}, el("summary", {}, "Show as a table"), table));
  }

  /** The balance of one pool as a card: available, this period's use, reservations. */
  function poolCard(pool) {
    const used = pool.used || 0;
    const allowance = pool.allowance;
    // The meter and "of N allowance" count what the allowance paid for; what packs, rollover
    // or overage paid for is said apart, so 120 used never reads as "120 of 100".
    const fromAllowance = pool.allowance_used ?? Math.min(used, allowance || 0);
    const beyond = used - fromAllowance;
    const share = allowance ? Math.min(100, Math.round((fromAllowance / allowance) * 100)) : null;
    const bar = el("div", { class: "meter", role: "presentation" }, el("span", {}));
    if (share !== null) bar.firstChild.style.width = `${share}%`;
    return el("section", { class: "card", "data-pool": pool.pool },
      el("h3", {}, pool.pool),
      el("div", { class: "stat available", "aria-label": `${pool.pool} available` }, fmt.n(pool.available)),
      el("div", { class: "muted" }, "credits available"),
      share !== null ? bar : null,
      el("p", { class: "hint" },
        (allowance
          ? `Allowance used this period: ${fmt.n(fromAllowance)} of ${fmt.n(allowance)}` +
            (beyond > 0 ? ` · ${fmt.n(beyond)} more from packs, rollover or overage` : "")
          : `Used this period: ${fmt.n(used)}`) +
        (pool.reserved ? ` · reserved: ${fmt.n(pool.reserved)}` : "") +
        (pool.overage_limit ? ` · overage: ${fmt.n(pool.overage_used)} of ${fmt.n(pool.overage_limit)}` : "")),
      pool.overrides ? el("p", { class: "hint" }, `This account's own terms: ${overrideText(pool.overrides)}`) : null);
  }

  /** An account's overrides of a pool, in words. */
  function overrideText(o) {
    const parts = [];
    if (o.allowance !== null && o.allowance !== undefined) parts.push(`allowance ${fmt.n(o.allowance)}`);
    if (o.rollover_cap !== null && o.rollover_cap !== undefined) parts.push(`rollover cap ${fmt.n(o.rollover_cap)}`);
    if (o.overage_limit !== null && o.overage_limit !== undefined) parts.push(`overage limit ${fmt.n(o.overage_limit)}`);
    return parts.join(", ");
  }

  /** Journal entries as a table; `withDebits` adds the debit id a refund needs. */
  function entriesTable(entries, { withDebits = false } = {}) {
    if (!entries.length) return el("p", { class: "muted" }, "No entries.");
    return el("table", { class: "entries" },
      el("thead", {}, el("tr", {},
        el("th", {}, "When"), el("th", {}, "Kind"), el("th", {}, "Pool"), el("th", {}, "Operation"),
        el("th", { class: "num" }, "Amount"), el("th", { class: "num" }, "Balance after"),
        withDebits ? el("th", {}, "Debit") : null)),
      el("tbody", {}, entries.map((e) => el("tr", { "data-entry": e.id },
        el("td", {}, fmt.date(e.created_at)),
        el("td", {}, e.kind),
        el("td", {}, e.pool),
        el("td", {}, e.operation || ""),
        el("td", { class: `num ${e.amount < 0 ? "neg" : "pos"}` }, fmt.signed(e.amount)),
        el("td", { class: "num" }, e.balance_after === null ? "" : fmt.n(e.balance_after)),
        withDebits ? el("td", {}, e.debit_id ? el("code", {}, e.debit_id) : "") : null))));
  }

  window.Ledger = { el, api, ApiError, newKey, fmt, usageChart, poolCard, entriesTable };
})();
