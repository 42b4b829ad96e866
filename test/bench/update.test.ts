/** bench/update's own logic, without VMs: its command line, what it reads from a console and a proxy, its arithmetic. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  buildReport,
  consoleSteps,
  expectedBlobs,
  GOAL_RATIO,
  parseBenchArgs,
  type ReinstallRun,
  renderReport,
  type Served,
  servedBytes,
  tagPolls,
  type UpdateRun,
} from '../../bench/update/report.ts';

test('the command line: ROUNDS and --json FILE, anything else refused with the usage', () => {
  assert.deepEqual(parseBenchArgs([]), { rounds: 3, webExitsOnTerm: false });
  assert.deepEqual(parseBenchArgs(['5']), { rounds: 5, webExitsOnTerm: false });
  assert.deepEqual(parseBenchArgs(['--json', 'out.json', '1']), {
    rounds: 1,
    json: 'out.json',
    webExitsOnTerm: false,
  });
  assert.deepEqual(parseBenchArgs(['2', '--json=r.json', '--web-exits-on-term']), {
    rounds: 2,
    json: 'r.json',
    webExitsOnTerm: true,
  });
  for (const bad of [
    ['0'],
    ['1.5'],
    ['x'],
    ['101'],
    ['1', '2'],
    ['--rounds', '3'],
    ['--json'],
    ['--json='],
    ['--web-exits-on-term=yes'],
  ])
    assert.throws(() => parseBenchArgs(bad), /usage: node bench\/update\.ts/, bad.join(' '));
});

test("the agent's finished steps are read from its console lines, the first of each name", () => {
  const text = [
    'seal: [ .. ] fetch the update docker://10.0.2.100:4000/device/system:stable',
    '[web] some output (12 ms)',
    'seal: [ ok ] fetch the update docker://10.0.2.100:4000/device/system:stable (2345 ms): 3 new blobs, 1234 bytes',
    'seal: [FAIL] verify the update: no (9 ms)',
    'seal: [ ok ] verify the update (812 ms): version 8, sha256:ab, every layer verified',
    'seal: [ ok ] apply the update (4100 ms): restarted web',
    'seal: [ ok ] apply the update (1 ms): a later one',
  ].join('\n');
  assert.deepEqual(consoleSteps(text), {
    'fetch the update docker://10.0.2.100:4000/device/system:stable': 2345,
    'verify the update': 812,
    'apply the update': 4100,
  });
});

const digest = (c: string) => `sha256:${c.repeat(64)}`;

test('served bytes: blob and manifest GETs apart, repeats of a blob counted (a ranged GET resumes), HEADs only as requests', () => {
  const served = servedBytes([
    { request: `GET /v2/device/system/blobs/${digest('a')}`, status: 200, bytes: 1000 },
    { request: `GET /v2/device/system/blobs/${digest('a')} bytes=500-`, status: 206, bytes: 500 },
    { request: `GET /v2/device/system/blobs/${digest('b')}`, status: 200, bytes: 30 },
    { request: `GET /v2/device/system/blobs/${digest('b')}`, status: 200, bytes: 30 },
    { request: 'GET /v2/device/system/manifests/stable', status: 200, bytes: 700 },
    { request: `GET /v2/device/system/manifests/${digest('c')}`, status: 200, bytes: 300 },
    { request: 'HEAD /v2/device/system/manifests/stable', status: 200, bytes: 0 },
    { request: `HEAD /v2/device/system/blobs/${digest('d')}`, status: 200, bytes: 0 },
    { request: 'GET /v2/', status: 200, bytes: 2 },
    { request: `GET /v2/device/system/referrers/${digest('c')}?artifactType=x`, status: 200, bytes: 40 },
  ]);
  assert.deepEqual(served, {
    blobs: 1560,
    blobRequests: 4,
    manifests: 1000,
    manifestRequests: 2,
    requests: 10,
    perBlob: { [digest('a')]: { gets: 2, bytes: 1500 }, [digest('b')]: { gets: 2, bytes: 60 } },
    repeatedGets: 1,
    repeatedBytes: 30,
  });
});

test("the agent's polls of the tag: their period before publishing, the delay of the first after", () => {
  const poll = (at: number, tag = 'stable', method = 'HEAD') => ({
    request: `${method} /v2/device/system/manifests/${tag}`,
    at,
  });
  const records = [
    poll(1000),
    poll(2100),
    { request: `GET /v2/device/system/blobs/${digest('a')}`, at: 2500 },
    poll(3000, 'v8', 'GET'),
    poll(3100),
    poll(4300, 'stable', 'GET'),
    poll(5000),
  ];
  assert.deepEqual(tagPolls(records, 'stable', 4000), { period: 1.1, delay: 0.3 });
  assert.deepEqual(tagPolls(records, 'stable', 500), { delay: 0.5 });
  assert.deepEqual(tagPolls(records, 'stable', 9000), { period: 1.1 }); // gaps 1.1 1.0 1.2 0.7: timing.ts's median (the upper middle)
  assert.deepEqual(tagPolls([], 'stable', 0), {});
});

test("expected blobs: what the new system's closure has and the old one's lacks, largest first", () => {
  const layer = 'application/vnd.oci.image.layer.v1.tar';
  const config = 'application/vnd.oci.image.config.v1+json';
  const before = new Map([
    [digest('1'), { size: 5000, mediaType: layer }],
    [digest('2'), { size: 100, mediaType: config }],
  ]);
  const after = new Map([
    [digest('1'), { size: 5000, mediaType: layer }],
    [digest('3'), { size: 120, mediaType: config }],
    [digest('4'), { size: 900, mediaType: layer }],
  ]);
  assert.deepEqual(expectedBlobs(before, after), {
    changed: [
      { digest: digest('4'), size: 900, mediaType: layer },
      { digest: digest('3'), size: 120, mediaType: config },
    ],
    changedBytes: 1020,
    whole: [
      { digest: digest('1'), size: 5000, mediaType: layer },
      { digest: digest('4'), size: 900, mediaType: layer },
      { digest: digest('3'), size: 120, mediaType: config },
    ],
    wholeBytes: 6020,
  });
});

// v8 has 10 000 blob bytes; v7 lacks two of its blobs, 1000 bytes.
const expected = expectedBlobs(
  new Map([[digest('1'), { size: 9000, mediaType: 'l' }]]),
  new Map([
    [digest('1'), { size: 9000, mediaType: 'l' }],
    [digest('2'), { size: 900, mediaType: 'l' }],
    [digest('3'), { size: 100, mediaType: 'c' }],
  ]),
);
const served = (blobs: Record<string, number>, manifests = 100, repeated = 0): Served => ({
  blobs: Object.values(blobs).reduce((n, x) => n + x, 0) + repeated,
  blobRequests: Object.keys(blobs).length,
  manifests,
  manifestRequests: 1,
  requests: 2,
  perBlob: Object.fromEntries(Object.entries(blobs).map(([d, n]) => [d, { gets: 1, bytes: n }])),
  repeatedGets: repeated ? 1 : 0,
  repeatedBytes: repeated,
});
const changed = { [digest('2')]: 900, [digest('3')]: 100 };
const whole = { [digest('1')]: 9000, ...changed };
const a = (webUp: number, bytes = 1000, blobs: Record<string, number> = changed): UpdateRun => ({
  publishToDetect: 0.5,
  publishToWebUp: webUp,
  detectToWebUp: webUp - 0.5,
  publishToApplied: webUp + 4,
  detectToApplied: webUp + 3.5,
  agentBytes: bytes,
  agentBlobs: 2,
  served: served(blobs, 100, 100),
  steps: { 'fetch the update': 2000, 'verify the update': 1000 },
  phases: { 'apply: started → up': 1.5 },
  bootOpenWebMs: 300,
  restarted: 'web',
  counterUntouched: true,
  load: 1,
});
const b = (install: number, boot: number): ReinstallRun => ({
  install,
  bootToWebUp: boot,
  bootToComplete: boot + 4,
  webUp: install + boot,
  complete: install + boot + 4,
  served: served(whole, 500, 200),
  steps: { 'start the services': 3000 },
  load: 1,
});
const WEB = 'the demo web';

test('the report: medians with their spread, ratios of the medians and per round, checks and goals', () => {
  const report = buildReport({
    rounds: 3,
    web: WEB,
    expected,
    update: [a(10), a(6), a(8)],
    reinstall: [b(10, 40), b(20, 40), b(10, 30)],
    retries: 1,
  });
  assert.deepEqual(report.summary.update.publishToWebUp, { median: 8, min: 6, max: 10, n: 3 });
  assert.deepEqual(report.summary.reinstall.webUp, { median: 50, min: 40, max: 60, n: 3 });
  const goal = report.summary.ratios[GOAL_RATIO];
  assert.equal(goal.ofMedians, 8 / 50);
  assert.deepEqual(goal.rounds, { median: 0.2, min: 0.1, max: 0.2, n: 3 });
  // The agent's 1000 bytes against the 10 000 distinct bytes served to the install (its 200 repeated aside).
  assert.equal(report.summary.ratios.blobBytesFetched.ofMedians, 0.1);
  assert.equal(report.summary.ratios.blobBytesServed.ofMedians, 1100 / 10_200);
  assert.equal(report.summary.ratios.bytesServed.ofMedians, 1200 / 10_700);
  assert.deepEqual(report.summary.update['step: fetch the update'], {
    median: 2000,
    min: 2000,
    max: 2000,
    n: 3,
  });
  assert.deepEqual(report.checks, {
    agentCountedChanged: true,
    servedChangedSet: true,
    servedWholeSet: true,
    onlyWebRestarted: true,
  });
  assert.deepEqual(report.goals, { timeRatio: 0.16, timeMet: true, bytesMet: true });
  const text = renderReport(report);
  assert.match(text, /web: the demo web; median \[min–max\] of 3 rounds/);
  assert.match(
    text,
    /\| \*\*changed service running again\*\*.* \| 8\.0 s \[6\.0–10\.0\] \| 50\.0 s \[40\.0–60\.0\] \| 0\.160× \[0\.100–0\.200\] \|/,
  );
  assert.match(text, /blobs served again .* \| 0\.1 KiB \(100\) \| 0\.2 KiB \(200\) \|/);
  assert.match(text, /agent step "fetch the update" \(ms\) \| 2000 \[2000–2000\] \|/);
  assert.match(text, /crashed or hung guests run again: 1/);
  assert.match(text, /0\.160× — met; only the changed layers' bytes: met/);
  // JSON round-trips (what --json writes).
  assert.deepEqual(JSON.parse(JSON.stringify(report)), report);
});

test('the report says when a goal is missed or a check fails', () => {
  const report = buildReport({
    rounds: 1,
    web: WEB,
    expected,
    update: [{ ...a(30, 1200, whole), restarted: 'web, counter' }],
    reinstall: [b(10, 40)],
    retries: 0,
  });
  assert.deepEqual(report.checks, {
    agentCountedChanged: false,
    servedChangedSet: false,
    servedWholeSet: true,
    onlyWebRestarted: false,
  });
  assert.equal(report.goals.timeMet, false);
  assert.equal(report.goals.bytesMet, false);
  const text = renderReport(report);
  assert.match(text, /0\.600× — NOT met; only the changed layers' bytes: NOT met/);
  assert.match(text, /only web restarted, counter untouched: NO/);
  assert.doesNotMatch(text, /crashed/);
});

test('rounds must pair an update with a re-install', () => {
  assert.throws(
    () =>
      buildReport({ rounds: 2, web: WEB, expected, update: [a(1), a(2)], reinstall: [b(1, 1)], retries: 0 }),
    /2 updates and 1 re-installs/,
  );
  assert.throws(
    () => buildReport({ rounds: 0, web: WEB, expected, update: [], reinstall: [], retries: 0 }),
    /0 updates/,
  );
});
