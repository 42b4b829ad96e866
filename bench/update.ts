/**
 * What an over-the-air update of a Seal device costs, against a full re-install of the same
 * system, under qemu TCG with OVMF Secure Boot and swtpm, in one run.
 *
 * The device is test/helpers/device.ts's (a busybox host and two services, `web` and `counter`)
 * running system v7 and following `device/system:stable` on a registry on the host (Debian's
 * docker-registry behind a metering proxy on 127.0.0.1; the guest reaches it only through qemu's
 * user network with restrict=on and a guestfwd, polling every second). v8 changes only the web
 * service's image (one file more) and its command, which prints `web 8 up` first.
 *
 *  A. update: the device, booted (untimed) from a snapshot taken after its first boot, and v8's
 *     blobs already in the registry under another tag, v8 is published by moving `stable` (one
 *     manifest PUT), at an even spread of phases of the agent's 1 s poll over the rounds. Timed to
 *     the new web's first console line and to the agent's "update applied" (the service stayed up
 *     3 s, the system is confirmed), from publishing and from the agent's own "update: … is now
 *     sha256:…" (which takes the poll interval out).
 *  B. re-install: `seal install` of the same v8 from the registry (through the proxy) into a new
 *     disk, then that disk's first boot on the same device (its TPM and varstore from the same
 *     snapshot) to the web's first line and to "boot complete".
 *
 * Bytes: the agent's own count ("N bytes fetched"), what the proxy served (blob and manifest
 * GETs), and what the systems' closures say (v8's configs and layers v7 lacks; all of v8's).
 * Where the update's time goes: the agent's step durations and the arrival of its console lines.
 * Rounds pair A and B (alternating which goes first); each VM run holds /tmp/seal-vm.lock, B's
 * install included, so that no other guest shares the CPU with a timed run.
 *   node bench/update.ts [ROUNDS] [--json FILE]    (SEAL_BENCH_KEEP=1 keeps the work directory)
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Machine } from '../src/machine/index.ts';
import { MANIFEST_ACCEPT } from '../src/registry/index.ts';
import { writeFileAtomic } from '../src/util/atomic.ts';
import { runSeal, runSealAsync } from '../test/helpers/cli.ts';
import { closureBlobs } from '../test/helpers/closure.ts';
import {
  buildBootKit,
  buildFixture,
  buildSystem,
  buildUki,
  type DeviceFixture,
  DeviceSession,
  installDisk,
  provisionTpm,
  sealedImage,
} from '../test/helpers/device.ts';
import { vmKernel } from '../test/helpers/vm.ts';
import { startFaultProxy, startRegistry } from '../test/registry/harness.ts';
import {
  buildReport,
  consoleSteps,
  type Expected,
  expectedBlobs,
  parseBenchArgs,
  type ReinstallRun,
  renderReport,
  servedBytes,
  tagPolls,
  type UpdateRun,
} from './update/report.ts';
import { withVmLock } from './vm-lock.ts';

let options: ReturnType<typeof parseBenchArgs>;
try {
  options = parseBenchArgs(process.argv.slice(2));
} catch (error) {
  console.error((error as Error).message);
  process.exit(2);
}
const REPO = 'device/system';
const BOOT_MS = 300_000;
const UPDATE_MS = 180_000;
/** After the boot, before publishing: the boot's tail (first polls, page cache) settles. */
const SETTLE_S = 5;
/** The web service's httpd under a shell that exits on SIGTERM (httpd, its child, dies with the container's PID namespace). */
const TRAPPED = 'trap "exit 0" TERM; httpd -f -p 8080 -h /srv & wait';
const WEB = options.webExitsOnTerm
  ? 'httpd under a shell that exits on SIGTERM (--web-exits-on-term)'
  : "busybox httpd as the container's PID 1 (the demo system)";
const work = mkdtempSync(join(tmpdir(), 'bench-update-'));
const say = (text: string) => console.error(`bench/update: ${text}`);
const now = () => performance.now() / 1000;

