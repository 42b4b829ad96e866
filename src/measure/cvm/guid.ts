/** EFI GUIDs as they sit in firmware images: the first three fields little-endian. */

/** The 16 bytes of `guid` ("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx") as stored in a firmware image. */
export function guidBytes(guid: string): Buffer {
  const hex = guid.replace(/-/g, '');
  const b = Buffer.from(hex, 'hex');
  if (b.length !== 16) throw new TypeError(`not a GUID: ${guid}`);
  return Buffer.concat([
    Buffer.from(b.subarray(0, 4)).reverse(),
    Buffer.from(b.subarray(4, 6)).reverse(),
    Buffer.from(b.subarray(6, 8)).reverse(),
    b.subarray(8),
  ]);
}

/** The text form of 16 GUID bytes read from a firmware image. */
export function guidString(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.subarray(0, 16));
  const h = (s: Buffer) => s.toString('hex');
  return [
    h(Buffer.from(b.subarray(0, 4)).reverse()),
    h(Buffer.from(b.subarray(4, 6)).reverse()),
    h(Buffer.from(b.subarray(6, 8)).reverse()),
    h(b.subarray(8, 10)),
    h(b.subarray(10, 16)),
  ].join('-');
}
