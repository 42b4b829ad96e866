/**
 * The QMP client against a stand-in for qemu's control socket: greeting, negotiation, commands
 * with events in between, error answers, and peers that are not QMP (bad greeting, no answer,
 * endless line, closing early) refused with MACHINE_QMP.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { MachineError, Qmp } from '../../src/machine/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'seal-qmp-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;

/** A Unix socket server whose connections `serve` handles; returns its path. */
async function server(serve: (socket: Socket) => void): Promise<{ path: string; server: Server }> {
  const path = join(dir, `qmp-${serial++}.sock`);
  const s = createServer(serve);
  await new Promise<void>((resolve) => s.listen(path, resolve));
  return { path, server: s };
}

/** Behaves as qemu does: greets, then answers each command line with `answer(command)`. */
function qemuLike(answer: (command: { execute: string }) => string[]) {
  return (socket: Socket) => {
    socket.write(
      '{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}}, "capabilities": []}}\r\n',
    );
    let buffer = '';
    socket.on('data', (d) => {
      buffer += d.toString();
      for (let nl = buffer.indexOf('\n'); nl >= 0; nl = buffer.indexOf('\n')) {
        const command = JSON.parse(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
        for (const line of answer(command)) socket.write(`${line}\r\n`);
      }
    });
  };
}

const refused = (pattern: RegExp) => (e: unknown) =>
  e instanceof MachineError && e.code === 'MACHINE_QMP' && pattern.test(e.message);

test('negotiates, runs commands, skips events, and reports error answers', async () => {
  const seen: string[] = [];
  const { path, server: s } = await server(
    qemuLike((c) => {
      seen.push(c.execute);
      if (c.execute === 'query-status')
        return [
          '{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RTC_CHANGE", "data": {}}',
          '{"return": {"status": "running", "running": true}}',
        ];
      if (c.execute === 'nonsense')
        return ['{"error": {"class": "CommandNotFound", "desc": "The command nonsense has not been found"}}'];
      return ['{"return": {}}'];
    }),
  );
  try {
    const qmp = await Qmp.connect(path);
    assert.deepEqual(await qmp.execute('query-status'), { status: 'running', running: true });
    await assert.rejects(
      qmp.execute('nonsense'),
      refused(/nonsense: The command nonsense has not been found/),
    );
    assert.deepEqual(await qmp.execute('system_powerdown'), {});
    qmp.close();
    assert.deepEqual(seen, ['qmp_capabilities', 'query-status', 'nonsense', 'system_powerdown']);
  } finally {
    s.close();
  }
});

test('peers that are not qemu are refused: no socket, another greeting, silence, endless lines, a hang-up', async () => {
  await assert.rejects(Qmp.connect(join(dir, 'none.sock')), refused(/cannot reach qemu/));
  const cases: [string, (socket: Socket) => void, RegExp][] = [
    ['greeting', (s) => s.write('{"hello": 1}\n'), /did not greet as QMP does/],
    ['not JSON', (s) => s.write('SSH-2.0-OpenSSH\n'), /not JSON/],
    ['silence', () => {}, /no answer within 300 ms/],
    ['endless', (s) => s.write('x'.repeat((1 << 20) + 10)), /longer than/],
    ['hang-up', (s) => s.end(), /closed the QMP connection/],
  ];
  for (const [what, serve, pattern] of cases) {
    const { path, server: s } = await server(serve);
    try {
      await assert.rejects(Qmp.connect(path, 300), refused(pattern), what);
    } finally {
      s.close();
    }
  }
});
