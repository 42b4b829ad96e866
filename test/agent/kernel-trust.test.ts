/** What the agent reads of the kernel's keyrings: the serial number of a keyring in /proc/keys. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { keyringSerial } from '../../src/agent/kernel-trust.ts';

// /proc/keys of the 6.12 test kernel (as root, after boot), with lines that must not match.
const PROC_KEYS = [
  '0a6a61a5 I------     1 perm 1f0b0000     0     0 keyring   .builtin_trusted_keys: 1',
  '1b1f0e4e I------     1 perm 1f030000     0     0 keyring   .fs-verity: empty',
  '2c6e0a3e I------     1 perm 1f0f0000     0     0 keyring   .platform: 2',
  '3d9e1b2a I--Q---     1 perm 3f010000     0     0 user      .fs-verity: 4',
  '7fffff01 I------     1 perm 1f030000     0     0 keyring   .fs-verity-other: empty',
  '',
].join('\n');

test('a keyring is found by its type and exact name in /proc/keys, and nothing else is taken for it', () => {
  assert.equal(keyringSerial(PROC_KEYS, '.fs-verity'), 0x1b1f0e4e);
  assert.equal(keyringSerial(PROC_KEYS, '.platform'), 0x2c6e0a3e);
  assert.equal(keyringSerial(PROC_KEYS, '.machine'), undefined);
  assert.equal(keyringSerial(PROC_KEYS, 'fs-verity'), undefined);
  assert.equal(keyringSerial('', '.fs-verity'), undefined);
  assert.equal(
    keyringSerial('zzzz I------ 1 perm 1f030000 0 0 keyring .fs-verity: empty', '.fs-verity'),
    undefined,
  );
});
