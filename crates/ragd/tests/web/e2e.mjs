// End-to-end test of ragd's web dashboard in a real browser (Debian's Chromium, headless, driven by
// playwright-core). Run by crates/ragd/tests/it/web.rs against a real ragd with authentication on:
//   RAGD_URL=http://127.0.0.1:PORT RAGD_KEY=ragd_k_... ARTIFACTS=dir node e2e.mjs
// Every step that fails throws; the process exits 1 with the step's name. Screenshots of each page
// (wide and narrow) are written to ARTIFACTS.
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const base = process.env.RAGD_URL;
const key = process.env.RAGD_KEY;
const artifacts = process.env.ARTIFACTS || "web-artifacts";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
if (!base || !key) throw new Error("set RAGD_URL and RAGD_KEY");
mkdirSync(artifacts, { recursive: true });

const LIGHTHOUSE = `# Harbour Point lighthouse

The Harbour Point lighthouse was built in 1874 from granite quarried on the island.
Its lamp is visible for twenty-two nautical miles on a clear night.

## Keepers

Three keepers lived at the station until the light was automated in 1962.`;
const BAKERY = `The corner bakery opens at six in the morning and sells rye bread, cinnamon buns and
sourdough loaves. On Sundays it closes at noon.`;
const QUESTION = "When was the Harbour Point lighthouse built?";

