import { parseBounded } from '../limits.js';

/** A mistake in how a command was called: printed without a stack, exit 2. */
export class UsageError extends Error {}

/** --rt-priority of `cmd`: an integer from 0 (normal scheduling) to 99. */
export function parseRtPriority(cmd: string, value: string): number {
  return parseBounded('--rt-priority', value, 'rtPriority', (m) => new UsageError(`${cmd}: ${m}`));
}
