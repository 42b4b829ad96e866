/**
 * TCG2 event logs: a log OVMF and the 6.12 kernel wrote in a Secure Boot boot of a Seal UKI
 * (fixtures/, with the PCR values read from the TPM in that boot) replays to those PCRs; Seal's
 * replay of every bank and PCR equals tpm2-tools' tpm2_eventlog; the CLI shows and compares;
 * mutated logs give typed errors only.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { describeEventLog, MeasureError, parseEventLog, replayEventLog } from '../../src/measure/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { prng } from '../helpers/trees.ts';

const fixture = (name: string) => fileURLToPath(new URL(`fixtures/${name}`, import.meta.url));
const LOG = fixture('ovmf-secureboot.log');
const work = await mkdtemp(join(tmpdir(), 'seal-eventlog-'));
after(() => rm(work, { recursive: true, force: true }));

/** The PCR values tpm2_eventlog computes: bank → PCR → hex. */
function tpm2Eventlog(path: string): Record<string, Record<number, string>> {
  const out = execFileSync('tpm2_eventlog', [path], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const values: Record<string, Record<number, string>> = {};
  let bank = '';
  for (const line of out.slice(out.lastIndexOf('\npcrs:')).split('\n')) {
    const b = /^ {2}(sha\d+):$/.exec(line);
    if (b) bank = b[1]!;
    const v = /^ {4}(\d+)\s*: 0x([0-9a-f]+)$/.exec(line);
    if (v && bank) (values[bank] ??= {})[Number(v[1])] = v[2]!;
  }
  return values;
}

test('the log of a real boot replays to the PCRs the TPM reported, and to what tpm2_eventlog computes', () => {
  const log = parseEventLog(readFileSync(LOG));
  assert.equal(log.format, 'crypto-agile');
  assert.deepEqual(log.banks, ['sha1', 'sha256', 'sha384', 'sha512']);
  const replayed = replayEventLog(log);
  const live = readFileSync(fixture('ovmf-secureboot.pcrs'), 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(' '));
  assert.equal(live.length, 12);
  for (const [bank, pcr, value] of live)
    assert.equal(replayed[bank as 'sha256']![Number(pcr)]!.toString('hex'), value, `${bank} ${pcr}`);
  const theirs = tpm2Eventlog(LOG);
  const ours = Object.fromEntries(
    Object.entries(replayed).map(([b, pcrs]) => [
      b,
      Object.fromEntries(Object.entries(pcrs).map(([n, v]) => [n, v.toString('hex')])),
    ]),
  );
  assert.deepEqual(ours, theirs);
  assert.ok(Object.keys(theirs.sha256!).length >= 9);
});

test('events are described: Secure Boot variables, the separator, the image, the stub sections', () => {
  const events = describeEventLog(parseEventLog(readFileSync(LOG)));
  const line = (e: (typeof events)[number]) => `${e.pcr} ${e.type} ${e.description}`;
  const lines = events.map(line);
  for (const expected of [
    '7 EV_EFI_VARIABLE_DRIVER_CONFIG SecureBoot (EFI global variable), 1 bytes',
    '7 EV_EFI_VARIABLE_DRIVER_CONFIG db (image security database), 860 bytes',
    '7 EV_SEPARATOR 00000000',
    '4 EV_EFI_ACTION "Calling EFI Application from Boot Option"',
    '11 EV_IPL ".linux"',
    '0 EV_NO_ACTION Spec ID Event03',
    '0 EV_EFI_PLATFORM_FIRMWARE_BLOB firmware blob at 0x820000, 917504 bytes',
  ])
    assert.ok(lines.includes(expected), `${expected}\n${lines.join('\n')}`);
  assert.ok(
    lines.some((l) =>
      /^4 EV_EFI_BOOT_SERVICES_APPLICATION image of \d+ bytes \\EFI\\BOOT\\BOOTX64.EFI$/.test(l),
    ),
  );
  assert.ok(
    lines.some((l) => /^7 EV_EFI_VARIABLE_AUTHORITY db \(image security database\), \d+ bytes$/.test(l)),
  );
});

test('a StartupLocality event sets the value PCR 0 starts from; EV_NO_ACTION events extend nothing', () => {
  const base = readFileSync(LOG);
  const headerEnd = 32 + base.readUInt32LE(28);
  const digests = (fill: number) => {
    const parts = [Buffer.from([4, 0, 0, 0])];
    for (const [id, size] of [
      [0x4, 20],
      [0xb, 32],
      [0xc, 48],
      [0xd, 64],
    ] as const) {
      const d = Buffer.alloc(2 + size, fill);
      d.writeUInt16LE(id, 0);
      parts.push(d);
    }
    return Buffer.concat(parts);
  };
  const event = (pcr: number, type: number, fill: number, data: Buffer) => {
    const head = Buffer.alloc(8);
    head.writeUInt32LE(pcr, 0);
    head.writeUInt32LE(type, 4);
    const size = Buffer.alloc(4);
    size.writeUInt32LE(data.length, 0);
    return Buffer.concat([head, digests(fill), size, data]);
  };
  const log = Buffer.concat([
    base.subarray(0, headerEnd),
    event(0, 3, 0, Buffer.from('StartupLocality\0\x03', 'latin1')),
    event(0, 8, 0x11, Buffer.from('v1')),
  ]);
  const replayed = replayEventLog(parseEventLog(log));
  for (const bank of ['sha1', 'sha256', 'sha384', 'sha512'] as const) {
    const size = { sha1: 20, sha256: 32, sha384: 48, sha512: 64 }[bank];
    const start = Buffer.alloc(size);
    start[size - 1] = 3;
    const expected = createHash(bank).update(start).update(Buffer.alloc(size, 0x11)).digest('hex');
    assert.equal(replayed[bank]![0]!.toString('hex'), expected, bank);
  }
  assert.equal(describeEventLog(parseEventLog(log))[1]!.description, 'StartupLocality 3');
});

test('a SHA-1 log of TPM 1.2 firmware (no Spec ID Event03) is read and replayed in its one bank', () => {
  const event = (pcr: number, type: number, digest: Buffer, data: string) => {
    const head = Buffer.alloc(32);
    head.writeUInt32LE(pcr, 0);
    head.writeUInt32LE(type, 4);
    digest.copy(head, 8);
    head.writeUInt32LE(data.length, 28);
    return Buffer.concat([head, Buffer.from(data, 'latin1')]);
  };
  const d1 = createHash('sha1').update('one').digest();
  const d2 = createHash('sha1').update('two').digest();
  const log = parseEventLog(Buffer.concat([event(0, 8, d1, 'v1'), event(4, 0x80000007, d2, 'Calling')]));
  assert.equal(log.format, 'sha1');
  assert.deepEqual(log.banks, ['sha1']);
  const replayed = replayEventLog(log);
  assert.equal(
    replayed.sha1![0]!.toString('hex'),
    createHash('sha1').update(Buffer.alloc(20)).update(d1).digest('hex'),
  );
  assert.equal(
    replayed.sha1![4]!.toString('hex'),
    createHash('sha1').update(Buffer.alloc(20)).update(d2).digest('hex'),
  );
});

test('seal eventlog replay: human and JSON output, comparisons that pass and one that names the PCR that differs', () => {
  const human = runSeal(['eventlog', 'replay', LOG]);
  assert.equal(human.status, 0, human.stderr);
  assert.match(human.stdout, /PCR 11 EV_IPL\s+"\.sbat"/);
  assert.match(human.stdout, /^sha384:11=34eefe36/m);
  const expect = join(work, 'pcrs.txt');
  writeFileSync(expect, readFileSync(fixture('ovmf-secureboot.pcrs')));
  const compared = runSeal(['eventlog', 'replay', LOG, '--expect', expect, '--quiet', '--json']);
  assert.equal(compared.status, 0, compared.stderr);
  const result = JSON.parse(compared.stdout) as { comparisons: { match: boolean }[]; events: unknown[] };
  assert.equal(result.comparisons.length, 12);
  assert.ok(result.comparisons.every((c) => c.match));
  assert.ok(result.events.length > 30);
  const wrong = runSeal(['eventlog', 'replay', LOG, '--quiet', '--pcr', `sha384:4=${'ab'.repeat(48)}`]);
  assert.equal(wrong.status, 1);
  assert.match(wrong.stderr, /sha384 PCR 4 replays to 7144d559[0-9a-f]+, not (ab)+ \[MEASURE_PCR_MISMATCH\]/);
  const unknown = runSeal(['eventlog', 'replay', LOG, '--quiet', '--pcr', `sha256:15=${'00'.repeat(32)}`]);
  assert.equal(unknown.status, 1);
  assert.match(unknown.stderr, /PCR 15 replays to nothing \(never extended\)/);
});

test('mutated and truncated logs give typed errors, never a crash or a hang', (t) => {
  const base = readFileSync(LOG);
  const random = prng(4);
  let refused = 0;
  for (let i = 0; i < 4000; i++) {
    let data = Buffer.from(base);
    if (random() < 0.15) data = data.subarray(0, Math.floor(random() * data.length));
    else
      for (let k = 0, n = 1 + Math.floor(random() * 4); k < n; k++) {
        // Often in the header event and the size fields of events.
        const at = random() < 0.3 ? Math.floor(random() * 120) : Math.floor(random() * data.length);
        data[at] = random() < 0.5 ? Math.floor(random() * 256) : data[at]! ^ (1 << Math.floor(random() * 8));
      }
    try {
      const log = parseEventLog(data);
      replayEventLog(log);
      describeEventLog(log);
    } catch (error) {
      assert.ok(error instanceof MeasureError, `case ${i}: ${(error as Error).stack}`);
      refused++;
    }
  }
  t.diagnostic(`${refused} of 4000 refused`);
  assert.ok(refused > 500, `only ${refused} refused`);
});
