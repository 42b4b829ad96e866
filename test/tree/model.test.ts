import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  bufferContent,
  decodeDevice,
  emptyDir,
  encodeDevice,
  fsPath,
  type Inode,
  linkCounts,
  readContent,
  type Tree,
  toByteString,
  walk,
} from '../../src/tree/index.ts';

test('device numbers encode as Linux new_encode_dev', () => {
  assert.equal(encodeDevice({ major: 8, minor: 1 }), 0x801);
  assert.equal(encodeDevice({ major: 259, minor: 0x12345 }), 0x12310345);
  for (const dev of [
    { major: 0, minor: 0 },
    { major: 4095, minor: 0xfffff },
    { major: 1, minor: 256 },
  ]) {
    assert.deepEqual(decodeDevice(encodeDevice(dev)), dev);
  }
});

test('byte-string names keep invalid UTF-8 and sort bytewise', () => {
  const raw = Buffer.from([0x66, 0xff, 0xfe, 0x2e]);
  const name = toByteString(raw);
  assert.deepEqual(fsPath(name), raw);
  assert.ok(toByteString('Z') < toByteString('a'));
  assert.ok(toByteString('a') < toByteString('é'));
});

test('walk is depth-first with sorted children and reports hardlinks', async () => {
  const root = emptyDir();
  const file: Inode = {
    type: 'file',
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtime: { sec: 1, nsec: 0 },
    xattrs: new Map(),
    content: bufferContent(Buffer.from('hi')),
  };
  const sub = emptyDir();
  root.children.set('b', sub);
  root.children.set('a', file);
  sub.children.set('link', file);
  const tree: Tree = { root };
  const entries = [...walk(tree)].map((e) => [e.path, e.linkOf]);
  assert.deepEqual(entries, [
    ['', undefined],
    ['a', undefined],
    ['b', undefined],
    ['b/link', 'a'],
  ]);
  const counts = linkCounts(tree);
  assert.equal(counts.get(file), 2);
  assert.equal(counts.get(root), 3);
  assert.equal((await readContent(file.content)).toString(), 'hi');
});
