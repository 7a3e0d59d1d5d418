/** A mistake in how a command was called: printed without a stack, exit 2. */
export class UsageError extends Error {}

/** --rt-priority of `cmd`: an integer from 0 (normal scheduling) to 99. */
export function parseRtPriority(cmd: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 99) throw new UsageError(`${cmd}: --rt-priority '${value}' must be an integer from 0 to 99`);
  return n;
}
