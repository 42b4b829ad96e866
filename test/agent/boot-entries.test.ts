/**
 * The boot entries on the ESP: names with and without the Boot Loader Specification's counter
 * (as systemd-boot renames them), staging (whole or not at all), blessing, keeping only the good
 * entry, and systemd-boot's variables as efivarfs shows them.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  BootEntries,
  bootEntryName,
  countedTry,
  loaderReport,
  loaderVariable,
  parseBootEntry,
} from '../../src/agent/boot-entries.ts';
import { AgentError } from '../../src/agent/errors.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-boot-entries-'));
after(() => rm(work, { recursive: true, force: true }));

test('entry names: plain, counted, counted after boots; anything else is not an entry of Seal', () => {
  assert.deepEqual(parseBootEntry('seal-7.efi'), { file: 'seal-7.efi', id: 'seal-7', version: 7 });
  assert.deepEqual(parseBootEntry('seal-12+3.efi'), {
    file: 'seal-12+3.efi',
    id: 'seal-12',
    version: 12,
    triesLeft: 3,
    triesDone: 0,
  });
  assert.deepEqual(parseBootEntry('SEAL-12+0-3.EFI'), {
    file: 'SEAL-12+0-3.EFI',
    id: 'seal-12',
    version: 12,
    triesLeft: 0,
    triesDone: 3,
  });
  for (const name of [
    'seal-.efi',
    'seal-7.conf',
    'linux.efi',
    'seal-7+.efi',
    'seal-7-1.efi',
    'seal-7+1-2-3.efi',
    'seal-7.efi.partial',
    '.seal-7.partial',
    'seal-1234567890.efi',
    '../seal-7.efi',
  ])
    assert.equal(parseBootEntry(name), undefined, name);
  assert.equal(bootEntryName(9), 'seal-9');
});

function esp(name: string): { dir: string; entries: BootEntries; uki: string } {
  const dir = join(work, name);
  mkdirSync(join(dir, 'EFI/Linux'), { recursive: true });
  const uki = join(work, `${name}.uki`);
  writeFileSync(uki, Buffer.alloc(100_000, 7));
  return { dir, entries: new BootEntries(dir), uki };
}

const files = (dir: string) => readdirSync(join(dir, 'EFI/Linux')).sort();

test('a new UKI is staged counted, blessed when its system is confirmed, and the others go', async () => {
  const { dir, entries, uki } = esp('cycle');
  writeFileSync(join(dir, 'EFI/Linux/seal-7.efi'), 'old');
  writeFileSync(join(dir, 'EFI/Linux/other.efi'), 'not ours');
  const staged = await entries.stage(8, uki, 3);
  assert.equal(staged.file, 'seal-8+3.efi');
  assert.deepEqual(files(dir), ['other.efi', 'seal-7.efi', 'seal-8+3.efi']);
  assert.deepEqual(readFileSync(join(dir, 'EFI/Linux/seal-8+3.efi')), readFileSync(uki));
  assert.deepEqual(
    entries.list().map((e) => e.file),
    ['seal-8+3.efi', 'seal-7.efi'],
    'newest first, only Seal entries',
  );
  // systemd-boot counts a boot by renaming.
  const { renameSync } = await import('node:fs');
  renameSync(join(dir, 'EFI/Linux/seal-8+3.efi'), join(dir, 'EFI/Linux/seal-8+2-1.efi'));
  assert.deepEqual(entries.find('seal-8'), {
    file: 'seal-8+2-1.efi',
    id: 'seal-8',
    version: 8,
    triesLeft: 2,
    triesDone: 1,
  });
  assert.deepEqual(entries.keepOnly('seal-8'), ['seal-7.efi']);
  assert.deepEqual(files(dir), ['other.efi', 'seal-8.efi']);
  // Keeping an entry that is not there changes nothing: the ESP is never left without its UKI.
  assert.deepEqual(entries.keepOnly('seal-9'), []);
  assert.deepEqual(files(dir), ['other.efi', 'seal-8.efi']);
});

test('a given-up trial is removed with every name it had; staging again replaces it', async () => {
  const { dir, entries, uki } = esp('again');
  writeFileSync(join(dir, 'EFI/Linux/seal-7.efi'), 'good');
  writeFileSync(join(dir, 'EFI/Linux/seal-9+0-3.efi'), 'bad');
  await entries.stage(9, uki, 2);
  assert.deepEqual(files(dir), ['seal-7.efi', 'seal-9+2.efi']);
  entries.remove('seal-9');
  assert.deepEqual(files(dir), ['seal-7.efi']);
});

test('a UKI at or below an entry that exists is refused (systemd-boot starts the highest); a failed copy leaves nothing', async () => {
  const { dir, entries, uki } = esp('order');
  writeFileSync(join(dir, 'EFI/Linux/seal-10.efi'), 'good');
  for (const version of [9, 10]) {
    await assert.rejects(entries.stage(version, uki, 3), (e: unknown) => {
      assert.ok(e instanceof AgentError);
      assert.equal(e.code, 'AGENT_UPDATE');
      assert.match(e.message, new RegExp(`version ${version} is not`));
      return true;
    });
  }
  await assert.rejects(entries.stage(11, join(work, 'no-such-uki'), 3), /ENOENT/);
  assert.deepEqual(files(dir), ['seal-10.efi'], 'no partial file left');
});

function efivar(dir: string, name: string, value: string): void {
  const attributes = Buffer.from([7, 0, 0, 0]);
  writeFileSync(
    join(dir, `${name}-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f`),
    Buffer.concat([attributes, Buffer.from(`${value}\0`, 'utf16le')]),
  );
}

test("systemd-boot's variables: the loader, and the entry it started with its counter", () => {
  const vars = join(work, 'efivars');
  mkdirSync(vars);
  assert.equal(loaderReport(vars), undefined, 'no LoaderInfo: systemd-boot did not start this boot');
  efivar(vars, 'LoaderInfo', 'systemd-boot 254.16-1~bpo12+1');
  assert.deepEqual(loaderReport(vars), { loader: 'systemd-boot 254.16-1~bpo12+1' });
  efivar(vars, 'LoaderEntrySelected', 'seal-9+2-1.efi');
  assert.equal(loaderVariable('LoaderEntrySelected', vars), 'seal-9+2-1.efi');
  assert.deepEqual(loaderReport(vars)?.booted, {
    file: 'seal-9+2-1.efi',
    id: 'seal-9',
    version: 9,
    triesLeft: 2,
    triesDone: 1,
  });
  efivar(vars, 'LoaderEntrySelected', 'auto-reboot-to-firmware-setup');
  assert.deepEqual(loaderReport(vars), { loader: 'systemd-boot 254.16-1~bpo12+1' });
});

test('a counted try with a plain entry to fall back to is told apart from every other boot', () => {
  const esp = join(work, 'counted');
  const dir = join(esp, 'EFI/Linux');
  mkdirSync(dir, { recursive: true });
  const entries = new BootEntries(esp);
  const loader = (selected: string) => ({ loader: 'systemd-boot 254', booted: parseBootEntry(selected)! });
  writeFileSync(join(dir, 'seal-3.efi'), 'good');
  // systemd-boot renamed the new UKI's file as it started it; the variable may name it either way.
  writeFileSync(join(dir, 'seal-4+1-1.efi'), 'new');
  for (const selected of ['seal-4.efi', 'seal-4+2.efi', 'seal-4+1-1.efi'])
    assert.equal(countedTry(entries, loader(selected))?.file, 'seal-4+1-1.efi', selected);
  assert.equal(countedTry(entries, loader('seal-3.efi')), undefined, 'the good entry is no try');
  assert.equal(countedTry(entries, { loader: 'systemd-boot 254' }), undefined, 'an entry not of Seal');
  assert.equal(countedTry(entries, loader('seal-5.efi')), undefined, 'an entry not on the ESP');
  // Its last try: rebooting still reaches the good entry.
  rmSync(join(dir, 'seal-4+1-1.efi'));
  writeFileSync(join(dir, 'seal-4+0-2.efi'), 'new');
  assert.equal(countedTry(entries, loader('seal-4+0-2.efi'))?.triesLeft, 0);
  // Without a plain entry, systemd-boot would start the same try again: no reboot loop.
  rmSync(join(dir, 'seal-3.efi'));
  assert.equal(countedTry(entries, loader('seal-4+0-2.efi')), undefined);
});
