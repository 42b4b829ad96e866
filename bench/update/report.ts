/**
 * bench/update's arithmetic and presentation, apart from the VMs so that it can be tested: the
 * command line, what the console and the metering proxy tell of one run, medians and spreads,
 * the update ÷ re-install ratios and the tables printed (and the JSON written).
 */
import { parseArgs } from 'node:util';
import { median } from '../timing.ts';

export interface BenchOptions {
  rounds: number;
  /** Where the JSON results go (none: only the tables are printed). */
  json?: string;
  /**
   * The web service (in v7 and v8) runs httpd under a shell that exits on SIGTERM, instead of
   * httpd as the container's PID 1 (which does not handle SIGTERM): shows what stopping the old
   * service costs.
   */
  webExitsOnTerm: boolean;
}

export const USAGE = 'usage: node bench/update.ts [ROUNDS] [--json FILE] [--web-exits-on-term]';

const OPTIONS = { json: { type: 'string' }, 'web-exits-on-term': { type: 'boolean' } } as const;

/** `[ROUNDS] [--json FILE] [--web-exits-on-term]`; ROUNDS defaults to 3. Throws with the usage on anything else. */
export function parseBenchArgs(argv: string[]): BenchOptions {
  let parsed: ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length > 1) throw new Error(`one ROUNDS at most, not ${positionals.join(' ')}\n${USAGE}`);
  const rounds = positionals.length ? Number(positionals[0]) : 3;
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100)
    throw new Error(`ROUNDS is a whole number from 1 to 100, not ${positionals[0]}\n${USAGE}`);
  if (values.json === '') throw new Error(`--json needs a file name\n${USAGE}`);
  return {
    rounds,
    ...(values.json ? { json: values.json } : {}),
    webExitsOnTerm: values['web-exits-on-term'] === true,
  };
}

/** The agent's finished steps on a console: `seal: [ ok ] NAME (N ms)…`, name → ms (the first of each name). */
export function consoleSteps(text: string): Record<string, number> {
  const steps: Record<string, number> = {};
  for (const m of text.matchAll(/^seal: \[ ok \] (.+?) \((\d+) ms\)/gm))
    if (!(m[1]! in steps)) steps[m[1]!] = Number(m[2]);
  return steps;
}

/** What the metering proxy forwarded, by kind. */
export interface Served {
  /** Response bytes of blob GETs (configs and layers). */
  blobs: number;
  blobRequests: number;
  /** Response bytes of manifest GETs (the system, its images, its signatures, and the tag's polls). */
  manifests: number;
  manifestRequests: number;
  /** Requests of any kind (HEADs included). */
  requests: number;
  /** Blob GETs by digest: how many, and their bytes. */
  perBlob: Record<string, { gets: number; bytes: number }>;
  /** Blob GETs (and their bytes) of a digest served before (a ranged GET resumes, it does not repeat). */
  repeatedGets: number;
  repeatedBytes: number;
}

export function servedBytes(records: { request: string; status: number; bytes: number }[]): Served {
  const out: Served = {
    blobs: 0,
    blobRequests: 0,
    manifests: 0,
    manifestRequests: 0,
    requests: records.length,
    perBlob: {},
    repeatedGets: 0,
    repeatedBytes: 0,
  };
  for (const r of records) {
    const [method, url = '', range] = r.request.split(' ');
    if (method !== 'GET') continue;
    const path = url.split('?')[0]!;
    const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path);
    if (blob) {
      const seen = out.perBlob[blob[1]!];
      out.blobs += r.bytes;
      out.blobRequests++;
      if (seen && !range) {
        out.repeatedGets++;
        out.repeatedBytes += r.bytes;
      }
      out.perBlob[blob[1]!] = { gets: (seen?.gets ?? 0) + 1, bytes: (seen?.bytes ?? 0) + r.bytes };
    } else if (/\/manifests\/[^/]+$/.test(path)) {
      out.manifests += r.bytes;
      out.manifestRequests++;
    }
  }
  return out;
}

/**
 * The agent's polls of `tag` (requests of `/manifests/TAG`) among the proxy's records: the median
 * time between two before `publishedMs`, and the delay of the first at or after it (seconds).
 */
