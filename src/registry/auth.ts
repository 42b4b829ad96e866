/**
 * Authentication against a registry: `WWW-Authenticate` challenges, Basic, and Bearer tokens
 * fetched from the realm for a set of scopes (several at once for cross-repository mounts),
 * cached until shortly before they expire. The client takes challenges only from the registry's
 * own origin and attaches the resulting header only to requests for that origin; an HTTPS
 * registry's realm must be HTTPS too, so credentials never cross the network in the clear.
 */

import type { Credentials } from './credentials.ts';
import { quoted, RegistryError } from './errors.ts';
import { type HttpTransport, readBody } from './http.ts';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a `WWW-Authenticate` header (RFC 7235: schemes followed by auth-params, quoted strings with escapes). */
export function parseChallenges(text: string): Challenge[] {
  const challenges: Challenge[] = [];
  const token = /[A-Za-z0-9!#$%&'*+.^_`|~-]+/y;
  const quotedString = /"((?:[^"\\]|\\.)*)"/y;
  const unquoted = /[^,\s]*/y;
  let pos = 0;
  const read = (re: RegExp): RegExpExecArray | null => {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (m) pos = re.lastIndex;
    return m;
  };
  const skip = (chars: RegExp) => {
    while (pos < text.length && chars.test(text[pos] as string)) pos++;
  };
  while (pos < text.length) {
    skip(/[\s,]/);
    const name = read(token);
    if (!name) break;
    skip(/\s/);
    const current = challenges.at(-1);
    if (text[pos] === '=' && current) {
      pos++;
      skip(/\s/);
      const q = read(quotedString);
      const value = q ? (q[1] as string).replace(/\\(.)/g, '$1') : (read(unquoted)?.[0] ?? '');
      current.params[name[0].toLowerCase()] = value;
    } else {
      challenges.push({ scheme: name[0].toLowerCase(), params: {} });
    }
  }
  return challenges;
}

interface CachedToken {
  value: string;
  expires: number;
}

/** Authorization state for one registry host. */
export class Authenticator {
  readonly #transport: HttpTransport;
  readonly #credentials: () => Promise<Credentials | undefined>;
  #challenge: Challenge | undefined;
  #tokens = new Map<string, CachedToken>();
  #pending = new Map<string, Promise<string>>();

  constructor(transport: HttpTransport, credentials: () => Promise<Credentials | undefined>) {
    this.#transport = transport;
    this.#credentials = credentials;
  }

  /**
   * The `Authorization` header for a request needing `scopes`, if the registry asked for one;
   * a token fetched for it must come by `deadline` (limits.ts).
   */
  async header(scopes: string[], deadline?: number): Promise<string | undefined> {
    const challenge = this.#challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') {
      const creds = await this.#credentials();
      return creds
        ? `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`
        : undefined;
    }
    if (challenge.scheme !== 'bearer') return undefined;
    const key = [...new Set(scopes)].sort().join(' ');
    const cached = this.#tokens.get(key);
    if (cached && cached.expires > Date.now()) return `Bearer ${cached.value}`;
    let pending = this.#pending.get(key);
    if (!pending) {
      pending = this.#fetchToken(challenge, key ? key.split(' ') : [], deadline).finally(() =>
        this.#pending.delete(key),
      );
      this.#pending.set(key, pending);
    }
    return `Bearer ${await pending}`;
  }

  /**
   * Records the challenge of a 401 the registry itself (at `registry`) answered; returns whether
   * a retry with credentials can be attempted. A Bearer realm in plain HTTP is refused when the
   * registry speaks HTTPS: credentials and tokens would cross the network in the clear.
   */
  onUnauthorized(wwwAuthenticate: string | undefined, scopes: string[], registry: URL): boolean {
    const challenges = parseChallenges(wwwAuthenticate ?? '');
    const chosen =
      challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
    if (!chosen) return false;
    const realm = chosen.params.realm;
    if (chosen.scheme === 'bearer' && registry.protocol === 'https:' && realm !== undefined) {
      let protocol: string | undefined;
      try {
        protocol = new URL(realm).protocol;
      } catch {}
      if (protocol === 'http:') {
        throw new RegistryError(
          'PROTOCOL',
          `${registry.host} (HTTPS) names a token realm in plain HTTP, ${quoted(realm)}: refusing to send credentials in the clear`,
          { subject: realm },
        );
      }
    }
    this.#challenge = chosen;
    // A 401 with a token we already hold means it expired or lacks a scope: forget it.
    this.#tokens.delete([...new Set(scopes)].sort().join(' '));
    return true;
  }

  async #fetchToken(challenge: Challenge, scopes: string[], deadline: number | undefined): Promise<string> {
    const realm = challenge.params.realm;
    let url: URL;
    try {
      url = new URL(realm ?? '');
      if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new Error('not http(s)');
    } catch (cause) {
      throw new RegistryError(
        'PROTOCOL',
        `Bearer challenge with an unusable realm ${quoted(String(realm))}`,
        {
          subject: String(realm),
          cause,
        },
      );
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    for (const scope of scopes) url.searchParams.append('scope', scope);
    const headers: Record<string, string> = {};
    const creds = await this.#credentials();
    if (creds)
      headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
    // Redirects from the realm to another origin go there without the credentials (http.ts).
    const res = await this.#transport.request({ method: 'GET', url, headers, deadline });
    const body = await readBody(res, 1 << 20);
    if (res.status === 401 || res.status === 403) {
      throw new RegistryError(
        res.status === 401 ? 'UNAUTHORIZED' : 'DENIED',
        `token server ${url.origin} refused credentials`,
        {
          subject: realm,
          status: res.status,
        },
      );
    }
    if (res.status !== 200) {
      throw new RegistryError(
        res.status >= 500 ? 'SERVER' : 'PROTOCOL',
        `token server ${url.origin} answered ${res.status}`,
        {
          subject: realm,
          status: res.status,
        },
      );
    }
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      parsed = JSON.parse(body.toString('utf8'));
      if (typeof parsed !== 'object' || parsed === null) throw new Error('not an object');
    } catch (cause) {
      throw new RegistryError('PROTOCOL', `token server ${url.origin} answered with invalid JSON`, {
        subject: realm,
        cause,
      });
    }
    const token = parsed.token ?? parsed.access_token;
    // A token goes into a header: only visible ASCII is acceptable.
    if (typeof token !== 'string' || !/^[\x21-\x7e]+$/.test(token))
      throw new RegistryError('PROTOCOL', `token server ${url.origin} gave no token`, { subject: realm });
    const lifetime = Math.max(60, Number(parsed.expires_in) || 60);
    // Refresh a little early so a token never expires between check and use.
    this.#tokens.set(scopes.slice().sort().join(' '), {
      value: token,
      expires: Date.now() + (lifetime - 10) * 1000,
    });
    return token;
  }
}
