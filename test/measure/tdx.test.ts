/**
 * TDX MRTD of Debian's TDVF-capable OVMF builds against td-shim's reference implementation
 * (recorded once here, fixtures/tdx/mrtd.json), and typed refusals.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { CvmError, Firmware, tdxMrtd, tdxSections } from '../../src/measure/index.ts';
import { runSeal } from '../helpers/cli.ts';
import { FIXTURES, sha256 } from './helpers.ts';

const doc = JSON.parse(readFileSync(join(FIXTURES, 'tdx', 'mrtd.json'), 'utf8')) as {
  inputs: Record<string, string>;
  cases: { image: string[]; xorFF?: number; mrtd: string }[];
};

function image(parts: string[], xorFF?: number): Buffer {
  const data = Buffer.concat(parts.map((p) => readFileSync(p)));
  if (xorFF !== undefined) data[xorFF] = (data[xorFF] as number) ^ 0xff;
  return data;
}

test("MRTDs of Debian's OVMF builds equal td-shim's reference implementation", () => {
  for (const [name, want] of Object.entries(doc.inputs)) {
    const path = name === 'OVMF.fd' ? '/usr/share/ovmf/OVMF.fd' : `/usr/share/OVMF/${name}`;
    assert.equal(
      sha256(readFileSync(path)),
      want,
      `${path} changed (a Debian ovmf update?): record mrtd.json again`,
    );
  }
  for (const c of doc.cases) {
    const fw = new Firmware(image(c.image, c.xorFF), c.image.join('+'));
    assert.equal(tdxMrtd(fw).toString('hex'), c.mrtd, c.image.join(' + '));
  }
  const sections = tdxSections(new Firmware(readFileSync('/usr/share/ovmf/OVMF.fd'), 'OVMF.fd'));
  assert.deepEqual(
    sections.map((s) => s.typeName),
    ['bfv', 'cfv', 'temp-mem', 'temp-mem', 'td-hob', 'temp-mem'],
  );
});

test('the MRTD covers the code, not the variable store', () => {
  const base = image(['/usr/share/ovmf/OVMF.fd']);
  const mrtd = tdxMrtd(new Firmware(base, 'base')).toString('hex');
  const vars = Buffer.from(base);
  vars[0x1000] = (vars[0x1000] as number) ^ 1; // in the CFV: added, not measured
  assert.equal(tdxMrtd(new Firmware(vars, 'vars')).toString('hex'), mrtd);
  const code = Buffer.from(base);
  code[0x100000] = (code[0x100000] as number) ^ 1; // in the BFV
  assert.notEqual(tdxMrtd(new Firmware(code, 'code')).toString('hex'), mrtd);
});

test('images that are not whole TDVF images are refused with typed errors', () => {
  const refused = (data: Buffer, pattern: RegExp) =>
    assert.throws(
      () => tdxMrtd(new Firmware(data, 'img')),
      (e: unknown) => e instanceof CvmError && e.code === 'CVM_BAD_TDX_METADATA' && pattern.test(e.message),
    );
  refused(readFileSync('/usr/share/OVMF/OVMF_CODE_4M.fd'), /no TDX metadata/);
  refused(readFileSync('/usr/share/OVMF/OVMF_CODE.fd'), /past the end of the image .*OVMF\.fd/);
  const sig = readFileSync('/usr/share/ovmf/OVMF.fd');
  const at = sig.length - 0x840;
  sig[at] = 0x58;
  refused(sig, /no "TDVF" signature/);
  const cli = runSeal(['measure', 'tdx', '--ovmf', '/usr/share/OVMF/OVMF_CODE_4M.fd']);
  assert.equal(cli.status, 1);
  assert.match(cli.stderr, /\[CVM_BAD_TDX_METADATA\]/);
  const ok = runSeal(['measure', 'tdx', '--ovmf', '/usr/share/ovmf/OVMF.fd', '--json']);
  assert.equal(ok.status, 0, ok.stderr);
  assert.equal((JSON.parse(ok.stdout) as { mrtd: string }).mrtd, doc.cases[0]?.mrtd);
});
