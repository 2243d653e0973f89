// The console page in a real browser: Debian's /usr/bin/chromium, headless, driven by the
// pinned playwright-core (nothing is downloaded). Run by tests/integration/test_console_browser.py
// against a running stack; it does what an operator does and writes what it saw to
// OUT/result.json (the Python side asserts on it and on what reached the broker):
//   1. open the page with the token in the URL fragment; the fleet table fills and its values change
//   1b. click dev-0001 in the fleet table: the Shadows table shows its shadow (desired,
//      reported, delta) and no other thing's
//   2. write OUT/ready, then wait for the alert the Python side injects (a temperature spike):
//      record when the row appeared (page clock) and when the gateway raised it
//   3. in the rule editor: a broken rule is refused with line/column, a good one tests and saves
//   4. a full-page screenshot: OUT/console.png
// Usage: node console_check.js URL TOKEN OUTDIR ALERT_THING NEW_RULE_NAME
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const [url, token, out, alertThing, ruleName] = process.argv.slice(2);
const result = { steps: [] };
const save = () => fs.writeFileSync(path.join(out, "result.json"), JSON.stringify(result, null, 1));
const step = (name, extra = {}) => {
  result.steps.push(Object.assign({ name, at_ms: Date.now() }, extra));
  save();
};

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "tg-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1400, height: 1100 },
    timeout: 60000,
  });
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    const requests = [];
    page.on("request", (r) => requests.push(r.url()));
    page.on("pageerror", (e) => step("pageerror", { error: String(e) }));
    await page.goto(`${url}/#token=${encodeURIComponent(token)}`);
    await page.waitForFunction(() => window.tg && window.tg.ready, null, { timeout: 30000 });
    result.address_bar = page.url();
    step("loaded");

    // values update: the fleet's latest values change while the simulator runs
    await page.waitForSelector("#fleet tbody tr[data-thing]", { timeout: 20000 });
    const snap = () => page.$$eval("#fleet tbody tr[data-thing] b.value", (bs) => bs.map((b) => b.textContent).join("|"));
    const first = await snap();
    await page.waitForFunction((f) => {
      const now = [...document.querySelectorAll("#fleet tbody tr[data-thing] b.value")].map((b) => b.textContent).join("|");
      return now && now !== f;
    }, first, { timeout: 20000 });
    result.things_shown = await page.$$eval("#fleet tbody tr[data-thing]", (rs) => rs.map((r) => r.dataset.thing));
    result.stats_events = await page.evaluate(() => window.tg.events);
    step("values_updated", { before: first, after: await snap() });

    // the shadows of one thing: a click on its name in the fleet table
    await page.click('#fleet tbody tr[data-thing="dev-0001"] td.thing');
    const shadowRow = '#shadows tbody tr[data-shadow="dev-0001|"]';
    await page.waitForFunction((s) => {
      const rows = [...document.querySelectorAll("#shadows tbody tr[data-shadow]")];
      return document.querySelector(s) && rows.every((r) => r.dataset.shadow.startsWith("dev-0001|"));
    }, shadowRow, { timeout: 15000 });
    result.shadow_filter = await page.inputValue("#s-thing");
    result.shadow_rows = await page.$$eval("#shadows tbody tr[data-shadow]", (rs) => rs.map((r) =>
      [...r.children].map((td) => td.textContent)));
    step("shadows_shown", { rows: result.shadow_rows });

    // the alert: the Python side starts the spike once it sees this file
    fs.writeFileSync(path.join(out, "ready"), String(Date.now()));
    const sel = `#alerts tbody tr[data-key$="|${alertThing}"]`;
    await page.waitForSelector(sel, { timeout: 60000 });
    const row = await page.$eval(sel, (tr) => ({ key: tr.dataset.key, shown_ms: Number(tr.dataset.shownMs),
      raised_ms: Number(tr.dataset.raisedMs), text: tr.textContent }));
    result.alert = row;
    step("alert_shown", row);

    // the rule editor: a broken rule first, then a good one
    await page.click("#rule-new");
    await page.fill("#ed-name", ruleName);
    await page.fill("#ed-text", '{\n  "sql": "SELECT temperature, topic(2) AS thing FROM \'devices/+/telemetry\' WHERE temperature >",\n  "actions": [{"republish": {"topic": "alerts/console/${topic(2)}", "qos": 0}}]\n}\n');
    await page.click("#ed-validate");
    await page.waitForSelector("#ed-result.bad", { timeout: 10000 });
    result.broken_rule_message = await page.textContent("#ed-result");
    step("broken_rule_refused", { message: result.broken_rule_message });
    await page.fill("#ed-text", '{\n  "description": "written in the console page",\n  "sql": "SELECT temperature, topic(2) AS thing FROM \'devices/+/telemetry\' WHERE temperature > -100",\n  "actions": [{"republish": {"topic": "alerts/console/${topic(2)}", "qos": 0}}]\n}\n');
    await page.fill("#ed-topic", "devices/dev-0001/telemetry");
    await page.click("#ed-test");
    await page.waitForFunction(() => /matched/.test(document.getElementById("ed-result").textContent), null, { timeout: 10000 });
    result.test_output = await page.textContent("#ed-result");
    step("rule_tested", { output: result.test_output });
    await page.click("#ed-save");
    await page.waitForFunction(() => /Saved/.test(document.getElementById("ed-result").textContent), null, { timeout: 15000 });
    result.saved_ms = Date.now();
    step("rule_saved", { message: await page.textContent("#ed-result") });
    await page.waitForSelector(`#rules tbody tr[data-rule="${ruleName}"]`, { timeout: 15000 });
    // its matches count climbs on the page as messages arrive
    await page.waitForFunction((n) => {
      const tr = document.querySelector(`#rules tbody tr[data-rule="${n}"]`);
      return tr && Number(tr.children[3].textContent) > 0;
    }, ruleName, { timeout: 20000 });
    step("rule_matching");

    await page.waitForTimeout(300); // let the last poll paint
    await page.screenshot({ path: path.join(out, "console.png"), fullPage: true });
    result.foreign_requests = requests.filter((u) => !u.startsWith(url));
    step("screenshot");
    result.ok = true;
  } finally {
    save();
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  result.ok = false;
  result.error = String(e && e.stack ? e.stack : e);
  save();
  process.exit(1);
});
