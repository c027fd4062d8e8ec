// ragd dashboard: plain ES module, no dependencies, talks to /api/v1 like any client.
// Everything shown is built with DOM nodes and textContent: no server text is parsed as HTML.

const $ = (sel) => document.querySelector(sel);

const store = {
  get key() { return sessionStorage.getItem("ragd.key") || ""; },
  set key(v) { v ? sessionStorage.setItem("ragd.key", v) : sessionStorage.removeItem("ragd.key"); },
  get collection() { return localStorage.getItem("ragd.collection") || ""; },
  set collection(v) { localStorage.setItem("ragd.collection", v); },
  get conversations() {
    try { return JSON.parse(localStorage.getItem("ragd.conversations") || "[]"); } catch { return []; }
  },
  set conversations(v) { localStorage.setItem("ragd.conversations", JSON.stringify(v.slice(0, 30))); },
};

const state = { me: null, collections: [], conversation: null, docCursor: null, docGen: 0, statusTimer: null };

// ---- small helpers ---------------------------------------------------------------------------

/** h("tag.class", {attr: value, onclick: fn}, child, "text", ...) */
function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const el = document.createElement(tag);
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function badge(word) { return h("span.badge." + String(word).replace(/[^a-z_]/g, ""), { text: word }); }

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

let toastTimer;
function toast(message, bad = false) {
  const t = $("#toast");
  t.textContent = message;
  t.classList.toggle("bad", bad);
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.textContent = ""; }, bad ? 8000 : 4000);
}

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status; this.code = code; this.retryAfter = retryAfter;
  }
  toString() { return `${this.message} (${this.code})`; }
}

function authHeaders() {
  return store.key ? { Authorization: `Bearer ${store.key}` } : {};
}

