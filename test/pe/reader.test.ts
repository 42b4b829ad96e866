/**
 * The PE reader against binutils and osslsigncode on real UEFI binaries: systemd's stubs (254 and
 * 252) and boot manager, and Debian's signed kernel. Sections equal objdump's, checksums equal the
 * stored ones where a tool wrote them, the Authenticode digest equals osslsigncode's.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  authenticodeDigest,
  imageChecksum,
  PeChecksum,
  PeError,
  PeImage,
  unsignedRanges,
  withPeImage,
} from '../../src/pe/index.ts';
import { BOOT_MANAGER_254, opensslCertificate, STUB_254, stub252, testKernel } from '../helpers/efi.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-pe-'));
after(() => rm(work, { recursive: true, force: true }));

const binaries = () => [STUB_254, stub252(), BOOT_MANAGER_254, testKernel()];

function objdumpSections(path: string) {
  const out = execFileSync('objdump', ['-h', path], { encoding: 'utf8' });
  return [...out.matchAll(/^\s+\d+ (\S+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+[0-9a-f]+\s+([0-9a-f]+)/gm)].map(
    (m) => ({
      name: m[1]!,
      size: Number.parseInt(m[2]!, 16),
      offset: Number.parseInt(m[3]!, 16),
    }),
  );
}

test('sections and headers equal objdump on the stubs, the boot manager and the kernel', () => {
  for (const path of binaries()) {
    withPeImage(path, (image) => {
      const theirs = objdumpSections(path);
      assert.deepEqual(
        // objdump shows the smaller of the virtual and raw sizes.
        image.sections.map((s) => ({
          name: s.name,
          size: Math.min(s.virtualSize, s.sizeOfRawData),
          offset: s.pointerToRawData,
        })),
        theirs,
        path,
      );
      const p = execFileSync('objdump', ['-p', path], { encoding: 'utf8' });
      const field = (name: string) =>
        Number.parseInt(new RegExp(`^${name}\\s+([0-9a-f]+)`, 'm').exec(p)![1]!, 16);
      assert.equal(image.headers.sizeOfImage, field('SizeOfImage'));
      assert.equal(image.headers.sizeOfHeaders, field('SizeOfHeaders'));
      assert.equal(image.headers.sectionAlignment, field('SectionAlignment'));
      assert.equal(image.headers.fileAlignment, field('FileAlignment'));
      assert.equal(image.headers.checkSum, field('CheckSum'));
      assert.deepEqual(unsignedRanges(image), [], `${path}: every byte is covered`);
    });
  }
});

test('checksums equal the ones linkers and signers stored; the incremental sum is chunking-independent', () => {
  // The kernel (signed by Debian) and the 252 stub carry checksums; so does what sbsign writes.
  const keys = opensslCertificate(work, 'sum');
  const signed = join(work, 'sbsigned.efi');
  execFileSync('sbsign', ['--key', keys.key, '--cert', keys.cert, '--output', signed, STUB_254], {
    stdio: 'ignore',
  });
  for (const path of [testKernel(), stub252(), signed]) {
    withPeImage(path, (image) => {
      assert.notEqual(image.headers.checkSum, 0, path);
      assert.equal(imageChecksum(image), image.headers.checkSum, path);
    });
  }
  const data = readFileSync(stub252());
  const whole = new PeChecksum().update(data).digest();
  for (const cut of [1, 3, 4096, 4097, data.length - 1]) {
    const sum = new PeChecksum().update(data.subarray(0, cut)).update(data.subarray(cut));
    assert.equal(sum.digest(), whole, `cut at ${cut}`);
  }
  // An odd-sized file, and bytes added where they sit rather than in order.
  const odd = data.subarray(0, 1001);
  const added = new PeChecksum().update(odd.subarray(0, 501)).skip(500).add(501, odd.subarray(501));
  assert.equal(added.digest(), new PeChecksum().update(odd).digest());
});

test('the Authenticode digest equals osslsigncode on signed images, and sbsign signs the digest Seal computes', () => {
  const keys = opensslCertificate(work, 'digest');
  for (const path of binaries()) {
    let unsigned = path;
    if (!withPeImage(path, (i) => i.certificateTable)) {
      unsigned = join(work, 'signed.efi');
      execFileSync('sbsign', ['--key', keys.key, '--cert', keys.cert, '--output', unsigned, path], {
        stdio: 'ignore',
      });
    }
    // (osslsigncode exits 1 on the self-signed certificates; its digests are printed all the same.)
    const out = spawnSync('osslsigncode', ['verify', '-in', unsigned], { encoding: 'utf8' }).stdout;
    const theirs = /Calculated message digest\s*:\s*([0-9A-F]+)/.exec(out)![1]!.toLowerCase();
    const ours = withPeImage(unsigned, (i) => authenticodeDigest(i).toString('hex'));
    assert.equal(ours, theirs, path);
    // Signing does not change the digest: the unsigned original hashes the same.
    if (unsigned !== path)
      assert.equal(
        withPeImage(path, (i) => authenticodeDigest(i).toString('hex')),
        theirs,
      );
  }
});

test('an unaligned unsigned image is hashed as padded to 8 bytes, as signers pad it', () => {
  const data = readFileSync(STUB_254);
  const odd = join(work, 'odd.efi');
  writeFileSync(odd, Buffer.concat([data, Buffer.from('xyz')]));
  const keys = opensslCertificate(work, 'odd');
  const signed = join(work, 'odd.signed');
  execFileSync('sbsign', ['--key', keys.key, '--cert', keys.cert, '--output', signed, odd], {
    stdio: 'ignore',
  });
  const padded = withPeImage(odd, (i) => authenticodeDigest(i));
  assert.deepEqual(
    withPeImage(signed, (i) => authenticodeDigest(i)),
    padded,
  );
  assert.notDeepEqual(
    withPeImage(odd, (i) => authenticodeDigest(i, 'sha256', { pad: false })),
    padded,
  );
});

test('bad inputs are typed errors naming the file', () => {
  const data = readFileSync(STUB_254);
  const cases: [string, Buffer, string][] = [
    ['empty', Buffer.alloc(0), 'PE_NOT_PE'],
    ['text', Buffer.from('#!/bin/sh\necho hello\n'.repeat(10)), 'PE_NOT_PE'],
    ['cut', data.subarray(0, 300), 'PE_TRUNCATED'],
    ['sections cut', data.subarray(0, 0x2000), 'PE_BAD_SECTION'],
  ];
  const far = Buffer.from(data);
  far.writeUInt32LE(0x7ffffff0, 0x3c);
  cases.push(['e_lfanew past the end', far, 'PE_TRUNCATED']);
  const magic = Buffer.from(data);
  magic.writeUInt16LE(0x107, 0x58);
  cases.push(['ROM magic', magic, 'PE_UNSUPPORTED']);
  for (const [name, bytes, code] of cases) {
    const path = join(work, `${name}.bin`);
    writeFileSync(path, bytes);
    assert.throws(
      () => PeImage.open(path),
      (e: unknown) => e instanceof PeError && e.code === code && e.message.includes(path),
      name,
    );
  }
});
