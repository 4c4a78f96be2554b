// The admin console. Every read and every change goes through the public HTTP API with the admin
// token the admin signed in with; the token lives in this tab's sessionStorage only. Every form
// sends an Idempotency-Key, kept while the form is unchanged, so resubmitting after a lost
// answer never applies a change twice.
"use strict";

(function () {
  const { el, api, newKey, fmt, usageChart, poolCard, entriesTable } = window.Ledger;
  const TOKEN_KEY = "credit-ledger.admin-token";
  const ENTRY_KINDS = ["grant", "debit", "hold", "release", "expiration", "void", "refund", "adjustment", "overage"];
  const view = document.getElementById("view");
  const signInSection = document.getElementById("sign-in");
  const nav = document.getElementById("nav");
  let token = sessionStorage.getItem(TOKEN_KEY);

  function toast(message) {
    const node = document.getElementById("toast");
    node.textContent = message;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { node.textContent = ""; }, 4000);
  }

  /** An API call with the admin token; a 401 signs out. */
  async function call(path, options = {}) {
    try {
      return await api(path, { ...options, token });
    } catch (e) {
      if (e.status === 401) signOut(e.message);
      throw e;
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    nav.hidden = true;
    view.replaceChildren();
    signInSection.hidden = false;
    document.getElementById("sign-in-error").textContent = message || "";
    document.getElementById("token").focus();
  }

  document.getElementById("sign-out").addEventListener("click", () => signOut());

  document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = document.getElementById("token").value.trim();
    const error = document.getElementById("sign-in-error");
    error.textContent = "";
    try {
      // An admin-only read: a service token is told so rather than let in.
      await api("/v1/webhook-endpoints", { token: candidate });
    } catch (e) {
      error.textContent = e.status === 403
        ? "This is a service token. The console needs an admin token (LEDGER_ADMIN_TOKENS)."
        : e.message;
      return;
    }
    token = candidate;
    sessionStorage.setItem(TOKEN_KEY, token);
    document.getElementById("token").value = "";
    start();
  });

  function start() {
    signInSection.hidden = true;
    nav.hidden = false;
    route();
  }

  function failure(e) {
    return el("p", { class: "error", role: "alert" }, e.message);
  }

  function loading(what) {
    view.replaceChildren(el("p", { class: "muted" }, `Loading ${what}…`));
  }

  /**
   * A form that submits through the API. `submit(values, key)` performs the call with the form's
   * Idempotency-Key; `confirmFirst(values)`, if given, returns a question to confirm (falsy: none).
   */
  function actionForm({ id, fields, label, submit, done, confirmFirst }) {
    const error = el("p", { class: "error", role: "alert" });
    const button = el("button", { type: "submit" }, label);
    const form = el("form", { id }, fields, button, error);
    // One key per intended change: the same values sent again (after a lost answer) reuse it,
    // other values get a new one, and so does the next change after a success.
    let sent = null;
    let key = null;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      const values = Object.fromEntries(new FormData(form).entries());
      const question = confirmFirst && confirmFirst(values);
      if (question && !confirm(question)) return;
      const body = JSON.stringify(values);
      if (body !== sent) {
        sent = body;
        key = newKey();
      }
      button.disabled = true;
      try {
        const answer = await submit(values, key);
        sent = null;
        await done(answer);
      } catch (e) {
        error.textContent = e.message;
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  const field = (label, input, hint) => el("label", {}, label, input, hint ? el("span", { class: "hint" }, hint) : null);
  const select = (name, options, attrs = {}) => el("select", { name, ...attrs },
    options.map(([value, text]) => el("option", { value }, text)));
  const number = (value) => (value === "" || value === undefined ? undefined : Number(value));
  const instant = (value) => (value ? new Date(value).toISOString() : undefined);

  // ---- Accounts ---------------------------------------------------------------------------

  async function accountsView() {
    const query = el("input", { name: "q", type: "search", required: true, placeholder: "key_123 or org_42", autocomplete: "off" });
    const message = el("p", { class: "error", role: "alert" });
    const results = el("div", { id: "results" });
    const search = el("form", { id: "find-account", role: "search" },
      el("div", { class: "row" },
        field("Key id or external id", query),
        el("button", { type: "submit" }, "Find")),
      message);
    search.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.textContent = "";
      const q = query.value.trim();
      if (!q) return;
      try {
        await call(`/v1/accounts/${encodeURIComponent(q)}`);
        location.hash = `#/accounts/${encodeURIComponent(q)}`;
        return;
      } catch (e) {
        if (e.status !== 404 && e.status !== 422) { message.textContent = e.message; return; }
      }
      try {
        const page = await call(`/v1/accounts?external_id=${encodeURIComponent(q)}&limit=50`);
        if (page.data.length === 1) {
          location.hash = `#/accounts/${encodeURIComponent(page.data[0].key_id)}`;
        } else if (page.data.length) {
          results.replaceChildren(accountsTable(page.data));
        } else {
          message.textContent = `No account has the key id or external id '${q}'.`;
        }
      } catch (e) {
        message.textContent = e.message;
      }
    });
    view.replaceChildren(
      el("h1", {}, "Accounts"),
      el("section", { class: "card" }, search),
      el("section", { class: "card" }, el("h2", {}, "All accounts"), results));
    query.focus();
    let cursor = null;
    const more = el("button", { type: "button", class: "secondary" }, "More accounts");
    const list = async () => {
      const page = await call(`/v1/accounts?limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      cursor = page.next_cursor;
      const table = accountsTable(page.data);
      if (results.querySelector("table")) results.querySelector("tbody").append(...table.querySelector("tbody").children);
      else results.replaceChildren(page.data.length ? table : el("p", { class: "muted" }, "No accounts yet."));
      more.hidden = !cursor;
      results.append(more);
    };
    more.addEventListener("click", () => list().catch((e) => results.append(failure(e))));
    await list().catch((e) => results.replaceChildren(failure(e)));
  }

  function accountsTable(accounts) {
    return el("table", {},
      el("thead", {}, el("tr", {}, el("th", {}, "Key id"), el("th", {}, "External id"), el("th", {}, "Plan"), el("th", {}, "Available"))),
      el("tbody", {}, accounts.map((a) => el("tr", {},
        el("td", {}, el("a", { href: `#/accounts/${encodeURIComponent(a.key_id)}` }, a.key_id)),
        el("td", {}, a.external_id || ""),
        el("td", {}, a.plan),
        el("td", {}, a.balance.pools.map((p) => `${p.pool}: ${fmt.n(p.available)}`).join(", "))))));
  }

  // ---- One account ------------------------------------------------------------------------

  async function accountView(keyId) {
    loading(keyId);
    const base = `/v1/accounts/${encodeURIComponent(keyId)}`;
    let account, usage, plans;
    try {
      [account, usage, plans] = await Promise.all([
        call(base), call(`${base}/usage`), call("/v1/plans")]);
    } catch (e) {
      view.replaceChildren(el("h1", {}, keyId), failure(e));
      return;
    }
    const plan = plans.data.find((p) => p.id === account.plan);
    const refresh = () => accountView(keyId);
    const period = account.current_period;

    const grantsTable = el("table", { id: "grants" },
      el("thead", {}, el("tr", {},
        el("th", {}, "Pool"), el("th", {}, "Kind"), el("th", { class: "num" }, "Remaining"),
        el("th", { class: "num" }, "Granted"), el("th", {}, "Expires"), el("th", {}, ""))),
      el("tbody", {}, account.balance.pools.flatMap((p) => p.grants.map((g) => el("tr", { "data-grant": g.id },
        el("td", {}, p.pool), el("td", {}, g.kind),
        el("td", { class: "num" }, fmt.n(g.remaining)), el("td", { class: "num" }, fmt.n(g.amount)),
        el("td", {}, g.expires_at ? `${fmt.date(g.expires_at)} (${fmt.until(g.expires_at)})` : "never"),
        el("td", {}, g.kind === "allowance" || g.kind === "rollover" ? "" : el("button", {
          type: "button", class: "danger", "aria-label": `Void ${g.kind} grant of ${g.remaining} credits`,
          onclick: async (event) => {
            if (!confirm(`Void this ${g.kind} grant? Its ${g.remaining} remaining credits are taken away.`)) return;
            event.target.disabled = true;
            try {
              await call(`/v1/grants/${g.id}/void`, { method: "POST", idempotencyKey: newKey() });
              toast("Grant voided.");
              refresh();
            } catch (e) {
              event.target.disabled = false;
              toast(e.message);
            }
          },
        }, "Void")))))));

    view.replaceChildren(
      el("p", {}, el("a", { href: "#/accounts" }, "← Accounts")),
      el("h1", { id: "account-title" }, account.key_id),
      el("p", { class: "muted" },
        `Plan ${plan ? `${plan.name} (${plan.id})` : account.plan}` +
        (account.external_id ? ` · external id ${account.external_id}` : "") +
        ` · period ${fmt.date(period.start)} – ${fmt.date(period.end)}` +
        (account.auto_top_up ? ` · auto top-up: pack ${account.auto_top_up.pack} below ${fmt.n(account.auto_top_up.below)}` : "")),
      el("div", { class: "grid", id: "pools" }, account.balance.pools.map(poolCard)),
      el("section", { class: "card" }, el("h2", {}, "Active grants"),
        grantsTable.querySelector("tbody").children.length ? grantsTable : el("p", { class: "muted" }, "No active grants.")),
      el("section", { class: "card", id: "usage" }, el("h2", {}, "Usage this period by day and operation"),
        usageChart(usage.data, { from: period.start, to: new Date().toISOString() })),
      actionsCard(account, plan, plans.data, refresh),
      journalCard(base));
  }

  function actionsCard(account, plan, plans, refresh) {
    const base = `/v1/accounts/${encodeURIComponent(account.key_id)}`;
    const pools = account.balance.pools.map((p) => [p.pool, p.pool]);
    const done = (message) => async () => { toast(message); await refresh(); };

    const packs = plan ? Object.entries(plan.packs || {}) : [];
    const topUpPack = actionForm({
      id: "top-up-pack", label: "Grant pack",
      fields: packs.length
        ? [field("Pack", select("pack", packs.map(([id, p]) =>
          [id, `${id}: ${fmt.n(p.credits)} ${p.pool}` + (p.expires_in_days ? `, ${p.expires_in_days} days` : "") + (p.price ? `, ${fmt.money(p.price)}` : "")])))]
        : [el("p", { class: "muted" }, "This plan's catalogue has no packs; grant an amount instead.")],
      submit: (v, key) => call(`${base}/grants`, { method: "POST", idempotencyKey: key, body: { pack: v.pack, metadata: { source: "console" } } }),
      done: done("Pack granted."),
    });
    const topUpAmount = actionForm({
      id: "top-up-amount", label: "Grant credits",
      fields: el("div", { class: "row" },
        field("Pool", select("pool", pools)),
        field("Kind", select("kind", [["pack", "pack"], ["promotional", "promotional"], ["adjustment", "adjustment"]])),
        field("Credits", el("input", { name: "amount", type: "number", min: 1, step: 1, required: true, inputmode: "numeric" })),
        field("Expires", el("input", { name: "expires_at", type: "datetime-local" }), "Empty: never")),
      submit: (v, key) => call(`${base}/grants`, {
        method: "POST", idempotencyKey: key,
        body: { pool: v.pool, kind: v.kind, amount: number(v.amount), expires_at: instant(v.expires_at), metadata: { source: "console" } },
      }),
      done: done("Credits granted."),
    });
    const adjust = actionForm({
      id: "adjust", label: "Adjust",
      fields: el("div", { class: "row" },
        field("Pool", select("pool", pools)),
        field("Change", select("op", [["increment", "add"], ["decrement", "remove"], ["set", "set to"]])),
        field("Credits", el("input", { name: "amount", type: "number", min: 0, step: 1, required: true, inputmode: "numeric" })),
        field("Reason", el("input", { name: "reason", required: true, maxlength: 500 }))),
      submit: (v, key) => call(`${base}/adjustments`, {
        method: "POST", idempotencyKey: key, body: { pool: v.pool, op: v.op, amount: number(v.amount), reason: v.reason },
      }),
      done: done("Balance adjusted."),
    });
    const refund = actionForm({
      id: "refund", label: "Refund",
      fields: el("div", { class: "row" },
        field("Debit id", el("input", { name: "debit", required: true, placeholder: "from the journal", autocomplete: "off" })),
        field("Credits", el("input", { name: "amount", type: "number", min: 1, step: 1, inputmode: "numeric" }), "Empty: all that is left"),
        field("Reason", el("input", { name: "reason", maxlength: 500 }))),
      confirmFirst: (v) => (v.amount ? "" : `Refund everything not yet refunded of debit ${v.debit.trim()}?`),
      submit: (v, key) => call(`/v1/debits/${encodeURIComponent(v.debit.trim())}/refunds`, {
        method: "POST", idempotencyKey: key, body: { amount: number(v.amount), reason: v.reason || undefined },
      }),
      done: done("Debit refunded."),
    });

    const preview = el("p", { class: "hint", id: "proration-preview" });
    const planSelect = select("plan", plans.map((p) => [p.id, `${p.name} (${p.id})`]));
    const proration = select("proration", [["none", "none"], ["difference", "difference"], ["reset", "reset"]]);
    planSelect.value = account.plan;
    const describe = () => {
      const target = plans.find((p) => p.id === planSelect.value);
      preview.textContent = target ? prorationPreview(account, plan, target, proration.value) : "";
    };
    planSelect.addEventListener("change", describe);
    proration.addEventListener("change", describe);
    describe();
    const changePlan = actionForm({
      id: "change-plan", label: "Change plan",
      fields: [el("div", { class: "row" }, field("New plan", planSelect), field("Proration", proration)), preview],
      submit: (v, key) => call(`${base}/plan`, { method: "POST", idempotencyKey: key, body: { plan: v.plan, proration: v.proration } }),
      done: done("Plan changed."),
    });

    const panels = [
      ["Top up a pack", topUpPack], ["Top up an amount", topUpAmount], ["Adjust", adjust],
      ["Refund", refund], ["Change plan", changePlan]];
    const tabs = el("div", { class: "tabs", role: "tablist", "aria-label": "Actions" });
    const holder = el("div", { role: "tabpanel" });
    panels.forEach(([name, form], i) => {
      const tab = el("button", { type: "button", role: "tab", "aria-selected": i === 0 ? "true" : "false", "data-tab": form.id }, name);
      tab.addEventListener("click", () => {
        tabs.querySelectorAll("button").forEach((b) => b.setAttribute("aria-selected", "false"));
        tab.setAttribute("aria-selected", "true");
        holder.replaceChildren(form);
      });
      tabs.append(tab);
    });
    holder.append(panels[0][1]);
    return el("section", { class: "card", id: "actions" }, el("h2", {}, "Actions"), tabs, holder);
  }

  /** What each proration does to each pool, from the two plans' allowances. */
  function prorationPreview(account, current, target, proration) {
    if (!current) return "";
    const lines = [];
    const names = new Set([...Object.keys(current.pools), ...Object.keys(target.pools)]);
    for (const pool of names) {
      const from = (current.pools[pool] || {}).allowance;
      const to = (target.pools[pool] || {}).allowance;
      const label = (x) => (x === null || x === undefined ? "unlimited" : fmt.n(x));
      if (!target.pools[pool]) { lines.push(`${pool}: the new plan has no such pool; its credits stop being usable.`); continue; }
      if (proration === "none") {
        lines.push(`${pool}: keeps this period's allowance (${label(from)}); ${label(to)} from ${fmt.date(account.current_period.end)}.`);
      } else if (proration === "difference") {
        const delta = (to ?? 0) - (from ?? 0);
        lines.push(from === null || from === undefined || to === null || to === undefined
          ? `${pool}: allowance ${label(from)} → ${label(to)} now.`
          : `${pool}: ${delta >= 0 ? "grants" : "removes"} ${fmt.n(Math.abs(delta))} credits now (${label(from)} → ${label(to)}).`);
      } else {
        lines.push(`${pool}: this period ends now; a new one starts now with ${label(to)}.`);
      }
    }
    return `${target.id === current.id ? "Same plan. " : ""}Prices change at once. ${lines.join(" ")}`;
  }

  function journalCard(base) {
    const kind = select("kind", [["", "every kind"], ...ENTRY_KINDS.map((k) => [k, k])]);
    const from = el("input", { name: "from", type: "datetime-local" });
    const to = el("input", { name: "to", type: "datetime-local" });
    const error = el("p", { class: "error", role: "alert" });
    const holder = el("div", {});
    const older = el("button", { type: "button", class: "secondary", hidden: true }, "Older entries");
    let cursor = null;
    let filter = "";
    const load = async (append) => {
      error.textContent = "";
      try {
        const page = await call(`${base}/entries?limit=25${filter}${append && cursor ? `&cursor=${cursor}` : ""}`);
        cursor = page.next_cursor;
        const table = entriesTable(page.data, { withDebits: true });
        const body = holder.querySelector("tbody");
        if (append && body) body.append(...table.querySelectorAll("tbody tr"));
        else holder.replaceChildren(table);
        older.hidden = !cursor;
      } catch (e) {
        error.textContent = e.message;
      }
    };
    const filters = el("form", { id: "journal-filters" },
      el("div", { class: "row" }, field("Kind", kind), field("From", from), field("To", to),
        el("button", { type: "submit" }, "Filter")), error);
    filters.addEventListener("submit", (event) => {
      event.preventDefault();
      const params = new URLSearchParams();
      if (kind.value) params.set("kind", kind.value);
      if (from.value) params.set("from", instant(from.value));
      if (to.value) params.set("to", instant(to.value));
      filter = params.toString() ? `&${params}` : "";
      cursor = null;
      load(false);
    });
    older.addEventListener("click", () => load(true));
    load(false);
    return el("section", { class: "card", id: "journal" },
      el("h2", {}, "Journal"),
      el("p", { class: "hint" }, "Newest first. The Debit column gives the id a refund needs."),
      filters, holder, older);
  }

  // ---- Plans and webhooks -------------------------------------------------------------------

  async function plansView() {
    loading("plans");
    try {
      const plans = (await call("/v1/plans")).data;
      view.replaceChildren(el("h1", {}, "Plans"), plans.length ? plans.map((p) => el("section", { class: "card", "data-plan": p.id },
        el("h2", {}, `${p.name} `, el("span", { class: "pill" }, `${p.id} · v${p.version} · per ${p.interval}`)),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "Pool"), el("th", { class: "num" }, "Allowance"), el("th", { class: "num" }, "Rollover cap"), el("th", { class: "num" }, "Overage limit"))),
          el("tbody", {}, Object.entries(p.pools).map(([name, s]) => el("tr", {}, el("td", {}, name),
            el("td", { class: "num" }, fmt.n(s.allowance)), el("td", { class: "num" }, s.rollover_cap === null ? "none" : fmt.n(s.rollover_cap)),
            el("td", { class: "num" }, fmt.n(s.overage_limit)))))),
        el("h3", {}, "Operations"),
        el("p", {}, Object.entries(p.operations).map(([op, price]) => `${op}: ${fmt.n(price.cost)} ${price.pool}`).join(" · ") || "none"),
        Object.keys(p.packs || {}).length ? [el("h3", {}, "Packs"), el("p", {}, Object.entries(p.packs).map(([id, pack]) =>
          `${id}: ${fmt.n(pack.credits)} ${pack.pool}${pack.price ? ` for ${fmt.money(pack.price)}` : ""}`).join(" · "))] : null))
        : el("p", { class: "muted" }, "No plans yet: create one with PUT /v1/plans/{plan_id}."));
    } catch (e) {
      view.replaceChildren(el("h1", {}, "Plans"), failure(e));
    }
  }

  async function webhooksView() {
    loading("webhook endpoints");
    try {
      const endpoints = (await call("/v1/webhook-endpoints")).data;
      view.replaceChildren(el("h1", {}, "Webhook endpoints"), endpoints.length ? endpoints.map((w) => {
        const log = el("div", {});
        const show = el("button", { type: "button", class: "secondary" }, "Show deliveries");
        show.addEventListener("click", async () => {
          try {
            const deliveries = (await call(`/v1/webhook-endpoints/${w.id}/deliveries?limit=50`)).data;
            log.replaceChildren(deliveries.length ? el("table", {},
              el("thead", {}, el("tr", {}, el("th", {}, "Event"), el("th", {}, "Account"), el("th", {}, "Status"), el("th", { class: "num" }, "Attempts"), el("th", {}, "Last answer"), el("th", {}, "Created"))),
              el("tbody", {}, deliveries.map((d) => el("tr", {}, el("td", {}, d.event_type), el("td", {}, d.key_id), el("td", {}, d.status),
                el("td", { class: "num" }, d.attempts), el("td", {}, d.last_status_code || d.last_error || ""), el("td", {}, fmt.date(d.created_at))))))
              : el("p", { class: "muted" }, "No deliveries yet."));
          } catch (e) {
            log.replaceChildren(failure(e));
          }
        });
        return el("section", { class: "card" }, el("h2", {}, w.url),
          el("p", { class: "muted" }, `${w.description ? `${w.description} · ` : ""}events: ${w.events.length ? w.events.join(", ") : "all"}`),
          show, log);
      }) : el("p", { class: "muted" }, "No webhook endpoints: add one with POST /v1/webhook-endpoints."));
    } catch (e) {
      view.replaceChildren(el("h1", {}, "Webhook endpoints"), failure(e));
    }
  }

  function route() {
    if (!token) { signOut(); return; }
    const [, section, rest] = location.hash.match(/^#\/([a-z]+)\/?(.*)$/) || [];
    let keyId = null;
    try { keyId = rest ? decodeURIComponent(rest) : null; } catch (e) { keyId = null; }
    if (section === "accounts" && keyId) accountView(keyId);
    else if (section === "plans") plansView();
    else if (section === "webhooks") webhooksView();
    else accountsView();
  }

  window.addEventListener("hashchange", () => { if (token) route(); });
  if (token) start(); else signOut();
})();