export function tagPolls(
  records: { request: string; at: number }[],
  tag: string,
  publishedMs: number,
): { period?: number; delay?: number } {
  const polls = records
    .filter((r) => r.request.split(' ')[1]?.split('?')[0]?.endsWith(`/manifests/${tag}`))
    .map((r) => r.at)
    .sort((x, y) => x - y);
  const before = polls.filter((at) => at < publishedMs);
  const gaps = before.slice(1).map((at, i) => (at - before[i]!) / 1000);
  const after = polls.find((at) => at >= publishedMs);
  return {
    ...(gaps.length ? { period: median(gaps) } : {}),
    ...(after !== undefined ? { delay: (after - publishedMs) / 1000 } : {}),
  };
}

/** One update of the running device, v7 → v8 (seconds are the bench's clock at the console line's arrival). */
export interface UpdateRun {
  /** Publishing (the tag's one manifest PUT answered) → the agent's "update: … is now sha256:…". */
  publishToDetect: number;
  /** The agent's polls of the tag before publishing: the median time between two (s). */
  pollPeriod?: number;
  /** Publishing → the first poll of the tag the registry saw after it (s). */
  publishToPoll?: number;
  /** → the new web's first line (`[web] web 8 up`): the changed service runs again. */
  publishToWebUp: number;
  detectToWebUp: number;
  /** → "update applied … N bytes fetched" (the service stayed up, the system confirmed). */
  publishToApplied: number;
  detectToApplied: number;
  /** The agent's own count of the bytes it fetched, and of the blobs. */
  agentBytes: number;
  agentBlobs: number;
  served: Served;
  /** The agent's update steps (ms, as it printed them). */
  steps: Record<string, number>;
  /** Seconds between console lines within the apply step (see PHASES). */
  phases: Record<string, number>;
  /** The boot before the update: how long its "open the service image web" took (ms): dm-verity opens of one image. */
  bootOpenWebMs?: number;
  restarted: string;
  /** The counter service was not restarted by the update. */
  counterUntouched: boolean;
  /** The host's 1-minute load average when the update was published. */
  load: number;
}