function seal(args: string[]): string {
  const r = runSeal(args);
  if (r.status !== 0) throw new Error(`seal ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Points `to` at the manifest `from` names, in the registry's device/system: one manifest PUT. */
async function moveTag(registry: string, from: string, to: string): Promise<void> {
  const base = `http://${registry}/v2/${REPO}/manifests`;
  const got = await fetch(`${base}/${from}`, { headers: { accept: MANIFEST_ACCEPT } });
  if (got.status !== 200) throw new Error(`GET ${base}/${from}: ${got.status}`);
  const body = Buffer.from(await got.arrayBuffer());
  const put = await fetch(`${base}/${to}`, {
    method: 'PUT',
    headers: { 'content-type': got.headers.get('content-type') ?? '' },
    body,
  });
  await put.arrayBuffer();
  if (put.status !== 201) throw new Error(`PUT ${base}/${to}: ${put.status}`);
}

/** The bench's clock when the console first shows each pattern after `from` (each promise also carries the match). */
function watch<K extends string>(
  session: DeviceSession,
  patterns: Record<K, RegExp>,
  from: number,
  timeoutMs: number,
): Record<K, Promise<{ at: number; match: RegExpExecArray }>> {
  const out = {} as Record<K, Promise<{ at: number; match: RegExpExecArray }>>;
  for (const [k, re] of Object.entries(patterns) as [K, RegExp][]) {
    out[k] = session.waitFor(re, from, timeoutMs).then((match) => ({ at: now(), match }));
    out[k].catch(() => {}); // awaited by the caller, or not at all once the run failed
  }
  return out;
}

/** A device's three stateful parts. */
interface DeviceFiles {
  disk: string;
  vars: string;
  tpm: string;
}

function deviceIn(dir: string): DeviceFiles {
  return { disk: join(dir, 'disk.img'), vars: join(dir, 'vars.fd'), tpm: join(dir, 'tpm') };
}

/** A copy of `snapshot` (the disk sparse, unless `disk` is false) in a new directory. */
function restore(snapshot: DeviceFiles, dir: string, disk = true): DeviceFiles {
  mkdirSync(dir, { recursive: true });
  const d = deviceIn(dir);
  if (disk) execFileSync('cp', ['--sparse=always', snapshot.disk, d.disk]);
  copyFileSync(snapshot.vars, d.vars);
  execFileSync('cp', ['-a', snapshot.tpm, d.tpm]);
  return d;
}

async function machineOf(device: DeviceFiles, root: string, port: number): Promise<Machine> {
  return Machine.create({
    root,
    name: 'device',
    disk: { path: device.disk, inPlace: true },
    vars: { path: device.vars, inPlace: true },
    tpm: { stateDir: device.tpm, inPlace: true },
    registry: port,
    memory: 2048,
  });
}

const retries = { count: 0 };

/** `run` up to three times: TCG guests on a shared host sometimes crash or hang. */
async function attempts<T>(what: string, run: (attempt: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run(attempt);
    } catch (error) {
      if (attempt === 3) throw error;
      retries.count++;
      const lines = (error as Error).message.trim().split('\n');
      say(`${what} failed (${lines[0]} … ${lines.at(-1)}); running it again`);
    }
  }
}

const UPDATE_MARKS = {
  detect: /seal: update: \S+ is now sha256:[0-9a-f]{64}/,
  applyBegin: /seal: \[ \.\. \] apply the update/,
  webStarted: /seal: service web: started/,
  webUp: /\[web\] web 8 up/,
  applyOk: /seal: \[ ok \] apply the update/,
  applied: /seal: update applied: version (\d+) -> (\d+), restarted (.*), (\d+) bytes fetched/,
};

