/**
 * Registry credentials in Docker's `config.json` (also containers' `auth.json`): `auths`
 * entries, `credHelpers` per host and a default `credsStore`, the helpers being run as
 * `docker-credential-NAME get|store|erase`. `seal login` and `seal logout` write the same file.
 */
import type * as ChildProcess from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.ts';
import { RegistryError } from './errors.ts';
import { DOCKER_HUB } from './reference.ts';

export interface Credentials {
  username: string;
  password: string;
}

interface ConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [key: string]: unknown;
}

/** The file credentials are read from and written to: `REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`. */
export function authFilePath(explicit?: string): string {
  if (explicit) return explicit;
  if (process.env.REGISTRY_AUTH_FILE) return process.env.REGISTRY_AUTH_FILE;
  const dir = process.env.DOCKER_CONFIG ?? join(homedir(), '.docker');
  return join(dir, 'config.json');
}

/** The keys `auths` may use for a host; Docker Hub's is historical. */
function keysFor(registry: string): string[] {
  if (registry === DOCKER_HUB)
    return ['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io'];
  return [
    registry,
    `https://${registry}`,
    `http://${registry}`,
    `https://${registry}/v1/`,
    `https://${registry}/v2/`,
  ];
}

async function readConfig(path: string): Promise<ConfigFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new RegistryError('CREDENTIALS', `cannot read ${path}: ${(error as Error).message}`, {
      subject: path,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (cause) {
    throw new RegistryError('CREDENTIALS', `${path} is not a valid credentials file (not JSON)`, {
      subject: path,
      cause,
    });
  }
  const problem = configProblem(value);
  if (problem) {
    throw new RegistryError('CREDENTIALS', `${path} is not a valid credentials file: ${problem}`, {
      subject: path,
    });
  }
  return value as ConfigFile;
}

/** A helper is a program named `docker-credential-NAME` found on PATH: NAME is a plain word. */
const HELPER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** What is wrong with the shape of a credentials file, or undefined. */
function configProblem(value: unknown): string | undefined {
  if (!isObject(value)) return 'not a JSON object';
  if (value.auths !== undefined) {
    if (!isObject(value.auths)) return '"auths" is not an object';
    for (const [key, entry] of Object.entries(value.auths)) {
      if (!isObject(entry)) return `the entry for ${JSON.stringify(key)} is not an object`;
      for (const field of ['auth', 'username', 'password', 'identitytoken'])
        if (entry[field] !== undefined && typeof entry[field] !== 'string')
          return `"${field}" of ${JSON.stringify(key)} is not a string`;
    }
  }
  if (value.credHelpers !== undefined) {
    if (!isObject(value.credHelpers)) return '"credHelpers" is not an object';
    for (const [key, helper] of Object.entries(value.credHelpers))
      if (typeof helper !== 'string' || !HELPER_NAME.test(helper))
        return `the helper of ${JSON.stringify(key)} is not a helper name`;
  }
  if (
    value.credsStore !== undefined &&
    (typeof value.credsStore !== 'string' || !HELPER_NAME.test(value.credsStore))
  )
    return '"credsStore" is not a helper name';
  return undefined;
}

function runHelper(helper: string, verb: 'get' | 'store' | 'erase', input: string): Promise<string> {
  const program = `docker-credential-${helper}`;
  return new Promise((resolve, reject) => {
    // Taken on use: most runs have no credential helper, and loading it is not free.
    const { spawn } = process.getBuiltinModule('node:child_process') as typeof ChildProcess;
    const child = spawn(program, [verb], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      err += d;
    });
    child.on('error', (cause) =>
      reject(
        new RegistryError('CREDENTIALS', `cannot run ${program}: ${cause.message}`, {
          subject: program,
          cause,
        }),
      ),
    );
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else
        reject(
          new RegistryError('CREDENTIALS', `${program} ${verb} failed: ${(err || out).trim()}`, {
            subject: program,
          }),
        );
    });
    child.stdin.end(input);
  });
}

function helperFor(config: ConfigFile, registry: string): string | undefined {
  for (const key of keysFor(registry)) {
    const helper = config.credHelpers?.[key];
    if (helper) return helper;
  }
  return config.credsStore || undefined;
}

/** Credentials for `registry`, or undefined when none are configured. */
export async function loadCredentials(registry: string, authFile?: string): Promise<Credentials | undefined> {
  const path = authFilePath(authFile);
  const config = await readConfig(path);
  for (const key of keysFor(registry)) {
    const entry = config.auths?.[key];
    if (!entry) continue;
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0)
        throw new RegistryError('CREDENTIALS', `malformed auth entry for ${key} in ${path}`, {
          subject: path,
        });
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    }
    if (entry.username !== undefined && entry.password !== undefined) {
      return { username: entry.username, password: entry.password };
    }
  }
  const helper = helperFor(config, registry);
  if (!helper) return undefined;
  const server = registry === DOCKER_HUB ? 'https://index.docker.io/v1/' : registry;
  let text: string;
  try {
    text = await runHelper(helper, 'get', server);
  } catch (error) {
    // Helpers answer "credentials not found" with a failure exit: that means anonymous.
    if (/not found/i.test((error as Error).message)) return undefined;
    throw error;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!isObject(parsed) || (parsed.Secret !== undefined && typeof parsed.Secret !== 'string')) {
    throw new RegistryError(
      'CREDENTIALS',
      `docker-credential-${helper} answered with something other than credentials`,
      {
        subject: `docker-credential-${helper}`,
      },
    );
  }
  if (!parsed.Secret) return undefined;
  return { username: typeof parsed.Username === 'string' ? parsed.Username : '', password: parsed.Secret };
}

/** Stores credentials for `registry` (in its helper if one is configured, else in the file, mode 0600). */
export async function saveCredentials(
  registry: string,
  credentials: Credentials,
  authFile?: string,
): Promise<string> {
  const path = authFilePath(authFile);
  const config = await readConfig(path);
  const helper = helperFor(config, registry);
  const key = registry === DOCKER_HUB ? 'https://index.docker.io/v1/' : registry;
  if (helper) {
    await runHelper(
      helper,
      'store',
      JSON.stringify({ ServerURL: key, Username: credentials.username, Secret: credentials.password }),
    );
    return `docker-credential-${helper}`;
  }
  const auths = { ...config.auths };
  for (const k of keysFor(registry)) delete auths[k];
  auths[key] = { auth: Buffer.from(`${credentials.username}:${credentials.password}`).toString('base64') };
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, `${JSON.stringify({ ...config, auths }, null, '\t')}\n`, 0o600);
  return path;
}

/** Removes stored credentials for `registry`; returns whether any were there. */
export async function removeCredentials(registry: string, authFile?: string): Promise<boolean> {
  const path = authFilePath(authFile);
  const config = await readConfig(path);
  let removed = false;
  const auths = { ...config.auths };
  for (const k of keysFor(registry)) {
    if (k in auths) {
      delete auths[k];
      removed = true;
    }
  }
  if (removed) await writeFileAtomic(path, `${JSON.stringify({ ...config, auths }, null, '\t')}\n`, 0o600);
  const helper = helperFor(config, registry);
  if (helper) {
    const key = registry === DOCKER_HUB ? 'https://index.docker.io/v1/' : registry;
    await runHelper(helper, 'erase', key).then(
      () => {
        removed = true;
      },
      () => {},
    );
  }
  return removed;
}
