import type { CfsEntry, CfsNode } from '../../src/composefs/index.ts';
import { prng, randomBytes } from './trees.ts';

/** A large random composefs tree with every entry kind and awkward bytes everywhere. */
export function generatedComposefsTree(seed: number, entries: number): CfsNode {
  const random = prng(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
  const bytes = (n: number) => randomBytes(random, n).toString('latin1');
  const awkward = [
    'plain',
    'with space',
    'new\nline',
    'tab\there',
    'back\\slash',
    'eq=uals',
    '-',
    'caf\xc3\xa9',
    '\xff\xfe',
  ];
  const name = () => `${pick(awkward)}-${Math.floor(random() * 1e9).toString(36)}`;
  const mtime = () => ({
    sec: Math.floor(random() * 2e9),
    nsec: random() < 0.5 ? 0 : Math.floor(random() * 1e9),
  });
  const base = (mode: number): CfsNode => ({
    mode,
    size: 0,
    nlink: 1,
    uid: random() < 0.8 ? 0 : Math.floor(random() * 2 ** 32),
    gid: random() < 0.8 ? 0 : Math.floor(random() * 70000),
    rdev: 0,
    mtime: random() < 0.5 ? { sec: 1_000_000, nsec: 0 } : mtime(),
    xattrs: [],
  });
  const root = base(0o40755);
  root.children = [];
  const dirs: CfsNode[] = [root];
  const files: CfsNode[] = [];
  const sharedValue = Buffer.from('system_u:object_r:usr_t:s0');
  for (let i = 0; i < entries; i++) {
    const parent = pick(dirs);
    const r = random();
    let node: CfsNode;
    if (r < 0.15) {
      node = base(0o40000 | pick([0o755, 0o700, 0o1777]));
      node.children = [];
      dirs.push(node);
    } else if (r < 0.45) {
      node = base(0o100000 | pick([0o644, 0o755, 0o4755, 0o2755]));
      node.size = Math.floor(random() * 3000);
      if (node.size > 0 && random() < 0.3) node.content = randomBytes(random, Math.min(node.size, 64));
      if (node.content) node.size = node.content.length;
      else if (node.size > 0) {
        node.digest = randomBytes(random, 32);
        node.payload = `${Buffer.from(node.digest).toString('hex').slice(0, 2)}/${Buffer.from(node.digest).toString('hex').slice(2)}`;
      }
      files.push(node);
    } else if (r < 0.55) {
      node = base(0o120777);
      node.payload =
        random() < 0.1 ? bytes(1 + Math.floor(random() * 3000)).replace(/\0/g, 'x') : `/target/${name()}`;
      node.size = node.payload.length;
    } else if (r < 0.62) {
      node = base(pick([0o20644, 0o60660]));
      node.rdev = Math.floor(random() * 2 ** 32);
    } else if (r < 0.66) {
      node = base(0o20000); // a whiteout
    } else if (r < 0.7) {
      node = base(pick([0o10644, 0o140755]));
    } else if (r < 0.8 && files.length > 0) {
      const target = pick(files);
      const entry: CfsEntry = { name: name(), node: target, link: true };
      if (!parent.children!.some((c) => c.name === entry.name)) parent.children!.push(entry);
      continue;
    } else {
      node = base(0o100644);
    }
    const xattrCount = Math.floor(random() * 4);
    for (let k = 0; k < xattrCount; k++) {
      const key = pick([
        'user.a',
        'user.b=c',
        'security.selinux',
        'trusted.overlay.opaque',
        'trusted.x',
        'security.capability',
      ]);
      node.xattrs = node.xattrs.filter(([n]) => n !== key);
      node.xattrs.push([
        key,
        key === 'security.selinux' ? sharedValue : randomBytes(random, Math.floor(random() * 40)),
      ]);
    }
    const entry = { name: name(), node };
    if (!parent.children!.some((c) => c.name === entry.name)) parent.children!.push(entry);
  }
  for (const d of dirs) d.children!.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  // Hardlinks must point at a stored node: drop links whose target never got a stored entry.
  const stored = new Set<CfsNode>();
  (function index(n: CfsNode) {
    for (const e of n.children ?? [])
      if (!e.link) {
        stored.add(e.node);
        index(e.node);
      }
  })(root);
  for (const d of dirs) d.children = d.children!.filter((e) => !e.link || stored.has(e.node));
  return root;
}
