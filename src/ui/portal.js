// The customer portal: a read-only view of one account, for the token in the link's fragment
// (`/portal#token=…`). The fragment never leaves the browser: the token is sent only to
// `GET /v1/portal`, as a bearer token.
"use strict";

(function () {
  const { el, api, newKey, fmt, usageChart, poolCard, entriesTable } = window.Ledger;
  const main = document.getElementById("main");

  function show(...nodes) {
    main.replaceChildren(...nodes);
  }

  function refused(message) {
    document.title = "Link not valid";
    show(el("section", { class: "card notice", role: "alert", id: "refused" },
      el("h1", {}, "This link cannot be opened"),
      el("p", {}, message)));
  }

  /** A button that sends the customer to Stripe Checkout for the pack. */
  function buyButton(token, pack, error) {
    const button = el("button", { type: "button", "aria-label": `Buy ${pack.id}: ${fmt.n(pack.credits)} credits` }, "Buy");
    button.addEventListener("click", async () => {
      button.disabled = true;
      error.textContent = "";
      try {
        // A key per click: a page restored with the Back button starts a new checkout.
        const session = await api("/v1/portal/checkout-sessions", {
          method: "POST", token, idempotencyKey: newKey(), body: { pack: pack.id },
        });
        // Checkout cannot be framed: it opens in the whole window.
        window.open(session.url, "_top");
      } catch (e) {
        error.textContent = e.message;
        button.disabled = false;
      }
    });
    return button;
  }

  function render(view, token) {
    document.getElementById("title").textContent = `Credits · ${view.plan.name}`;
    if (view.return_url) {
      const back = document.getElementById("back");
      back.href = view.return_url;
      back.target = "_top";
      back.textContent = `Back to ${new URL(view.return_url).host}`;
      back.hidden = false;
    }
    const period = view.balance.period;
    const buyError = el("p", { class: "error", role: "alert" });
    const expiring = view.balance.pools
      .flatMap((p) => p.grants.map((g) => ({ ...g, pool: p.pool })))
      .filter((g) => g.remaining > 0)
      .sort((a, b) => (a.expires_at || "9999") < (b.expires_at || "9999") ? -1 : 1);
    show(
      el("h1", {}, "Your credits"),
      el("p", { class: "muted" },
        `Plan ${view.plan.name}. This period runs from ${fmt.date(period.start)} to ${fmt.date(period.end)}, when the allowance resets.`),
      el("div", { class: "grid", id: "pools" }, view.balance.pools.map(poolCard)),
      el("section", { class: "card", id: "expiries" },
        el("h2", {}, "What expires when"),
        expiring.length
          ? el("table", {},
            el("thead", {}, el("tr", {}, el("th", { class: "num" }, "Credits"), el("th", {}, "Pool"), el("th", {}, "Kind"), el("th", {}, "Expires"))),
            el("tbody", {}, expiring.map((g) => el("tr", {},
              el("td", { class: "num" }, fmt.n(g.remaining)),
              el("td", {}, g.pool),
              el("td", {}, g.kind),
              el("td", {}, g.expires_at ? `${fmt.date(g.expires_at)} (${fmt.until(g.expires_at)})` : "never")))))
          : el("p", { class: "muted" }, "No credits left to expire.")),
      el("section", { class: "card", id: "usage" },
        el("h2", {}, "Usage this period, by day and operation"),
        usageChart(view.usage.data, { from: period.start, to: new Date().toISOString() })),
      el("section", { class: "card", id: "entries" },
        el("h2", {}, "Recent activity"),
        entriesTable(view.entries)),
      el("section", { class: "card", id: "packs" },
        el("h2", {}, "Credit packs"),
        buyError,
        view.packs.length
          ? el("table", {},
            el("thead", {}, el("tr", {}, el("th", {}, "Pack"), el("th", { class: "num" }, "Credits"), el("th", {}, "Pool"), el("th", {}, "Valid for"), el("th", { class: "num" }, "Price"), el("th", {}, ""))),
            el("tbody", {}, view.packs.map((p) => el("tr", { "data-pack": p.id },
              el("td", {}, p.id),
              el("td", { class: "num" }, fmt.n(p.credits)),
              el("td", {}, p.pool),
              el("td", {}, p.expires_in_days ? `${p.expires_in_days} days` : "never expires"),
              el("td", { class: "num" }, fmt.money(p.price)),
              el("td", {}, p.buyable ? buyButton(token, p, buyError) : "")))))
          : el("p", { class: "muted" }, "Your plan sells no credit packs."),
        view.packs.length && !view.packs.some((p) => p.buyable)
          ? el("p", { class: "hint" }, view.return_url
            ? "To buy a pack, go back to your account page."
            : "To buy a pack, ask your account's administrator.")
          : null),
      el("p", { class: "hint" }, `This page is read-only. Its link is valid until ${fmt.date(view.expires_at)}.`));
  }

  const TOKEN_KEY = "credit-ledger.portal-token";

  async function load() {
    // The token leaves the address bar (and so the history) at once; the tab keeps it.
    const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromLink) {
      sessionStorage.setItem(TOKEN_KEY, fromLink);
      history.replaceState(null, "", location.pathname + location.search);
    }
    const token = fromLink || sessionStorage.getItem(TOKEN_KEY);
    if (!token) {
      refused("The link has no token. Open the portal from the link you were given.");
      return;
    }
    try {
      render(await api("/v1/portal", { token }), token);
    } catch (e) {
      if (e.status === 401) refused(e.message);
      else show(el("p", { class: "error", role: "alert" }, e.message));
    }
  }

  window.addEventListener("hashchange", load);
  load();
})();
