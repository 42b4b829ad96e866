import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import {
  Spool,
  treeFromDirectory,
  treeFromTar,
  treeToTar,
  writeTreeToDirectory,
} from '../../src/tree/index.ts';
import { assertTreesEqual, generateEdgeCaseTree } from '../helpers/trees.ts';

const work = await mkdtemp(join(tmpdir(), 'seal-tree-'));
after(() => rm(work, { recursive: true, force: true }));

test('edge-case tree survives directory and tar round trips', async () => {
  const tree = generateEdgeCaseTree(7, { sockets: true });
  await writeTreeToDirectory(tree, join(work, 'out'));
  await assertTreesEqual(await treeFromDirectory(join(work, 'out')), tree, { root: false, mtime: 'nsec' });
  const spool = await Spool.create();
  try {
    const back = await treeFromTar(treeToTar(tree), spool);
    await assertTreesEqual(back, tree, { root: false, mtime: 'nsec', ignore: (p) => p === 'dev/socket' });
  } finally {
    await spool.close();
  }
});