async function errorOf(res) {
  let code = "http_" + res.status, message = res.statusText || "request failed";
  try {
    const body = await res.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch { /* not JSON */ }
  return new ApiError(res.status, code, message, Number(res.headers.get("retry-after")) || 0);
}

async function api(path, { method = "GET", json, signal } = {}) {
  const headers = { ...authHeaders() };
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  const res = await fetch(path, { method, headers, body, signal });
  if (res.status === 401 && state.me) { signOut("Your key is no longer accepted; sign in again."); }
  if (!res.ok) throw await errorOf(res);
  if (res.status === 204) return null;
  return res.json();
}

const enc = encodeURIComponent;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- sign in and navigation ------------------------------------------------------------------

async function boot() {
  $("#signin-form").addEventListener("submit", signIn);
  window.addEventListener("hashchange", route);
  wireCollections(); wireDocuments(); wireChat(); wireStatus();
  try {
    state.me = await api("/api/v1/me");
  } catch (e) {
    if (!(e instanceof ApiError) || e.status !== 401) toast(`ragd did not answer: ${e}`, true);
    store.key = "";
    return showSignIn();
  }
  signedIn();
}

async function signIn(ev) {
  ev.preventDefault();
  const key = $("#api-key").value.trim();
  $("#signin-error").textContent = "";
  store.key = key;
  try {
    state.me = await api("/api/v1/me");
  } catch (e) {
    store.key = "";
    $("#signin-error").textContent = e instanceof ApiError ? `Not signed in: ${e.message}` : `ragd did not answer: ${e}`;
    $("#api-key").focus();
    return;
  }
  $("#api-key").value = "";
  signedIn();
}

function signOut(why) {
  store.key = "";
  state.me = null;
  if (why) toast(why, true);
  showSignIn();
}

function showSignIn() {
  $("#nav").hidden = true;
  $("#who").replaceChildren();
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== "page-signin";
  $("#api-key").focus();
}

function signedIn() {
  const me = state.me;
  $("#nav").hidden = false;
  const who = me.auth_enabled
    ? [h("span", { text: `${me.tenant} · ${me.role} · ${me.id}` }), h("button.small", { type: "button", onclick: () => signOut() }, "Sign out")]
    : [h("span", { text: "authentication is off (local admin)" })];
  $("#who").replaceChildren(...who);
  if (!location.hash || location.hash === "#/") location.hash = "#/collections";
  else route();
}

const pages = {
  collections: () => loadCollections(),
  documents: () => loadDocumentsPage(),
  chat: () => loadChatPage(),
  status: () => loadStatus(),
};

function route() {
  if (!state.me) return showSignIn();
  const name = (location.hash.match(/^#\/(\w+)/) || [])[1] || "collections";
  const page = pages[name] ? name : "collections";
  for (const p of document.querySelectorAll(".page")) p.hidden = p.id !== `page-${page}`;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  clearInterval(state.statusTimer);
  document.title = `ragd · ${page}`;
  $("#main").focus({ preventScroll: true });
  pages[page]().catch((e) => toast(String(e), true));
}

// ---- collections -----------------------------------------------------------------------------

async function refreshCollections() {
  state.collections = (await api("/api/v1/collections")).collections;
  const names = state.collections.map((c) => c.name);
  if (!names.includes(store.collection) && names.length) store.collection = names[0];
  for (const sel of document.querySelectorAll(".collection-select")) {
    sel.replaceChildren(...names.map((n) => h("option", { value: n, text: n })));
    sel.value = store.collection;
    sel.disabled = names.length === 0;
  }
  return state.collections;
}

function wireCollections() {
  $("#create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const input = $("#new-collection");
    try {
      const c = await api("/api/v1/collections", { method: "POST", json: { name: input.value.trim() } });
      toast(`Collection ${c.name} created`);
      input.value = "";
      store.collection = c.name;
      await loadCollections();
    } catch (e) { toast(String(e), true); }
  });
  for (const sel of document.querySelectorAll(".collection-select")) {
    sel.addEventListener("change", () => {
      store.collection = sel.value;
      if (sel.id === "doc-collection") { $("#search-results").replaceChildren(); loadDocuments(true); }
      if (sel.id === "chat-collection") newConversation();
    });
  }
}

async function loadCollections() {
  const list = await refreshCollections();
  const admin = state.me.role === "admin";
  $("#create-form").hidden = !admin;
  $("#collections-empty").hidden = list.length > 0;
  $("#collections-table tbody").replaceChildren(...list.map((c) => h("tr", { "data-collection": c.name },
    h("td", {}, h("a", { href: "#/documents", onclick: () => { store.collection = c.name; } }, c.name)),
    h("td.num", { text: c.documents }),
    h("td.num", { text: c.chunks }),
    h("td", { text: `${c.embedder} (${c.dimensions})` }),
    h("td", { text: when(c.created_at) }),
    h("td", {}, admin ? h("button.danger.small", { type: "button", "aria-label": `Delete collection ${c.name}`, onclick: () => deleteCollection(c.name) }, "Delete") : ""),
  )));
}

async function deleteCollection(name) {
  if (!confirm(`Delete collection "${name}" with every document in it?`)) return;
  try {
    await api(`/api/v1/collections/${enc(name)}`, { method: "DELETE" });
    toast(`Collection ${name} deleted`);
    await loadCollections();
  } catch (e) { toast(String(e), true); }
}

// ---- documents and uploads -------------------------------------------------------------------

function wireDocuments() {
  const zone = $("#dropzone"), input = $("#file-input");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); input.click(); } });
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    zone.classList.remove("over");
    uploadAll([...ev.dataTransfer.files]);
  });
  input.addEventListener("change", () => { uploadAll([...input.files]); input.value = ""; });
  $("#doc-filter").addEventListener("input", filterDocuments);
  $("#documents-more").addEventListener("click", () => loadDocuments(false));
  $("#search-form").addEventListener("submit", searchPassages);
}

async function loadDocumentsPage() {
  await refreshCollections();
  const none = state.collections.length === 0;
  $("#dropzone").hidden = none || state.me.role === "read";
  if (none) {
    $("#documents-table tbody").replaceChildren();
    $("#documents-empty").hidden = false;
    $("#documents-empty").textContent = "No collections yet: create one first.";
    return;
  }
  $("#search-results").replaceChildren();
  await loadDocuments(true);
}

/** The first page of the collection's documents (`fresh`), or the next one. A load that a newer one
 *  overtook (two jobs finishing at once) is dropped, so rows are never listed twice. */
