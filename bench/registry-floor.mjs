/**
 * The least any Node.js program does to push or pull an image over loopback, timed by
 * bench/registry.ts beside Seal and skopeo: one plain JavaScript file (no type stripping, no
 * module graph), CommonJS built-ins, no progress, no retries, no store. It still checks every
 * digest and, pulling, makes each blob durable before naming it. What it costs is what Node.js
 * itself costs here: process start and a single thread for receiving and hashing.
 *   node bench/registry-floor.mjs push LAYOUT HOST/REPO:TAG
 *   node bench/registry-floor.mjs pull HOST/REPO:TAG DIR
 */
const http = process.getBuiltinModule('node:http');
const { createHash } = process.getBuiltinModule('node:crypto');
const fs = process.getBuiltinModule('node:fs');

const [mode, a, b] = process.argv.slice(2);
const ref = mode === 'push' ? b : a;
const [, host, repo, tag] = /^([^/]+)\/(.+):([^:/]+)$/.exec(ref);
const agent = new http.Agent({ keepAlive: true });

function request(method, path, headers = {}, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(`http://${host}${path}`, { method, agent, headers }, resolve);
    req.on('error', reject);
    if (body === undefined || Buffer.isBuffer(body)) return req.end(body);
    (async () => {
      for await (const chunk of body) if (!req.write(chunk)) await new Promise((ok) => req.once('drain', ok));
      req.end();
    })().catch(reject);
  });
}

async function text(res) {
  const chunks = [];
  for await (const chunk of res) chunks.push(chunk);
  return Buffer.concat(chunks);
}

const check = (hash, digest) => {
  if (`sha256:${hash.digest('hex')}` !== digest) throw new Error(`${digest}: wrong digest`);
};

async function push(layout) {
  const blob = (digest) => `${layout}/blobs/sha256/${digest.slice(7)}`;
  const root = JSON.parse(fs.readFileSync(`${layout}/index.json`, 'utf8')).manifests[0];
  const bytes = fs.readFileSync(blob(root.digest));
  check(createHash('sha256').update(bytes), root.digest);
  const manifest = JSON.parse(bytes);
  (await request('GET', '/v2/')).resume();
  const blobs = [manifest.config, ...manifest.layers].sort((x, y) => y.size - x.size);
  await Promise.all(
    blobs.map(async ({ digest, size }) => {
      const head = await request('HEAD', `/v2/${repo}/blobs/${digest}`);
      head.resume();
      if (head.statusCode === 200) return;
      const post = await request('POST', `/v2/${repo}/blobs/uploads/`, { 'content-length': '0' });
      post.resume();
      const url = new URL(post.headers.location, `http://${host}`);
      url.searchParams.set('digest', digest);
      const hash = createHash('sha256');
      const data = (async function* () {
        for await (const chunk of fs.createReadStream(blob(digest), { highWaterMark: 1 << 20 })) {
          hash.update(chunk);
          yield chunk;
        }
        check(hash, digest);
      })();
      const headers = { 'content-length': String(size), 'content-type': 'application/octet-stream' };
      const put = await request('PUT', url.pathname + url.search, headers, data);
      put.resume();
      if (put.statusCode !== 201) throw new Error(`${digest}: upload answered ${put.statusCode}`);
    }),
  );
  const put = await request('PUT', `/v2/${repo}/manifests/${tag}`, { 'content-type': root.mediaType }, bytes);
  put.resume();
  if (put.statusCode !== 201) throw new Error(`manifest: answered ${put.statusCode}`);
}

async function pull(dir) {
  fs.mkdirSync(`${dir}/blobs/sha256`, { recursive: true });
  const store = (digest, bytes) => fs.writeFileSync(`${dir}/blobs/sha256/${digest.slice(7)}`, bytes);
  (await request('GET', '/v2/')).resume();
  const accept = 'application/vnd.oci.image.manifest.v1+json';
  const res = await request('GET', `/v2/${repo}/manifests/${tag}`, { accept });
  const bytes = await text(res);
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  const manifest = JSON.parse(bytes);
  await Promise.all(
    [manifest.config, ...manifest.layers].map(async (desc) => {
      const blob = await request('GET', `/v2/${repo}/blobs/${desc.digest}`);
      const temp = `${dir}/blobs/sha256/.${desc.digest.slice(7)}`;
      const fd = fs.openSync(temp, 'w');
      const hash = createHash('sha256');
      let position = 0;
      for await (const chunk of blob) {
        hash.update(chunk);
        position += fs.writeSync(fd, chunk, 0, chunk.length, position);
      }
      check(hash, desc.digest);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(temp, `${dir}/blobs/sha256/${desc.digest.slice(7)}`);
    }),
  );
  store(digest, bytes);
  const index = { schemaVersion: 2, manifests: [{ mediaType: accept, digest, size: bytes.length }] };
  fs.writeFileSync(`${dir}/index.json`, JSON.stringify(index));
  fs.writeFileSync(`${dir}/oci-layout`, '{"imageLayoutVersion":"1.0.0"}');
}

await (mode === 'push' ? push(a) : pull(b));
agent.destroy();
