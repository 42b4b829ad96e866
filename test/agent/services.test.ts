/** The OCI runtime configuration of a service, from the image's config and the manifest's entry. */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { AgentError } from '../../src/agent/index.ts';
import { resolveUser, runtimeConfig } from '../../src/agent/services.ts';

const work = mkdtempSync(join(tmpdir(), 'seal-services-'));
after(() => rmSync(work, { recursive: true, force: true }));
const rootfs = join(work, 'rootfs');
mkdirSync(join(rootfs, 'etc'), { recursive: true });
writeFileSync(
  join(rootfs, 'etc/passwd'),
  'root:x:0:0::/:/bin/sh\nwww:x:33:34::/srv:/bin/sh\nbroken:x:x:y::/:/bin/sh\n',
);
writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\nwww:x:34:\nstaff:x:50:\n');

test('users: numbers as they are, names looked up in the image, the primary group from passwd', () => {
  assert.deepEqual(resolveUser(undefined, rootfs), { uid: 0, gid: 0 });
  assert.deepEqual(resolveUser('1000', rootfs), { uid: 1000, gid: 0 });
  assert.deepEqual(resolveUser('1000:1001', rootfs), { uid: 1000, gid: 1001 });
  assert.deepEqual(resolveUser('www', rootfs), { uid: 33, gid: 34 });
  assert.deepEqual(resolveUser('www:staff', rootfs), { uid: 33, gid: 50 });
  for (const bad of ['nobody', 'www:nogroup', 'broken'])
    assert.throws(
      () => resolveUser(bad, rootfs),
      (e) => e instanceof AgentError && e.code === 'AGENT_SERVICE',
      bad,
    );
});

test('the manifest entry overrides the image config; volumes bind the data partition; the host network is shared', () => {
  const image = {
    config: {
      Entrypoint: ['/bin/app'],
      Cmd: ['--serve'],
      Env: ['PATH=/bin', 'MODE=image'],
      WorkingDir: '/srv',
      User: 'www',
    },
  };
  const volumes = join(work, 'volumes');
  const fromImage = runtimeConfig('web', rootfs, image as never, {}, volumes);
  assert.deepEqual(fromImage.process.args, ['/bin/app', '--serve']);
  assert.deepEqual(fromImage.process.user, { uid: 33, gid: 34 });
  assert.equal(fromImage.process.cwd, '/srv');
  assert.equal(fromImage.process.noNewPrivileges, true);
  assert.equal(fromImage.hostname, 'web');
  assert.deepEqual(fromImage.root, { path: rootfs, readonly: false });
  assert.ok(!fromImage.linux.namespaces.some((n) => n.type === 'network'), 'the host network is shared');
  const spec = {
    command: ['/bin/other'],
    env: { MODE: 'manifest', EXTRA: '1' },
    user: '0',
    mounts: [
      { source: 'state', target: '/data' },
      { source: 'www', target: '/srv', readonly: true },
    ],
  };
  const c = runtimeConfig('web', rootfs, image as never, spec, volumes);
  assert.deepEqual(c.process.args, ['/bin/other']);
  assert.deepEqual(c.process.env, ['PATH=/bin', 'MODE=manifest', 'EXTRA=1']);
  assert.deepEqual(c.process.user, { uid: 0, gid: 0 });
  const binds = c.mounts.filter((m) => m.type === 'bind');
  assert.deepEqual(binds, [
    {
      destination: '/data',
      type: 'bind',
      source: join(volumes, 'state'),
      options: ['rbind', 'rw', 'nosuid', 'nodev'],
    },
    {
      destination: '/srv',
      type: 'bind',
      source: join(volumes, 'www'),
      options: ['rbind', 'ro', 'nosuid', 'nodev'],
    },
  ]);
  // No secrets fetched at boot: nothing at /run/secrets. Fetched: read-only there, after the volumes.
  assert.ok(!c.mounts.some((m) => m.destination === '/run/secrets'));
  const withSecrets = runtimeConfig('web', rootfs, image as never, spec, volumes, '/run/seal/secrets');
  assert.deepEqual(withSecrets.mounts.at(-1), {
    destination: '/run/secrets',
    type: 'bind',
    source: '/run/seal/secrets',
    options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
  });
});

test('no command at all, and volume names or targets that could reach outside, are refused', () => {
  assert.throws(() => runtimeConfig('x', rootfs, { config: {} } as never, {}, work), /no command/);
  for (const [source, target] of [
    ['../etc', '/data'],
    ['a/b', '/data'],
    ['', '/data'],
    ['ok', 'relative'],
    ['ok', '/data/../../etc'],
  ]) {
    assert.throws(
      () =>
        runtimeConfig(
          'x',
          rootfs,
          { config: { Cmd: ['/x'] } } as never,
          { mounts: [{ source: source!, target: target! }] },
          work,
        ),
      (e) => e instanceof AgentError && e.code === 'AGENT_SERVICE',
      `${source} at ${target}`,
    );
  }
});