try {
  say('building the device (PKI, images, systems v7 and v8, UKI, disk, TPM)…');
  const registry = await startRegistry('none');
  const proxy = await startFaultProxy(registry.host);
  try {
    const port = Number(proxy.host.split(':')[1]);
    const f: DeviceFixture = buildFixture(join(work, 'fixture'));
    const kit = buildBootKit(
      f,
      join(vmKernel(), 'vmlinuz'),
      execFileSync('bash', ['scripts/kernel-package.sh'], { encoding: 'utf8' }).trim(),
    );
    const uki = buildUki(f, kit, join(work, 'seal.efi'), {
      cmdline: [
        'console=ttyS0 quiet loglevel=3 panic=-1',
        'seal.net=10.0.2.15/24,gw=10.0.2.2',
        `seal.follow=docker://10.0.2.100:${port}/${REPO}:stable`,
        'seal.follow-interval=1 seal.registry-insecure',
      ].join(' '),
    });
    const v7 = buildSystem(
      f,
      7,
      options.webExitsOnTerm ? { web: { command: ['/bin/sh', '-c', TRAPPED] } } : {},
    );
    const web8 = sealedImage(f, 'web8', { 'etc/web-version': '8\n' });
    const v8 = buildSystem(f, 8, {
      web: {
        image: web8,
        command: [
          '/bin/sh',
          '-c',
          `echo "web $(cat /etc/web-version) up"; ${options.webExitsOnTerm ? TRAPPED : 'exec httpd -f -p 8080 -h /srv'}`,
        ],
      },
    });
    // Both systems in the registry beforehand (pushed straight to it, not metered): publishing is a tag move.
    seal(['sync', v7, `docker://${registry.host}/${REPO}:v7`]);
    seal(['sync', v8, `docker://${registry.host}/${REPO}:v8`]);
    await moveTag(registry.host, 'v7', 'stable');
    const c7 = closureBlobs(v7, join(work, 'closure-7'));
    const c8 = closureBlobs(v8, join(work, 'closure-8'));
    const expected: Expected = expectedBlobs(c7, c8);
    say(
      `v7 lacks ${expected.changed.length} of v8's blobs (${expected.changedBytes} bytes); v8 whole: ${expected.whole.length} blobs, ${expected.wholeBytes} bytes`,
    );

    // The device: v7 installed, its TPM provisioned, booted once (LUKS2 made, v7 confirmed); that is the snapshot.
    const snapshot = deviceIn(join(work, 'snapshot'));
    mkdirSync(snapshot.tpm, { recursive: true });
    installDisk(f, v7, snapshot.disk, uki);
    copyFileSync(kit.vars, snapshot.vars);
    await provisionTpm(f, snapshot.tpm);
    say('first boot of the device (v7)…');
    await attempts('the first boot', () =>
      withVmLock(async () => {
        const session = new DeviceSession(await machineOf(snapshot, mkdtempSync(join(work, 'm-')), port));
        try {
          await session.waitFor(/counter: boot 1, web says/, 0, BOOT_MS);
          await session.waitFor(/seal: following \S+ every 1 s/, 0, BOOT_MS);
          await sleep(SETTLE_S * 1000);
        } finally {
          await session.stop();
        }
      }),
    );

    const updateRun = (round: number) =>
      attempts(`update ${round}`, (attempt) =>
        withVmLock(async (): Promise<UpdateRun> => {
          const dir = join(work, `update-${round}-${attempt}`);
          const device = restore(snapshot, dir);
          await moveTag(registry.host, 'v7', 'stable');
          const session = new DeviceSession(await machineOf(device, join(dir, 'machines'), port));
          try {
            const ready = watch(
              session,
              { counter: /counter: boot \d+, web says/, following: /seal: following \S+ every 1 s/ },
              0,
              BOOT_MS,
            );
            await ready.counter;
            const followAt = (await ready.following).at;
            const boot = consoleSteps(session.output);
            proxy.served.length = 0;
            // The agent polls every second from the "following" line on: publishing waits SETTLE_S at
            // least, and comes (r − ½)/R of a second after a poll was due in round r of R, so that the
            // rounds sample the poll's phase evenly (a whole number of seconds would publish just before a poll).
            const phase = (round - 0.5) / options.rounds;
            const due = followAt + phase + Math.ceil(now() + SETTLE_S - followAt - phase);
            await sleep(Math.max(0, (due - now()) * 1000));
            const from = session.mark();
            const marks = watch(session, UPDATE_MARKS, from, UPDATE_MS);
            const load = loadavg()[0]!;
            const publishing = performance.now();
            await moveTag(registry.host, 'v8', 'stable');
            const published = now();
            const applied = await marks.applied;
            const t = {} as Record<keyof typeof UPDATE_MARKS, number>;
            for (const k of Object.keys(UPDATE_MARKS) as (keyof typeof UPDATE_MARKS)[])
              t[k] = (await marks[k]).at;
            const polls = tagPolls(proxy.served, 'stable', published * 1000);
            // What the update was served: from the moment publishing began.
            const served = servedBytes(proxy.served.filter((r) => r.at >= publishing));
            const text = session.output.slice(from);
            const steps = consoleSteps(text);
            const fetched =
              /seal: \[ ok \] fetch the update \S+ \(\d+ ms\): (\d+) new blobs, (\d+) bytes/.exec(text);
            const [, fromVersion, toVersion, restarted, agentBytes] = applied.match;
            if (fromVersion !== '7' || toVersion !== '8')
              throw new Error(`applied ${fromVersion} -> ${toVersion}`);
            const run: UpdateRun = {
              publishToDetect: t.detect - published,
              ...(polls.period !== undefined ? { pollPeriod: polls.period } : {}),
              ...(polls.delay !== undefined ? { publishToPoll: polls.delay } : {}),
              publishToWebUp: t.webUp - published,
              detectToWebUp: t.webUp - t.detect,
              publishToApplied: t.applied - published,
              detectToApplied: t.applied - t.detect,
              agentBytes: Number(agentBytes),
              agentBlobs: Number(fetched?.[1] ?? Number.NaN),
              served,
              steps: Object.fromEntries(
                Object.entries(steps).map(([k, v]) => [
                  k.replace(/^fetch the update .*/, 'fetch the update'),
                  v,
                ]),
              ),
              phases: {
                'apply: "[ .. ] apply" → "service web: started" (the new image opened, the old web stopped)':
                  t.webStarted - t.applyBegin,
                'apply: started → `[web] web 8 up` (crun runs the container)': t.webUp - t.webStarted,
                'apply: web up → "[ ok ] apply" (3 s up without a restart)': t.applyOk - t.webUp,
                '"[ ok ] apply" → "update applied" (confirm: store tag, TPM floor, state)':
                  t.applied - t.applyOk,
              },
              ...(boot['open the service image web'] !== undefined
                ? { bootOpenWebMs: boot['open the service image web'] }
                : {}),
              restarted: restarted!,
              counterUntouched: !/service counter: (started|exit|killed)/.test(text),
              load,
            };
            say(
              `update ${round}: web 8 up ${run.publishToWebUp.toFixed(1)} s after publishing (${run.detectToWebUp.toFixed(1)} s after detection), applied at ${run.publishToApplied.toFixed(1)} s; ${run.agentBytes} bytes fetched, ${served.blobs} blob bytes served`,
            );
            return run;
          } finally {
            await session.stop();
            rmSync(dir, { recursive: true, force: true });
          }
        }),
      );

    const reinstallRun = (round: number) =>
      attempts(`re-install ${round}`, (attempt) =>
        withVmLock(async (): Promise<ReinstallRun> => {
          const dir = join(work, `reinstall-${round}-${attempt}`);
          const device = restore(snapshot, dir, false);
          await moveTag(registry.host, 'v8', 'stable');
          try {
            const load = loadavg()[0]!;
            proxy.served.length = 0;
            execFileSync('sync');
            const start = now();
            const r = await runSealAsync([
              'install',
              '--disk',
              device.disk,
              '--manifest',
              `docker://${proxy.host}/${REPO}:stable`,
              '--uki',
              uki,
              '--ca',
              f.ca,
              '--size',
              '2G',
            ]);
            const install = now() - start;
            if (r.status !== 0) throw new Error(`seal install: ${r.stderr}`);
            const served = servedBytes(proxy.served);
            const machine = await machineOf(device, join(dir, 'machines'), port);
            const booted = now();
            const session = new DeviceSession(machine);
            try {
              const marks = watch(
                session,
                { webUp: /\[web\] web 8 up/, complete: /seal: boot complete: \S+ version 8 is running/ },
                0,
                BOOT_MS,
              );
              const webUp = (await marks.webUp).at - booted;
              const complete = (await marks.complete).at - booted;
              const run: ReinstallRun = {
                install,
                bootToWebUp: webUp,
                bootToComplete: complete,
                webUp: install + webUp,
                complete: install + complete,
                served,
                steps: consoleSteps(session.output),
                load,
              };
              say(
                `re-install ${round}: install ${install.toFixed(1)} s, web 8 up ${webUp.toFixed(1)} s after qemu started, boot complete at ${complete.toFixed(1)} s; ${served.blobs} blob bytes served`,
              );
              return run;
            } finally {
              await session.stop();
            }
          } finally {
            rmSync(dir, { recursive: true, force: true });
          }
        }),
      );

    const update: UpdateRun[] = [];
    const reinstall: ReinstallRun[] = [];
    for (let round = 1; round <= options.rounds; round++) {
      if (round % 2 === 1) {
        update.push(await updateRun(round));
        reinstall.push(await reinstallRun(round));
      } else {
        reinstall.push(await reinstallRun(round));
        update.push(await updateRun(round));
      }
    }
    const report = buildReport({
      rounds: options.rounds,
      web: WEB,
      expected,
      update,
      reinstall,
      retries: retries.count,
    });
    console.log(
      renderReport(
        report,
        ` (host load average ${loadavg()
          .map((l) => l.toFixed(1))
          .join(' ')} at the end)`,
      ),
    );
    if (options.json) await writeFileAtomic(options.json, `${JSON.stringify(report, null, 2)}\n`);
  } finally {
    await proxy.stop();
    await registry.stop();
  }
} finally {
  if (process.env.SEAL_BENCH_KEEP) say(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