let step = "start";
const problems = [];
const log = (...a) => console.log(`[e2e] ${step}:`, ...a);
function check(cond, what) { if (!cond) throw new Error(`${step}: ${what}`); }

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error" && !/status of 40[14]/.test(m.text())) problems.push(`console: ${m.text()}`); });
  page.on("dialog", (d) => d.accept()); // the delete confirmations
  const shot = async (name) => { await page.screenshot({ path: join(artifacts, `${name}.png`), fullPage: true }); };

  // ---- sign in ----
  step = "sign in";
  await page.goto(base + "/");
  await page.locator("#page-signin").waitFor();
  await a11y(page);
  await shot("signin");
  await page.fill("#api-key", "ragd_k_000000000000_" + "0".repeat(64));
  await page.click("#signin-form button[type=submit]");
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent.length > 0);
  log("a wrong key is refused:", await page.textContent("#signin-error"));
  await page.fill("#api-key", key);
  await page.click("#signin-form button[type=submit]");
  await page.locator("#page-collections").waitFor();
  check((await page.textContent("#who")).includes("admin"), "the header shows the signed-in role");

  // ---- collections ----
  step = "create a collection";
  await page.fill("#new-collection", "handbook");
  await page.click("#create-form button[type=submit]");
  await page.locator('#collections-table tr[data-collection="handbook"]').waitFor();
  await a11y(page);
  await shot("collections");

  // ---- upload: one file dropped, one chosen ----
  step = "upload";
  await page.click('#collections-table tr[data-collection="handbook"] a');
  await page.locator("#page-documents").waitFor();
  const dt = await page.evaluateHandle((text) => {
    const d = new DataTransfer();
    d.items.add(new File([text], "lighthouse.md", { type: "text/markdown" }));
    return d;
  }, LIGHTHOUSE);
  await page.dispatchEvent("#dropzone", "drop", { dataTransfer: dt });
  await page.setInputFiles("#file-input", { name: "bakery.txt", mimeType: "text/plain", buffer: Buffer.from(BAKERY) });
  for (const f of ["lighthouse.md", "bakery.txt"]) {
    const row = page.locator(`#uploads li[data-file="${f}"]`);
    await row.waitFor();
    await page.waitForFunction((f) => {
      const s = document.querySelector(`#uploads li[data-file="${f}"]`)?.dataset.state;
      return s === "done" || s === "failed";
    }, f, { timeout: 120_000 });
    const state = await row.getAttribute("data-state");
    check(state === "done", `${f}'s job finished done (was ${state}: ${await row.textContent()})`);
    check(Number(await row.locator("progress").getAttribute("value")) === 100 || (await row.locator("progress").evaluate((p) => p.value)) === 100, `${f}'s upload reached 100 %`);
    log(`${f}: job ${await row.getAttribute("data-job")} done`);
  }
  await page.locator('#documents-table tr[data-doc="lighthouse.md"]').waitFor();
  await page.locator('#documents-table tr[data-doc="bakery.txt"]').waitFor();
  await a11y(page);
  await shot("documents");

  step = "search and open a passage";
  await page.fill("#search-query", "lighthouse granite");
  await page.click("#search-form button[type=submit]");
  await page.locator("#search-results li button").first().waitFor();
  check((await page.textContent("#search-results li button >> nth=0")).includes("lighthouse"), "the best passage is the lighthouse's");
  await page.click("#search-results li button >> nth=0");
  await page.locator("#passage .chunk.cited").waitFor();
  check((await page.textContent("#passage .chunk.cited")).includes("1874"), "the passage opens with its text");
  await page.click("#passage-close");

  // ---- keyboard: from the content (where the app puts focus after each navigation), reach the
  // Chat link with Shift+Tab and open it with Enter; the focus is visible ----
  step = "keyboard navigation";
  await page.goto(base + "/#/collections");
  await page.locator("#page-collections").waitFor();
  await page.waitForFunction(() => document.activeElement?.id === "main");
  let reached = false;
  for (let i = 0; i < 15 && !reached; i++) {
    await page.keyboard.press("Shift+Tab");
    reached = await page.evaluate(() => document.activeElement?.dataset?.page === "chat");
  }
  check(reached, "the Chat link is reachable with the keyboard");
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  check(outline !== "none", `the focused link shows a focus outline (outline-style ${outline})`);
  await page.keyboard.press("Enter");
  await page.locator("#page-chat").waitFor();

  // ---- chat: the answer streams, a citation opens the right passage ----
  step = "ask";
  const first = await ask(page, QUESTION);
  check(first.partials >= 2, `the answer grew while it streamed (${first.partials} lengths seen before the end)`);
  check(first.answer.length > 0, "an answer came");
  log(`answer (${first.partials} lengths seen while streaming): ${first.answer.slice(0, 160)}`);
  const cite = page.locator('#transcript li.turn >> nth=-1 >> .citations button[data-doc="lighthouse.md"]');
  check((await cite.count()) > 0, `the answer cites lighthouse.md (cited: ${first.cited.join(", ")})`);
  const mark = page.locator("#transcript li.turn >> nth=-1 >> .citations .evidence mark");
  check((await mark.count()) > 0 && (await mark.first().textContent()).includes("1874"), "the cited evidence is highlighted under its source");
  check(/evidence/.test(first.notes || ""), `the answer says how it was made (${first.notes})`);
  await cite.first().click();
  await page.locator("#passage .chunk.cited").waitFor();
  const passage = await page.textContent("#passage .chunk.cited");
  check(passage.includes("1874"), `the cited passage is the lighthouse's (${passage.slice(0, 80)})`);
  check((await page.textContent("#passage-title")).toLowerCase().includes("lighthouse"), "the passage dialog names its document");
  await a11y(page);
  await shot("chat-citation");
  await page.click("#passage-close");
  await shot("chat");
  const history = await page.locator("#conversations li button").count();
  check(history === 1, `the conversation is in the history (${history})`);

  // ---- status ----
  step = "status";
  await page.click('#nav a[data-page="status"]');
  await page.locator('#checks-table tr[data-check="vector_store"]').waitFor();
  await page.locator('#checks-table tr[data-check="embedder"]').waitFor();
  check((await page.textContent("#limits")).includes("query"), "the key's rate limits are shown");
  check(await page.locator("#limit-query").count() === 1, "the query limit has a meter");
  const doneJobs = await page.locator("#jobs-table tbody tr .badge.done").count();
  check(doneJobs >= 2, `recent jobs list both uploads as done (${doneJobs})`);
  check((await page.textContent("#totals")).includes("Requests"), "key figures are shown");
  await a11y(page);
  await shot("status");

  // ---- delete the document: gone from the list and from answers ----
  step = "delete";
  await page.click('#nav a[data-page="documents"]');
  await page.locator('#documents-table tr[data-doc="lighthouse.md"]').waitFor();
  await page.click('#documents-table tr[data-doc="lighthouse.md"] button');
  await page.locator('#documents-table tr[data-doc="lighthouse.md"]').waitFor({ state: "detached" });
  await page.reload();
  await page.locator('#documents-table tr[data-doc="bakery.txt"]').waitFor();
  check(await page.locator('#documents-table tr[data-doc="lighthouse.md"]').count() === 0, "the document stays gone after a reload");
  await page.click('#nav a[data-page="chat"]');
  await page.locator("#page-chat").waitFor();
  await page.click("#new-conversation");
  const after = await ask(page, QUESTION);
  check(!after.cited.includes("lighthouse.md"), `the deleted document is cited no more (cited: ${after.cited.join(", ")})`);
  log(`after the delete, cited: ${after.cited.join(", ") || "nothing"}`);
  check(await page.locator("#conversations li button").count() === 2, "both conversations are in the history");
  await page.click("#conversations li button >> nth=1");
  check((await page.textContent("#transcript")).includes(first.answer.slice(0, 20)), "an earlier conversation can be reopened");

  // ---- narrow screen: every page fits without sideways scrolling ----
  step = "narrow screen";
  await page.setViewportSize({ width: 390, height: 844 });
  for (const p of ["collections", "documents", "chat", "status"]) {
    await page.click(`#nav a[data-page="${p}"]`);
    await page.locator(`#page-${p}`).waitFor();
    await page.waitForTimeout(300);
    const [overflow, culprits] = await page.evaluate(() => {
      const wide = [...document.querySelectorAll("body *")]
        .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1 && !e.closest(".table-wrap, .skip"))
        .slice(-3)
        .map((e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}.${e.className} (${Math.round(e.getBoundingClientRect().right)} px)`);
      return [document.documentElement.scrollWidth - window.innerWidth, wide];
    });
    check(overflow <= 1, `${p} fits a 390 px screen (overflows by ${overflow} px: ${culprits.join(", ")})`);
    await shot(`${p}-narrow`);
  }

  // ---- delete the collection ----
  step = "delete the collection";
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.click('#nav a[data-page="collections"]');
  await page.click('#collections-table tr[data-collection="handbook"] button');
  await page.locator('#collections-table tr[data-collection="handbook"]').waitFor({ state: "detached" });
  await page.locator("#collections-empty").waitFor();

  step = "console";
  check(problems.length === 0, `no script errors or CSP violations:\n${problems.join("\n")}`);
  console.log(`[e2e] ok: screenshots in ${artifacts}`);
} catch (e) {
  console.error(`[e2e] FAILED at ${step}: ${e.message}`);
  if (problems.length) console.error(problems.join("\n"));
  process.exitCode = 1;
} finally {
  await browser.close();
}

/** Asks in the chat and records how the answer grew: renders with text while still busy. */
async function ask(page, question) {
  const before = await page.locator("#transcript li.turn").count();
  await page.fill("#question", question);
  await page.evaluate(() => {
    // Distinct lengths of the answer while it is still marked busy: a streamed answer grows
    // through several; one delivered whole has one.
    window.__lengths = new Set();
    const obs = new MutationObserver(() => {
      const a = [...document.querySelectorAll("#transcript li.turn .a")].pop();
      if (a && a.getAttribute("aria-busy") === "true" && a.textContent.length > 0) window.__lengths.add(a.textContent.length);
    });
    obs.observe(document.querySelector("#transcript"), { subtree: true, childList: true, characterData: true });
    window.__obs = obs;
  });
  await page.keyboard.press("Enter");
  await page.waitForFunction((n) => {
    const turns = document.querySelectorAll("#transcript li.turn");
    return turns.length > n && !turns[turns.length - 1].querySelector(".a").hasAttribute("aria-busy");
  }, before, { timeout: 180_000 });
  const turn = page.locator("#transcript li.turn >> nth=-1");
  const answer = await turn.locator(".a").textContent();
  const notes = await turn.locator(".notes").textContent();
  const cited = await turn.locator(".citations button").evaluateAll((bs) => bs.map((b) => b.dataset.doc));
  const partials = await page.evaluate(() => { window.__obs.disconnect(); return window.__lengths.size; });
  if (notes) log(`notes: ${notes}`);
  return { answer, cited, partials, notes };
}

/** Accessibility checks on what is visible: every field has a label, every button a name, text has
 *  a contrast of at least 4.5:1 against its background (WCAG AA). */
async function a11y(page) {
  const issues = await page.evaluate(() => {
    const out = [];
    const visible = (el) => el.offsetParent !== null || el.getClientRects().length > 0;
    for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
      if (!visible(el) || el.hidden) continue;
      if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby")) out.push(`unlabelled field #${el.id || el.name}`);
    }
    for (const el of document.querySelectorAll("button, a[href], [role=button]")) {
      if (!visible(el)) continue;
      const name = (el.getAttribute("aria-label") || el.textContent || "").trim();
      if (!name) out.push(`nameless control ${el.outerHTML.slice(0, 80)}`);
    }
    const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
      }
      return [255, 255, 255];
    };
    for (const el of document.querySelectorAll("body *")) {
      if (!visible(el) || el.closest("[hidden]")) continue;
      const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own) continue;
      const s = getComputedStyle(el);
      if (s.visibility === "hidden" || Number(s.opacity) < 1 || el.disabled) continue;
      const [l1, l2] = [lum(rgb(s.color)), lum(background(el))].sort((a, b) => b - a);
      const ratio = (l1 + 0.05) / (l2 + 0.05);
      if (ratio < 4.5) out.push(`contrast ${ratio.toFixed(2)}:1 for "${el.textContent.trim().slice(0, 30)}" (${el.tagName.toLowerCase()}.${el.className})`);
    }
    return out;
  });
  check(issues.length === 0, `accessibility:\n${issues.join("\n")}`);
}