async function loadDocuments(fresh) {
  const c = store.collection;
  if (!c) return;
  const gen = ++state.docGen;
  const q = new URLSearchParams({ limit: "100" });
  if (!fresh && state.docCursor) q.set("cursor", state.docCursor);
  const page = await api(`/api/v1/collections/${enc(c)}/documents?${q}`);
  if (gen !== state.docGen) return;
  if (fresh) $("#documents-table tbody").replaceChildren();
  state.docCursor = page.next_cursor;
  $("#documents-more").hidden = !page.next_cursor;
  const canWrite = state.me.role !== "read";
  $("#documents-table tbody").append(...page.documents.map((d) => h("tr", { "data-doc": d.id },
    h("td", {}, h("strong", { text: d.title || d.id }), d.title && d.title !== d.id ? h("div.muted", { text: d.id }) : ""),
    h("td.num", { text: d.chunks }),
    h("td", { text: when(d.ingested_at) }),
    h("td", {}, canWrite ? h("button.danger.small", { type: "button", "aria-label": `Delete document ${d.id}`, onclick: () => deleteDocument(c, d.id) }, "Delete") : ""),
  )));
  const count = $("#documents-table tbody").children.length;
  $("#documents-empty").hidden = count > 0;
  $("#documents-empty").textContent = "No documents yet: drop files above.";
  filterDocuments();
}

function filterDocuments() {
  const f = $("#doc-filter").value.trim().toLowerCase();
  for (const tr of $("#documents-table tbody").children) tr.hidden = f !== "" && !tr.textContent.toLowerCase().includes(f);
}

async function deleteDocument(collection, id) {
  if (!confirm(`Delete "${id}"? Its passages leave every search and answer.`)) return;
  try {
    await api(`/api/v1/collections/${enc(collection)}/documents/${enc(id)}`, { method: "DELETE" });
    document.querySelector(`#documents-table tr[data-doc="${CSS.escape(id)}"]`)?.remove();
    $("#documents-empty").hidden = $("#documents-table tbody").children.length > 0;
    toast(`Document ${id} deleted`);
  } catch (e) { toast(String(e), true); }
}

function uploadAll(files) {
  const c = store.collection;
  if (!c) return toast("Create a collection first", true);
  for (const f of files) uploadOne(c, f);
}

/** One file: upload with progress (XMLHttpRequest reports it; fetch does not), then follow its job. */
function uploadOne(collection, file) {
  const bar = h("progress", { max: "100", value: "0", "aria-label": `Upload of ${file.name}` });
  const status = h("span", {}, badge("uploading"));
  const row = h("li", { "data-file": file.name }, h("span", { text: file.name }), bar, status);
  $("#uploads").prepend(row);
  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", `/api/v1/collections/${enc(collection)}/documents`);
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) bar.value = Math.round((ev.loaded / ev.total) * 100); };
  const fail = (message) => { row.dataset.state = "failed"; status.replaceChildren(badge("failed"), " ", h("span", { text: message })); };
  xhr.onerror = () => fail("the upload did not reach ragd");
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status >= 300) return fail(body.error ? `${body.error.message} (${body.error.code})` : `HTTP ${xhr.status}`);
    bar.value = 100;
    followJob(body.job_id, row, status, collection);
  };
  xhr.send(form);
}

async function followJob(jobId, row, status, collection) {
  row.dataset.job = jobId;
  let wait = 300;
  for (;;) {
    let job;
    try {
      job = await api(`/api/v1/jobs/${enc(jobId)}`);
    } catch (e) {
      if (e.status === 429) { await sleep((e.retryAfter || 1) * 1000); continue; }
      row.dataset.state = "failed";
      return status.replaceChildren(badge("failed"), " ", h("span", { text: String(e) }));
    }
    const p = job.progress || {};
    const detail = p.total ? ` ${p.done ?? 0}/${p.total}` : "";
    status.replaceChildren(badge(job.status), h("span.muted", { text: detail }));
    if (job.status === "done" || job.status === "failed") {
      row.dataset.state = job.status;
      if (job.status === "failed") status.append(" ", h("span", { text: job.error ? job.error.message : "failed" }));
      if (collection === store.collection && !$("#page-documents").hidden) loadDocuments(true);
      return;
    }
    await sleep(wait);
    wait = Math.min(wait * 1.6, 3000); // jobs reads count against the caller's query limit
  }
}

