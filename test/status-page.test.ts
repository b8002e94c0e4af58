/**
 * The operator's status page (issue 8), in a real headless Chromium driven by playwright-core,
 * against real `ouro node start` processes: the page loads with its charts (uPlot, served by the
 * node: no internet), lists the members with their ledger figures, shows a member killed with
 * SIGKILL as `dead` within the documented time (docs/operations.md: deadAfterMs plus one
 * heartbeat and one page refresh), and shows the repair that follows (cluster-wide, from the ledger).
 *
 * Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it when missing); skipped,
 * saying so, where it is not installed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterEach, describe, expect, it } from 'vitest';
import { pseudoRandom, tempDir } from './helpers.js';
import { FAST, type NodeProc, converged, dbApi, founderWithDb, heldBlocks, joinKeyless, keyFile, waitFor } from './cluster-harness.js';

const CHROMIUM = process.env.OURO_CHROMIUM ?? '/usr/bin/chromium';
const hasChromium = fs.existsSync(CHROMIUM);
if (!hasChromium) console.warn(`status page test skipped: no Chromium at ${CHROMIUM} (install Debian's chromium, as .ci/run does, or set OURO_CHROMIUM)`);

const REFRESH_MS = 500;
let browser: Browser | undefined;
afterEach(async () => {
  await browser?.close();
  browser = undefined;
});

const number = async (page: import('playwright-core').Page, id: string) => Number(await page.textContent(`#${id}`));

describe.skipIf(!hasChromium)('status page', () => {
  it('shows the members, a killed member going dead within the documented time, and the repair after it', async () => {
    const key = keyFile();
    const ledger = ['--ledger-interval-ms', '500', '--ledger-sync-ms', '300'];
    const w = await founderWithDb(key, ['--replication-factor', '2', ...ledger]);
    const ks: NodeProc[] = [await joinKeyless(w, ledger), await joinKeyless(w, ledger), await joinKeyless(w, ledger)];
    const all = [w, ...ks];
    await waitFor(() => converged(all, all.map((n) => n.peerId)), 20_000, 'four members');
    for (let i = 0; (await heldBlocks(w)).length < 6; i++) {
      await dbApi.put(w, pseudoRandom(`page-${i}`, 150_000), { key: `page/${i}` });
      await dbApi.json(w, '/db/flush', 'POST', { replicas: 2 });
    }

    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
    const page = await browser.newPage();
    const failed: string[] = [];
    page.on('requestfailed', (r) => failed.push(r.url()));
    page.on('pageerror', (e) => failed.push(String(e)));
    await page.goto(`${w.run.admin}/?refresh=${REFRESH_MS}`);
    await page.waitForSelector('#members tbody tr', { timeout: 10_000 });
    await waitFor(async () => (await page.$$('#members tbody tr[data-state="alive"]')).length === 4, 10_000, 'four alive rows');
    // Charts drawn by uPlot (served by the node), and the ledger's figures in the table.
    expect(await page.$$('.uplot canvas')).toHaveLength(4);
    await waitFor(async () => Number(await page.textContent(`#members tbody tr[data-peer="${w.peerId}"] td.blocks`)) >= 6, 20_000, 'writer blocks from the ledger');
    expect(await page.textContent('#factor')).toBe('2');

    const victim = (await Promise.all(ks.map(async (k) => ({ k, n: (await heldBlocks(k)).length })))).sort((x, y) => y.n - x.n)[0]!.k;
    // Repair is done by whichever holder gets there first: the cluster-wide figure (the ledger's
    // bytes served for repair) shows it whoever did it.
    const servedBefore = Number(await page.getAttribute('#repair-cluster', 'data-bytes'));
    await victim.kill9();
    // Documented bound: deadAfterMs + one heartbeat interval + one refresh; a second refresh as slack for a loaded machine.
    await page.waitForSelector(`#members tbody tr[data-peer="${victim.peerId}"][data-state="dead"]`, { timeout: FAST.deadAfterMs + FAST.intervalMs + 2 * REFRESH_MS + 1000 });
    expect(await page.textContent(`#members tbody tr[data-peer="${victim.peerId}"] td.state`)).toContain('dead');
    expect(await page.textContent('#member-states')).toContain('1 dead');

    // Repair: the dead member's blocks are copied to the others after the grace, and the page counts them.
    await waitFor(async () => Number(await page.getAttribute('#repair-cluster', 'data-bytes')) > servedBefore, 30_000, 'repair progress on the page');
    await waitFor(async () => (await number(page, 'under-replicated')) === 0, 30_000, 'no block under-replicated on the page');
    const shot = path.join(tempDir(), 'status.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(fs.statSync(shot).size).toBeGreaterThan(10_000);
    if (process.env.OURO_KEEP_SCREENSHOT) fs.copyFileSync(shot, process.env.OURO_KEEP_SCREENSHOT);
    expect(failed).toEqual([]);
  }, 120_000);
});
