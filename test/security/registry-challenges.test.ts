/**
 * Hostile `WWW-Authenticate` challenges — garbage, huge, thousands of parameters, odd realms,
 * bytes HTTP forbids — end in a typed error or an answer, never a crash or a hang; tokens go to
 * the registry only, and a realm is asked only for what the registry's own challenge named.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { afterEach, test } from 'node:test';
import { SealError } from '../../src/errors.ts';
import { parseChallenges, RegistryClient } from '../../src/registry/index.ts';
import { BASIC, PASSWORD, type Recorder, startRecorder, stopAll, USER } from './registry-harness.ts';

afterEach(stopAll);

/** xorshift32, so every run sends the same headers. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

type Random = () => number;
const pick = <T>(random: Random, items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
const int = (random: Random, n: number) => Math.floor(random() * n);

/** Bytes from the whole range, HTTP's forbidden ones included. */
function garbage(random: Random, size: number, from = 0, to = 256): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = from + int(random, to - from);
  return out;
}

/** A challenge header value (latin1 bytes) of one of many hostile shapes, naming `realm` where it names one. */
function challenge(random: Random, realm: string): Buffer {
  const params = () =>
    Array.from({ length: int(random, 6) }, () =>
      pick(random, [
        `service="s${int(random, 9)}"`,
        `scope="repository:r:pull"`,
        `error="invalid_token"`,
        `x=${garbage(random, int(random, 12), 0x21, 0x7f).toString('latin1').replace(/[",]/g, '')}`,
        `realm="${realm}"`,
        'realm=',
        '=',
        ',,,',
        '"',
        '\\"',
      ]),
    ).join(pick(random, [',', ', ', ' ,', '  ']));
  const shapes: (() => string | Buffer)[] = [
    () => `Bearer realm="${realm}",service="registry"`,
    () => `Bearer ${params()}`,
    () => `Bearer realm=${realm},service=unquoted`,
    () => `Bearer realm="${realm}`,
    () => `Bearer realm="${realm}\\",service=\\"x"`,
    () => `bEaReR    realm = "${realm}" ,   service = "s"`,
    () => `Basic realm="r", Bearer realm="${realm}"`,
    () => `Basic ${params()}`,
    () => 'Basic',
    () => 'Negotiate, NTLM',
    () => `Digest realm="x", nonce="${randomBytes(8).toString('hex')}"`,
    () => '',
    () => ',',
    () =>
      `Bearer realm="${pick(random, [
        'file:///etc/passwd',
        'ftp://127.0.0.1/token',
        'data:text/plain,token',
        'javascript:alert(1)',
        '/token',
        'token',
        '',
        'http://',
        'http://[::1',
        'http://127.0.0.1:0/token',
        `${realm}?scope=evil`,
        realm.replace('http://', 'http://user:pw@'),
        realm.replace('http://', 'HTTP://'),
        `${realm}#frag`,
        `${realm}%0d%0aX-Injected:%20yes`,
      ])}"`,
    // Thousands of parameters, and one value near Node's header limit.
    () => `Bearer realm="${realm}",${Array.from({ length: 1500 }, (_, i) => `p${i}=${i}`).join(',')}`,
    () => `Bearer realm="${realm}",service="${'s'.repeat(12_000)}"`,
    () => `Bearer realm="${'a'.repeat(14_000)}"`,
    // Beyond the limit: the answer cannot even be parsed.
    () => `Bearer realm="${realm}",x="${'x'.repeat(70_000)}"`,
    // Printable garbage, garbage with bytes HTTP forbids, and a valid challenge with one byte changed.
    () => garbage(random, 1 + int(random, 300), 0x20, 0x7f),
    () => garbage(random, 1 + int(random, 60)),
    () => {
      const valid = Buffer.from(
        `Bearer realm="${realm}",service="registry",scope="repository:r:pull"`,
        'latin1',
      );
      valid[int(random, valid.length)] = int(random, 256);
      return valid;
    },
  ];
  const made = pick(random, shapes)();
  return Buffer.isBuffer(made) ? made : Buffer.from(made, 'latin1');
}

