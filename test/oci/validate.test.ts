import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseIndex, parseManifest, ValidationError } from '../../src/oci/validate.ts';

const D = `sha256:${'a'.repeat(64)}`;
const manifest = JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: D, size: 2 },
  layers: [
    {
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      digest: D,
      size: 10,
      annotations: { a: 'b' },
    },
  ],
});
const index = JSON.stringify({
  schemaVersion: 2,
  manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: D, size: 5 }],
});

/** Seeded PRNG so a failure reproduces. */
function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('valid documents pass; schema violations are rejected', () => {
  assert.equal(parseManifest(manifest).layers.length, 1);
  assert.equal(parseIndex(index).manifests.length, 1);
  const bad = (m: object) => assert.throws(() => parseManifest(JSON.stringify(m)), ValidationError);
  const m = JSON.parse(manifest);
  bad({ ...m, config: { ...m.config, size: -1 } });
  bad({ ...m, config: { ...m.config, digest: 'sha256:xyz' } });
  bad({ ...m, config: { ...m.config, mediaType: 'not a type' } });
  bad({ ...m, layers: [{ ...m.layers[0], annotations: { a: 1 } }] });
  bad({ ...m, layers: undefined });
  assert.throws(() => parseManifest('{'), ValidationError);
});

test('fuzz: mutated manifests and indexes parse or fail with ValidationError, never crash', () => {
  const rand = prng(20261122);
  const alphabet = '{}[]":,0-1aZ\\ \u0000\u00ff';
  for (let i = 0; i < 4000; i++) {
    const base = i % 2 ? manifest : index;
    const chars = [...base];
    const edits = 1 + Math.floor(rand() * 4);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(rand() * chars.length);
      const op = rand();
      if (op < 0.4) chars[at] = alphabet[Math.floor(rand() * alphabet.length)];
      else if (op < 0.7) chars.splice(at, 1);
      else chars.splice(at, 0, alphabet[Math.floor(rand() * alphabet.length)]);
    }
    const text = chars.join('');
    try {
      (i % 2 ? parseManifest : parseIndex)(Buffer.from(text, 'latin1'));
    } catch (error) {
      assert.ok(error instanceof ValidationError, `input ${i}: ${String(error)} for ${JSON.stringify(text)}`);
      assert.equal(error.code, 'OCI_INVALID');
    }
  }
});
