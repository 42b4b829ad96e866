/** The seal.* kernel parameters: every accepted form, and the malformed ones refused with AGENT_CMDLINE. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentError, parseCommandLine } from '../../src/agent/index.ts';

test('defaults, and every parameter in its accepted forms among the kernel’s own', () => {
  assert.deepEqual(parseCommandLine('console=ttyS0 quiet loglevel=3\n'), {
    tag: 'current',
    debug: false,
    onFailure: 'poweroff',
    trialBoots: 3,
    registryInsecure: false,
    management: false,
  });
  const p = parseCommandLine(
    'BOOT_IMAGE=x seal.tag=system-8 seal.debug seal.on-failure=reboot seal.net=10.0.2.15/24,gw=10.0.2.2 seal.test=before-switch rd.x="a b"',
  );
  assert.equal(p.tag, 'system-8');
  assert.equal(p.debug, true);
  assert.equal(p.onFailure, 'reboot');
  assert.equal(p.test, 'before-switch');
  assert.deepEqual(p.net, {
    device: 'eth0',
    address: '10.0.2.15',
    netmask: '255.255.255.0',
    gateway: '10.0.2.2',
  });
  assert.deepEqual(parseCommandLine('seal.net=192.168.7.9/20,dev=enp1s0').net, {
    device: 'enp1s0',
    address: '192.168.7.9',
    netmask: '255.255.240.0',
  });
  assert.equal(parseCommandLine('seal.debug=0').debug, false);
  assert.equal(parseCommandLine('seal.tag="quoted"').tag, 'quoted');
  assert.equal(
    parseCommandLine('seal.boot=docker://10.0.2.100:5000/device/system:8').boot,
    'docker://10.0.2.100:5000/device/system:8',
  );
  assert.deepEqual(
    parseCommandLine(
      'seal.follow=docker://10.0.2.100:5000/device/system:stable seal.follow-interval=5 seal.registry-insecure seal.trial-boots=1',
    ),
    {
      tag: 'current',
      debug: false,
      onFailure: 'poweroff',
      trialBoots: 1,
      follow: { source: 'docker://10.0.2.100:5000/device/system:stable', intervalMs: 5000 },
      registryInsecure: true,
      management: false,
    },
  );
  const m = parseCommandLine('seal.management seal.install=docker://10.0.2.100:5000/device/system:14');
  assert.equal(m.management, true);
  assert.equal(m.install, 'docker://10.0.2.100:5000/device/system:14');
  const i = parseCommandLine(
    'seal.install=docker://10.0.2.100:5000/device/system:12 seal.install-disk=nvme0n1',
  );
  assert.equal(i.management, false);
  assert.equal(i.install, 'docker://10.0.2.100:5000/device/system:12');
  assert.equal(i.installDisk, 'nvme0n1');
});

test('seal.media: update media looked for every follow interval, 10 s without seal.follow', () => {
  assert.deepEqual(parseCommandLine('quiet seal.media').media, { intervalMs: 10_000 });
  assert.equal(parseCommandLine('quiet seal.media=0').media, undefined);
  assert.equal(parseCommandLine('quiet').media, undefined);
  assert.deepEqual(parseCommandLine('seal.media seal.follow-interval=3').media, { intervalMs: 3000 });
  // Either order of the words.
  assert.deepEqual(parseCommandLine('seal.follow-interval=3 seal.media').media, { intervalMs: 3000 });
  const both = parseCommandLine('seal.follow=docker://h:1/r:t seal.media');
  assert.deepEqual(both.follow, { source: 'docker://h:1/r:t', intervalMs: 300_000 });
  assert.deepEqual(both.media, { intervalMs: 300_000 });
  const timed = parseCommandLine('seal.follow-interval=7 seal.follow=docker://h:1/r:t seal.media');
  assert.deepEqual(timed.follow, { source: 'docker://h:1/r:t', intervalMs: 7000 });
  assert.deepEqual(timed.media, { intervalMs: 7000 });
});

test('seal.push: a TCP port, with the network it needs', () => {
  assert.equal(parseCommandLine('seal.net=10.0.2.15/24 seal.push=7000').push, 7000);
  assert.equal(parseCommandLine('seal.push=65535 seal.net=10.0.2.15/24').push, 65535);
  assert.equal(parseCommandLine('seal.net=10.0.2.15/24').push, undefined);
});

test('composefs.digest: the sealed-UKI pin of the host root, 64 lowercase hex digits', () => {
  const digest = 'a3'.repeat(32);
  assert.equal(parseCommandLine(`console=ttyS0 composefs.digest=${digest} quiet`).composefsDigest, digest);
  assert.equal(parseCommandLine('console=ttyS0 quiet').composefsDigest, undefined);
  for (const bad of [
    'A3'.repeat(32),
    'a3'.repeat(31),
    `${'a3'.repeat(32)}00`,
    `sha256:${'a3'.repeat(32)}`,
    '',
    '../x',
  ])
    assert.throws(
      () => parseCommandLine(`composefs.digest=${bad}`),
      (e) => e instanceof AgentError && e.code === 'AGENT_CMDLINE' && /composefs\.digest/.test(e.message),
      bad,
    );
});

test('seal.attest and seal.attest-secret: the verifier URL normalized, the names in order', () => {
  const p = parseCommandLine(
    'console=ttyS0 seal.net=10.0.2.15/24,gw=10.0.2.2 seal.attest=http://10.0.2.101:7443 seal.attest-secret=join-token,disk.key seal.attest-secret=tls_v2',
  );
  assert.deepEqual(p.attest, {
    url: 'http://10.0.2.101:7443/',
    secrets: ['join-token', 'disk.key', 'tls_v2'],
  });
  const order = parseCommandLine(
    'seal.attest-secret=x seal.attest=https://verifier.example:8443/fleet/?q=1 seal.net=10.0.2.15/24',
  );
  assert.deepEqual(order.attest, { url: 'https://verifier.example:8443/fleet/', secrets: ['x'] });
  assert.equal(parseCommandLine('seal.net=10.0.2.15/24').attest, undefined);
});

test('malformed or unknown seal.* parameters are refused, naming the parameter', () => {
  for (const bad of [
    'seal.tag=../etc',
    'seal.tag=a/b',
    'seal.tag=',
    'seal.on-failure=shell',
    'seal.net=10.0.2.15',
    'seal.net=10.0.2.256/24',
    'seal.net=10.0.2.15/33',
    'seal.net=10.0.2.15/24,gw=host',
    'seal.net=10.0.2.15/24,dev=eth0;rm',
    'seal.net=10.0.2.15/24,mtu=1500',
    'seal.unknown=1',
    'seal.follow=http://x',
    'seal.boot=/etc/passwd',
    'seal.follow-interval=0',
    'seal.follow-interval=5',
    'seal.trial-boots=0',
    'seal.trial-boots=11',
    'seal.management',
    'seal.install-disk=vda',
    'seal.install=docker://h:1/r:t seal.install-disk=../vda',
    'seal.install=docker://h:1/r:t seal.install-disk=VDA',
    'seal.install=docker://h:1/r:t seal.follow=docker://h:1/r:t',
    'seal.management seal.install=docker://h:1/r:t seal.install-disk=vda',
    'seal.management seal.install=../x',
    'seal.management seal.install=docker://h:1/r:t seal.boot=docker://h:1/r:t',
    'seal.management seal.install=docker://h:1/r:t seal.follow=docker://h:1/r:t',
    'seal.install=docker://h:1/r:t seal.media',
    'seal.push=7000',
    'seal.net=10.0.2.15/24 seal.push=0',
    'seal.net=10.0.2.15/24 seal.push=65536',
    'seal.net=10.0.2.15/24 seal.push=70a',
    'seal.net=10.0.2.15/24 seal.push=',
    'seal.net=10.0.2.15/24 seal.push=-1',
    'seal.net=10.0.2.15/24 seal.install=docker://h:1/r:t seal.push=7000',
    'seal.net=10.0.2.15/24 seal.management seal.install=docker://h:1/r:t seal.push=7000',
    'seal.management seal.install=docker://h:1/r:t seal.media',
    'seal.media seal.follow-interval=0',
    'seal.net=10.0.2.15/24 seal.attest=ftp://10.0.2.101:7443/ seal.attest-secret=a',
    'seal.net=10.0.2.15/24 seal.attest=file:///etc/passwd seal.attest-secret=a',
    'seal.net=10.0.2.15/24 seal.attest=http://user:pw@10.0.2.101:7443/ seal.attest-secret=a',
    'seal.net=10.0.2.15/24 seal.attest=not-a-url seal.attest-secret=a',
    'seal.net=10.0.2.15/24 seal.attest=http://10.0.2.101:7443/',
    'seal.net=10.0.2.15/24 seal.attest-secret=a',
    'seal.attest=http://10.0.2.101:7443/ seal.attest-secret=a',
    'seal.net=10.0.2.15/24 seal.attest=http://10.0.2.101:7443/ seal.attest-secret=../x',
    'seal.net=10.0.2.15/24 seal.attest=http://10.0.2.101:7443/ seal.attest-secret=..',
    'seal.net=10.0.2.15/24 seal.attest=http://10.0.2.101:7443/ seal.attest-secret=a/b',
    'seal.net=10.0.2.15/24 seal.attest=http://10.0.2.101:7443/ seal.attest-secret=a,',
    'seal.net=10.0.2.15/24 seal.attest=http://10.0.2.101:7443/ seal.attest-secret=a,a',
    'seal.net=10.0.2.15/24 seal.attest=http://10.0.2.101:7443/ seal.attest-secret=a seal.attest-secret=a',
    'seal.net=10.0.2.15/24 seal.attest=http://10.0.2.101:7443/ seal.attest-secret=a seal.management seal.install=docker://h:1/r:t',
    'seal.net=10.0.2.15/24 seal.attest=http://10.0.2.101:7443/ seal.attest-secret=a seal.install=docker://h:1/r:t',
  ]) {
    assert.throws(
      () => parseCommandLine(`quiet ${bad}`),
      (e) =>
        e instanceof AgentError &&
        e.code === 'AGENT_CMDLINE' &&
        bad.split(' ').some((word) => e.message.includes(word.split('=')[0]!)),
      bad,
    );
  }
});