test('2000 hostile WWW-Authenticate headers: only typed errors or answers, tokens only to the registry', async () => {
  const random = prng(21);
  const issued = new Set<string>();
  const realm = await startRecorder((req, res) => {
    req.resume();
    if (random() < 0.2) {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(garbage(random, int(random, 40), 0x20, 0x7f));
      return;
    }
    const token = `tok-${randomBytes(8).toString('hex')}`;
    issued.add(token);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token }));
  });
  let header: Buffer = Buffer.alloc(0);
  let extra = 0;
  const registry = await startRecorder((req, res) => {
    req.resume();
    const given = req.headers.authorization;
    if (given?.startsWith('Bearer ') && issued.has(given.slice(7))) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    // Written raw, so that the header can hold what Node's server would refuse to send.
    const lines = [
      Buffer.from('HTTP/1.1 401 Unauthorized\r\n'),
      Buffer.from('www-authenticate: '),
      header,
      Buffer.from('\r\n'),
    ];
    for (let i = 0; i < extra; i++)
      lines.push(Buffer.from(`www-authenticate: Bearer realm="${realm.origin}/t${i}"\r\n`));
    lines.push(Buffer.from('content-length: 0\r\nconnection: close\r\n\r\n'));
    res.socket?.end(Buffer.concat(lines));
  });
  const codes = new Map<string, number>();
  let answered = 0;
  for (let i = 0; i < 2000; i++) {
    header = challenge(random, `${realm.origin}/token`);
    extra = random() < 0.1 ? 1 + int(random, 3) : 0;
    // A fresh client each time: the challenge is parsed and acted on anew.
    const client = new RegistryClient(registry.host, {
      plainHttp: true,
      retries: 1,
      ...(random() < 0.8 ? { credentials: { username: USER, password: PASSWORD } } : {}),
    });
    try {
      await client.ping();
      answered++;
    } catch (error) {
      assert.ok(
        error instanceof SealError,
        `untyped failure for ${JSON.stringify(header.toString('latin1').slice(0, 200))}: ${(error as Error)?.stack}`,
      );
      codes.set(error.code, (codes.get(error.code) ?? 0) + 1);
    } finally {
      client.close();
    }
  }
  // The fuzz reached every path: tokens used, challenges refused, realms unusable, headers unparsable.
  assert.ok(answered > 0, 'no challenge was ever satisfied');
  for (const code of ['UNAUTHORIZED', 'PROTOCOL', 'NETWORK'])
    assert.ok((codes.get(code) ?? 0) > 0, `no ${code} in ${[...codes]}`);
  assertTokensStayed(realm, registry, issued);
});

/** No token went back to the realm, and the registry got only what its realm issued (or the Basic header). */
function assertTokensStayed(realm: Recorder, registry: Recorder, issued: Set<string>): void {
  const seenByRealm = JSON.stringify(realm.requests);
  for (const token of issued) assert.ok(!seenByRealm.includes(token), 'a token went to the realm');
  for (const r of realm.requests)
    assert.ok(r.headers.authorization === undefined || r.headers.authorization === BASIC);
  for (const r of registry.requests) {
    const given = r.headers.authorization;
    if (given === undefined || given === BASIC) continue;
    assert.ok(given.startsWith('Bearer ') && issued.has(given.slice(7)), `the registry got ${given}`);
  }
}

test('the challenge parser takes 3000 hostile headers and returns only schemes and string params', () => {
  const random = prng(5);
  for (let i = 0; i < 3000; i++) {
    const text = challenge(random, 'http://127.0.0.1:1/token').toString('latin1');
    const parsed = parseChallenges(text);
    for (const c of parsed) {
      assert.match(c.scheme, /^[a-z0-9!#$%&'*+.^_`|~-]+$/);
      assert.equal(typeof c.params, 'object');
      for (const [k, v] of Object.entries(c.params)) {
        assert.equal(typeof k, 'string');
        assert.equal(typeof v, 'string');
      }
    }
  }
  // A parameter named like an Object property changes no prototype.
  const [c] = parseChallenges('Bearer __proto__="x", constructor="y", realm="r"');
  assert.equal(c?.params.realm, 'r');
  assert.equal(Object.getPrototypeOf(c?.params), Object.prototype);
});