/** One full re-install of v8: `seal install` from the registry, then the first boot of the disk. */
export interface ReinstallRun {
  install: number;
  /** qemu start → the web's first line, and → "boot complete" (the system confirmed). */
  bootToWebUp: number;
  bootToComplete: number;
  /** install + boot to each. */
  webUp: number;
  complete: number;
  served: Served;
  steps: Record<string, number>;
  load: number;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(values: number[]): Spread {
  if (!values.length) throw new Error('no values');
  return { median: median(values), min: Math.min(...values), max: Math.max(...values), n: values.length };
}

export interface ExpectedBlob {
  digest: string;
  size: number;
  mediaType: string;
}

/** What the systems' closures say should travel. */
export interface Expected {
  /** The configs and layers v8 pins and carries that v7 lacks, and their bytes. */
  changed: ExpectedBlob[];
  changedBytes: number;
  /** All the configs and layers v8 pins and carries, and their bytes. */
  whole: ExpectedBlob[];
  wholeBytes: number;
}

/** Expected from the closures (digest → size and media type) of the running system and the new one. */
export function expectedBlobs(
  before: Map<string, { size: number; mediaType: string }>,
  after: Map<string, { size: number; mediaType: string }>,
): Expected {
  const whole = [...after]
    .map(([digest, b]) => ({ digest, size: b.size, mediaType: b.mediaType }))
    .sort((x, y) => y.size - x.size || x.digest.localeCompare(y.digest));
  const changed = whole.filter((b) => !before.has(b.digest));
  const sum = (list: ExpectedBlob[]) => list.reduce((n, b) => n + b.size, 0);
  return { changed, changedBytes: sum(changed), whole, wholeBytes: sum(whole) };
}

export interface BenchReport {
  bench: 'update';
  rounds: number;
  /** How the web service runs (see BenchOptions.webExitsOnTerm). */
  web: string;
  expected: Expected;
  update: UpdateRun[];
  reinstall: ReinstallRun[];
  summary: {
    update: Record<string, Spread>;
    reinstall: Record<string, Spread>;
    /** A ÷ B: of the medians, and the spread of the per-round ratios. */
    ratios: Record<RatioName, { ofMedians: number; rounds: Spread }>;
  };
  checks: {
    /** Every update's own count of the bytes it fetched is the bytes of the blobs v7 lacked. */
    agentCountedChanged: boolean;
    /** Every update was served exactly the blobs v7 lacked (repeats aside: see Served.repeatedBytes). */
    servedChangedSet: boolean;
    /** Every re-install was served exactly the whole system's blobs. */
    servedWholeSet: boolean;
    /** Every update restarted web only and left counter running. */
    onlyWebRestarted: boolean;
  };
  goals: { timeRatio: number; timeMet: boolean; bytesMet: boolean };
  retries: number;
}

const UPDATE_TIMES = [
  'publishToDetect',
  'publishToWebUp',
  'detectToWebUp',
  'publishToApplied',
  'detectToApplied',
] as const;
const REINSTALL_TIMES = ['install', 'bootToWebUp', 'bootToComplete', 'webUp', 'complete'] as const;

/** The ratios A ÷ B reported: name → [the update's measure, the re-install's]. */
const RATIOS = {
  /** The changed service running again: A from publishing; B install + boot. */
  webUp: [(a: UpdateRun) => a.publishToWebUp, (b: ReinstallRun) => b.webUp],
  /** The same, A from the agent's detection of the new digest. */
  webUpFromDetection: [(a: UpdateRun) => a.detectToWebUp, (b: ReinstallRun) => b.webUp],
  /** The system confirmed: A "update applied", B "boot complete". */
  confirmed: [(a: UpdateRun) => a.publishToApplied, (b: ReinstallRun) => b.complete],
  /** Blob bytes fetched: A the agent's count; B the distinct blobs served. */
  blobBytesFetched: [
    (a: UpdateRun) => a.agentBytes,
    (b: ReinstallRun) => b.served.blobs - b.served.repeatedBytes,
  ],
  blobBytesServed: [(a: UpdateRun) => a.served.blobs, (b: ReinstallRun) => b.served.blobs],
  bytesServed: [
    (a: UpdateRun) => a.served.blobs + a.served.manifests,
    (b: ReinstallRun) => b.served.blobs + b.served.manifests,
  ],
} as const;

export type RatioName = keyof typeof RATIOS;

/** The goal's measure: the changed service running again, from publishing, A ÷ B. */
export const GOAL_RATIO: RatioName = 'webUp';

export function buildReport(input: {
  rounds: number;
  web: string;
  expected: Expected;
  update: UpdateRun[];
  reinstall: ReinstallRun[];
  retries: number;
}): BenchReport {
  const { update: a, reinstall: b, expected } = input;
  if (!a.length || a.length !== b.length)
    throw new Error(`${a.length} updates and ${b.length} re-installs: the rounds pair them`);
  const up: Record<string, Spread> = {};
  for (const k of UPDATE_TIMES) up[k] = spread(a.map((r) => r[k]));
  up.agentBytes = spread(a.map((r) => r.agentBytes));
  up.servedBlobs = spread(a.map((r) => r.served.blobs));
  up.servedManifests = spread(a.map((r) => r.served.manifests));
  up.servedRepeated = spread(a.map((r) => r.served.repeatedBytes));
  for (const name of Object.keys(a[0]!.steps)) {
    const v = a.map((r) => r.steps[name]).filter((x): x is number => x !== undefined);
    if (v.length) up[`step: ${name}`] = spread(v);
  }
  for (const name of Object.keys(a[0]!.phases)) {
    const v = a.map((r) => r.phases[name]).filter((x): x is number => x !== undefined);
    if (v.length) up[`phase: ${name}`] = spread(v);
  }
  for (const k of ['pollPeriod', 'publishToPoll'] as const) {
    const v = a.map((r) => r[k]).filter((x): x is number => x !== undefined);
    if (v.length) up[k] = spread(v);
  }
  const open = a.map((r) => r.bootOpenWebMs).filter((x): x is number => x !== undefined);
  if (open.length) up['boot: open the service image web (ms)'] = spread(open);
  const re: Record<string, Spread> = {};
  for (const k of REINSTALL_TIMES) re[k] = spread(b.map((r) => r[k]));
  re.servedBlobs = spread(b.map((r) => r.served.blobs));
  re.servedDistinct = spread(b.map((r) => r.served.blobs - r.served.repeatedBytes));
  re.servedManifests = spread(b.map((r) => r.served.manifests));
  re.servedRepeated = spread(b.map((r) => r.served.repeatedBytes));
  for (const name of Object.keys(b[0]!.steps)) {
    const v = b.map((r) => r.steps[name]).filter((x): x is number => x !== undefined);
    if (v.length) re[`step: ${name}`] = spread(v);
  }
  const ratios = {} as BenchReport['summary']['ratios'];
  for (const [name, [of, against]] of Object.entries(RATIOS) as [RatioName, (typeof RATIOS)[RatioName]][])
    ratios[name] = {
      ofMedians: median(a.map(of)) / median(b.map(against)),
      rounds: spread(a.map((r, i) => of(r) / against(b[i]!))),
    };
  const timeRatio = ratios[GOAL_RATIO]!.ofMedians;
  const sameSet = (served: Served, list: ExpectedBlob[]) =>
    Object.keys(served.perBlob).sort().join() ===
    list
      .map((blob) => blob.digest)
      .sort()
      .join();
  const agentCountedChanged = a.every((r) => r.agentBytes === expected.changedBytes);
  const servedChangedSet = a.every((r) => sameSet(r.served, expected.changed));
  return {
    bench: 'update',
    rounds: input.rounds,
    web: input.web,
    expected,
    update: a,
    reinstall: b,
    summary: { update: up, reinstall: re, ratios },
    checks: {
      agentCountedChanged,
      servedChangedSet,
      servedWholeSet: b.every((r) => sameSet(r.served, expected.whole)),
      onlyWebRestarted: a.every((r) => r.restarted === 'web' && r.counterUntouched),
    },
    goals: { timeRatio, timeMet: timeRatio <= 0.2, bytesMet: agentCountedChanged && servedChangedSet },
    retries: input.retries,
  };
}

const sec = (s: Spread) =>
  `${s.median.toFixed(1)} s${s.n > 1 ? ` [${s.min.toFixed(1)}–${s.max.toFixed(1)}]` : ''}`;
const msOf = (s: Spread | undefined) =>
  s === undefined
    ? '—'
    : `${Math.round(s.median)}${s.n > 1 ? ` [${Math.round(s.min)}–${Math.round(s.max)}]` : ''}`;
const bytes = (n: number) =>
  n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(2)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
const byteSpread = (s: Spread) =>
  s.min === s.max
    ? `${bytes(s.median)} (${s.median})`
    : `${bytes(s.median)} [${bytes(s.min)}–${bytes(s.max)}]`;
const yes = (ok: boolean) => (ok ? 'yes' : 'NO');
const ratio = (r: { ofMedians: number; rounds: Spread }) =>
  `${r.ofMedians.toFixed(3)}×${r.rounds.n > 1 ? ` [${r.rounds.min.toFixed(3)}–${r.rounds.max.toFixed(3)}]` : ''}`;

/** The tables bench/update prints (Markdown). */
export function renderReport(report: BenchReport, context = ''): string {
  const { update: up, reinstall: re, ratios } = report.summary;
  const out: string[] = [];
  out.push(
    `over-the-air update v7 → v8 (one service's image changed) against a full re-install of v8, qemu TCG + OVMF Secure Boot + swtpm; web: ${report.web}; median [min–max] of ${report.rounds} rounds${context}`,
    '',
    '| | update (A) | re-install (B) | A ÷ B |',
    '|---|---:|---:|---:|',
    `| **changed service running again** (\`[web] web 8 up\`); A from publishing, B install + boot | ${sec(up.publishToWebUp!)} | ${sec(re.webUp!)} | ${ratio(ratios.webUp)} |`,
    `| the same, A from the agent's detection of the new digest | ${sec(up.detectToWebUp!)} | ${sec(re.webUp!)} | ${ratio(ratios.webUpFromDetection)} |`,
    `| system confirmed (A: "update applied", B: "boot complete"), from publishing | ${sec(up.publishToApplied!)} | ${sec(re.complete!)} | ${ratio(ratios.confirmed)} |`,
    `| **blob bytes fetched** (A: the agent's count; B: distinct blobs served to \`seal install\`) | ${byteSpread(up.agentBytes!)} | ${byteSpread(re.servedDistinct!)} | ${ratio(ratios.blobBytesFetched)} |`,
    `| blob bytes the registry served (metering proxy) | ${byteSpread(up.servedBlobs!)} | ${byteSpread(re.servedBlobs!)} | ${ratio(ratios.blobBytesServed)} |`,
    `| &nbsp;&nbsp;of which blobs served again (read by the sync's pinned-image resolver, then copied) | ${byteSpread(up.servedRepeated!)} | ${byteSpread(re.servedRepeated!)} | |`,
    `| manifest bytes served (A: with the tag's 1 s polls) | ${byteSpread(up.servedManifests!)} | ${byteSpread(re.servedManifests!)} | |`,
    `| bytes served in all | | | ${ratio(ratios.bytesServed)} |`,
    '',
    `expected from the systems' closures: the blobs v8 has and v7 lacks, ${bytes(report.expected.changedBytes)} (${report.expected.changedBytes} bytes) — ${report.expected.changed.map((b) => `${b.mediaType} ${b.size}`).join(', ')}; all of v8's: ${report.expected.whole.length} blobs, ${bytes(report.expected.wholeBytes)} (${report.expected.wholeBytes} bytes)`,
    '',
    "where the update's time goes (A; s unless ms)",
    '',
    '| | median [min–max] |',
    '|---|---:|',
    `| the agent's polls of the tag before publishing (seal.follow-interval=1): one every | ${up.pollPeriod ? sec(up.pollPeriod) : '—'} |`,
    `| publishing → the registry sees the next poll | ${up.publishToPoll ? sec(up.publishToPoll) : '—'} |`,
    `| publishing → the agent says it sees the new digest | ${sec(up.publishToDetect!)} |`,
  );
  for (const [k, s] of Object.entries(up))
    if (k.startsWith('step: ')) out.push(`| agent step "${k.slice(6)}" (ms) | ${msOf(s)} |`);
    else if (k.startsWith('phase: ')) out.push(`| &nbsp;&nbsp;${k.slice(7)} | ${sec(s)} |`);
  if (up['boot: open the service image web (ms)'])
    out.push(
      `| (for scale: the boot before it, "open the service image web" (ms): dm-verity opens of that image) | ${msOf(up['boot: open the service image web (ms)'])} |`,
    );
  out.push(
    '',
    "where the re-install's time goes (B; s unless ms)",
    '',
    '| | median [min–max] |',
    '|---|---:|',
  );
  out.push(`| \`seal install\` from the registry (host) | ${sec(re.install!)} |`);
  out.push(`| qemu start → \`[web] web 8 up\` | ${sec(re.bootToWebUp!)} |`);
  out.push(`| qemu start → boot complete | ${sec(re.bootToComplete!)} |`);
  for (const [k, s] of Object.entries(re))
    if (k.startsWith('step: ')) out.push(`| agent step "${k.slice(6)}" (ms) | ${msOf(s)} |`);
  out.push('', 'rounds:');
  report.update.forEach((a, i) => {
    const b = report.reinstall[i]!;
    out.push(
      `  ${i + 1}: update ${a.publishToWebUp.toFixed(1)} s to web up (${a.detectToWebUp.toFixed(1)} s from detection), ${a.publishToApplied.toFixed(1)} s to applied, ${a.agentBytes} bytes fetched; re-install ${b.install.toFixed(1)} + ${b.bootToWebUp.toFixed(1)} s to web up, ${b.served.blobs} blob bytes served; host load ${a.load.toFixed(1)} and ${b.load.toFixed(1)}`,
    );
  });
  const { checks, goals } = report;
  out.push(
    '',
    `checks: the agent counted the bytes of exactly the blobs v7 lacked: ${yes(checks.agentCountedChanged)}; the registry served the update those blobs and no other: ${yes(checks.servedChangedSet)}; the re-install was served the whole system's blobs: ${yes(checks.servedWholeSet)}; only web restarted, counter untouched: ${yes(checks.onlyWebRestarted)}`,
  );
  if (report.retries) out.push(`crashed or hung guests run again: ${report.retries}`);
  out.push(
    `goals: ≤ 0.2× the re-install's time: ${goals.timeRatio.toFixed(3)}× — ${goals.timeMet ? 'met' : 'NOT met'}; only the changed layers' bytes: ${goals.bytesMet ? 'met' : 'NOT met'}`,
  );
  return `${out.join('\n')}\n`;
}