async function searchPassages(ev) {
  ev.preventDefault();
  const c = store.collection;
  const list = $("#search-results");
  try {
    const r = await api(`/api/v1/collections/${enc(c)}/search`, { method: "POST", json: { query: $("#search-query").value, mode: $("#search-mode").value, top_k: 10 } });
    const note = r.degraded && r.degraded.length ? h("li.muted", { text: `degraded: ${r.degraded.join(", ")}` }) : "";
    list.replaceChildren(note, ...r.results.map((hit) => h("li", {},
      h("button.link", { type: "button", onclick: () => showPassage(c, hit.doc_id, hit.chunk_index, hit.title) }, hit.title || hit.doc_id),
      h("span.muted", { text: `  score ${hit.score.toFixed(3)}` }),
      h("p.snippet", { text: hit.text.length > 320 ? hit.text.slice(0, 320) + "…" : hit.text }),
    )));
    if (!r.results.length) list.replaceChildren(h("li.muted", { text: "Nothing found." }));
  } catch (e) { toast(String(e), true); }
}

// ---- a passage in context --------------------------------------------------------------------

async function showPassage(collection, docId, index, title) {
  const dialog = $("#passage");
  $("#passage-title").textContent = title || docId;
  $("#passage-meta").textContent = `${docId} · passage ${index + 1}`;
  const body = $("#passage-body");
  body.replaceChildren(h("p.muted", { text: "Loading…" }));
  if (!dialog.open) dialog.showModal();
  try {
    const from = Math.max(0, index - 2);
    const r = await api(`/api/v1/collections/${enc(collection)}/documents/${enc(docId)}/chunks?from=${from}&limit=5`);
    $("#passage-meta").textContent = `${docId} · passage ${index + 1} of ${r.total}`;
    body.replaceChildren(...r.chunks.map((c) => {
      const cited = c.chunk_index === index;
      const where = [c.heading_path && c.heading_path.length ? c.heading_path.join(" › ") : "", c.offsets && c.offsets.page ? `page ${c.offsets.page}` : ""].filter(Boolean).join(" · ");
      return h("p.chunk" + (cited ? ".cited" : ""), { "data-chunk-index": c.chunk_index, "aria-current": cited ? "true" : null },
        where ? h("span.where", { text: where }) : "", c.text);
    }));
    body.querySelector(".cited")?.scrollIntoView({ block: "center" });
  } catch (e) {
    body.replaceChildren(h("p.error", { text: e.status === 404 ? "This document is no longer in the collection." : String(e) }));
  }
}

// ---- chat ------------------------------------------------------------------------------------

function wireChat() {
  $("#ask-form").addEventListener("submit", (ev) => { ev.preventDefault(); ask(); });
  $("#question").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); ask(); }
  });
  $("#new-conversation").addEventListener("click", () => { newConversation(); $("#question").focus(); });
  $("#passage-close").addEventListener("click", () => $("#passage").close());
}

async function loadChatPage() {
  await refreshCollections();
  if (!state.conversation || state.conversation.collection !== store.collection) newConversation();
  else renderTranscript();
  renderConversations();
}

function newConversation() {
  state.conversation = { id: newId(), collection: store.collection, title: "", turns: [] };
  renderTranscript();
  renderConversations();
}

/** A random conversation id (crypto.randomUUID needs a secure context; plain http on a LAN is not one). */
function newId() {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function saveConversation() {
  const c = state.conversation;
  const all = store.conversations.filter((x) => x.id !== c.id);
  store.conversations = [c, ...all];
  renderConversations();
}

function renderConversations() {
  const list = store.conversations.filter((c) => c.collection === store.collection);
  $("#conversations").replaceChildren(...list.map((c) => h("li", {},
    h("button", { type: "button", title: c.title, "aria-current": state.conversation && c.id === state.conversation.id ? "true" : "false",
      onclick: () => { state.conversation = c; renderTranscript(); renderConversations(); } }, c.title || "(untitled)"))));
  if (!list.length) $("#conversations").replaceChildren(h("li.muted", { text: "None yet." }));
}

function renderTranscript() {
  $("#transcript").replaceChildren(...state.conversation.turns.map((t) => turnView(t)));
}

function turnView(turn) {
  const answer = h("div.a", { "aria-label": "Answer", text: turn.answer || "" });
  const notes = h("p.notes");
  const cites = h("ul.citations", { "aria-label": "Sources" });
  const li = h("li.turn", {}, h("div.q", { text: turn.question }), answer, notes, cites);
  li._answer = answer; li._notes = notes; li._cites = cites;
  fillTurn(li, turn);
  return li;
}

function fillTurn(li, turn) {
  const notes = [];
  if (turn.degraded && turn.degraded.length) notes.push(`Degraded: answered without ${turn.degraded.join(", ")}.`);
  if (turn.inferred) notes.push("The model cited nothing; ragd attributed the answer to the passage that holds its words.");
  if (turn.kind) notes.push(KIND_NOTES[turn.kind] || "");
  if (turn.error) notes.push(turn.error);
  li._notes.textContent = notes.join(" ").trim();
  li.dataset.kind = turn.kind || "";
  li._cites.replaceChildren(...(turn.citations || []).map((c) => h("li", {},
    h("button", { type: "button", "data-doc": c.doc_id, onclick: () => showPassage(turn.collection, c.doc_id, c.chunk_index ?? 0, c.title) },
      `[${c.n}] ${c.title || c.doc_id}${c.closest ? " (closest, not a source)" : ""}`),
    evidenceQuote(c))));
}

const KIND_NOTES = {
  generated: "Written by the generator and checked against the highlighted evidence.",
  extractive: "Said from the highlighted evidence.",
  not_found: "The documents do not answer this; the passages below are the closest ones, not sources.",
};

/** The evidence span of a citation, highlighted (offsets count characters, not UTF-16 units). */
function evidenceQuote(c) {
  if (!c.evidence || typeof c.text !== "string") return "";
  const chars = Array.from(c.text);
  const { char_start: a, char_end: b } = c.evidence;
  if (!(a >= 0 && b > a && b <= chars.length)) return "";
  return h("blockquote.evidence", {}, h("mark", { text: chars.slice(a, b).join("") }));
}

/** Asks with `stream: true` and reads the server-sent events from the response body
 *  (EventSource cannot POST or send an Authorization header). */
async function ask() {
  const q = $("#question").value.trim();
  const c = store.collection;
  if (!q || !c || $("#ask-button").disabled) return;
  $("#question").value = "";
  const conv = state.conversation;
  if (!conv.title) conv.title = q.slice(0, 80);
  const turn = { question: q, answer: "", citations: [], degraded: [], collection: c };
  conv.turns.push(turn);
  const li = turnView(turn);
  $("#transcript").append(li);
  li._answer.setAttribute("aria-busy", "true");
  $("#ask-button").disabled = true;
  try {
    const res = await fetch(`/api/v1/collections/${enc(c)}/query`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders() },
      body: JSON.stringify({ question: q, stream: true, conversation_id: conv.id }),
    });
    if (!res.ok) throw await errorOf(res);
    await readEvents(res.body, (event, data) => {
      if (event === "retrieval") {
        turn.degraded = data.degraded || [];
      } else if (event === "token") {
        turn.answer += data.text;
        li._answer.textContent = turn.answer;
      } else if (event === "done") {
        turn.answer = data.answer;
        turn.citations = data.citations;
        turn.degraded = data.degraded;
        turn.inferred = data.citations_inferred;
        turn.kind = data.answer_kind;
        li._answer.textContent = turn.answer;
      } else if (event === "error") {
        turn.error = `${data.error.message} (${data.error.code})`;
      }
      fillTurn(li, turn);
    });
  } catch (e) {
    turn.error = String(e);
    fillTurn(li, turn);
  } finally {
    li._answer.removeAttribute("aria-busy");
    $("#ask-button").disabled = false;
    saveConversation();
    $("#question").focus();
  }
}

async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += (data ? "\n" : "") + line.slice(5).replace(/^ /, "");
      }
      if (data) onEvent(event, JSON.parse(data));
    }
  }
}

// ---- status ----------------------------------------------------------------------------------

function wireStatus() {
  $("#status-refresh").addEventListener("click", () => loadStatus().catch((e) => toast(String(e), true)));
}

async function loadStatus() {
  const isAdmin = state.me.role === "admin";
  const [ready, me, jobs, status] = await Promise.all([
    fetch("/health/ready").then((r) => r.json()),
    api("/api/v1/me"),
    api("/api/v1/jobs?limit=20"),
    isAdmin ? api("/api/v1/status").catch(() => null) : Promise.resolve(null),
  ]);
  state.me = me;
  $("#ready-line").replaceChildren(badge(ready.status), status ? ` version ${status.version}, up ${fmtDuration(status.uptime_s)}` : "");
  $("#checks-table tbody").replaceChildren(...Object.entries(ready.checks).map(([name, c]) => h("tr", { "data-check": name },
    h("th", { scope: "row", text: name }),
    h("td", {}, badge(c.status), c.error ? h("div.muted", { text: c.error }) : ""),
    h("td.num", { text: c.latency_ms === undefined ? "–" : `${c.latency_ms} ms` }),
    h("td", {}, c.breaker ? [badge(c.breaker.state), h("span.muted", { text: breakerDetail(c.breaker) })] : h("span.muted", { text: "none" })),
  )));

  const limits = $("#limits");
  if (!me.rate_limits) {
    limits.replaceChildren(h("p.muted", { text: me.auth_enabled ? "No rate limits apply to this key." : "Rate limits apply to signed-in callers; authentication is off." }));
  } else {
    limits.replaceChildren(...Object.entries(me.rate_limits).map(([cls, a]) => h("div.meter", {},
      h("label", { for: `limit-${cls}`, text: `${cls}: ${a.remaining} of ${a.limit} left (per ${a.period_s} s${a.remaining < a.limit ? `, whole again in ${a.reset_s} s` : ""})` }),
      h("progress", { id: `limit-${cls}`, max: a.limit, value: a.remaining }))));
  }

  const totals = $("#totals");
  if (status && status.totals) {
    const t = status.totals;
    const hit = t.cache_lookups ? `${Math.round((100 * t.cache_hits) / t.cache_lookups)} %` : "–";
    const rows = [["Requests", t.requests], ["Client errors (4xx)", t.client_errors], ["Server errors (5xx)", t.server_errors],
      ["Degraded responses", t.degraded_responses], ["Rate-limited", t.rate_limited], ["Shed (overload, timeout)", t.shed],
      ["Query cache hit ratio", hit], ["Jobs done / failed", `${t.jobs_done} / ${t.jobs_failed}`],
      ["Jobs queued / running", `${status.jobs.queued} / ${status.jobs.running}`]];
    totals.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
  } else {
    totals.replaceChildren(h("dt", { text: "Service-wide figures" }), h("dd", { text: "for the operator (admins of the default tenant)" }));
  }

  $("#jobs-table tbody").replaceChildren(...jobs.jobs.map((j) => h("tr", { "data-job": j.id },
    h("td", {}, h("code", { text: j.id.slice(0, 8) })),
    h("td", { text: j.collection }),
    h("td", {}, badge(j.status)),
    h("td.num", { text: j.progress && j.progress.total ? `${j.progress.done ?? 0}/${j.progress.total}` : "" }),
    h("td", { text: when(j.created_at) }),
    h("td", { text: j.error ? j.error.message : "" }),
  )));
  if (!jobs.jobs.length) $("#jobs-table tbody").replaceChildren(h("tr", {}, h("td", { colspan: "6", class: "muted", text: "No jobs yet." })));

  clearInterval(state.statusTimer);
  // Every 15 s while the page shows (the jobs listing counts against the query limit).
  state.statusTimer = setInterval(() => {
    if (!$("#page-status").hidden && document.visibilityState === "visible") loadStatus().catch(() => {});
  }, 15000);
}

function breakerDetail(b) {
  const parts = [];
  if (b.calls_in_window && b.failure_rate !== undefined) parts.push(`failures ${Math.round(b.failure_rate * 100)} %`);
  if (b.calls_in_window) parts.push(`${b.calls_in_window} calls`);
  if (b.rejections) parts.push(`rejected ${b.rejections}`);
  if (b.retry_after_ms !== undefined) parts.push(`probe in ${Math.ceil(b.retry_after_ms / 1000)} s`);
  return parts.length ? ` ${parts.join(", ")}` : "";
}

function fmtDuration(s) {
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

boot();
