// What the CNI plugin (cni/patchwire-cni.c) and the daemon say to each other
// over the daemon's CNI socket: one JSON object each way per connection.

export const DEFAULT_CNI_SOCKET = '/run/patchwire/cni.sock';

/**
 * How long the plugin waits for the daemon's answer (DAEMON_TIMEOUT_MS in
 * cni/patchwire-cni.c; test/bounds.test.ts checks they are equal).
 */
export const CNI_DAEMON_TIMEOUT_MS = 10000;

/** One entry of GC's cni.dev/valid-attachments: an attachment the runtime still has. */
export interface CniAttachment {
  containerId: string;
  ifName: string;
}

export interface CniRequest {
  command: 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC';
  cniVersion: string;
  /** network name from the configuration */
  network: string;
  containerId: string;
  /** path of the pod's network namespace ('' on some DELs) */
  netns: string;
  ifName: string;
  namespace: string;
  pod: string;
  podUid: string;
  /** GC only: the attachments to keep (the plugin passes the runtime's list as it came) */
  validAttachments?: CniAttachment[];
}

/** CNI spec error codes used here (SPEC.md, "Error"); 100 and up are ours. */
export const CNI_ERR = {
  containerUnknown: 3,
  invalidEnv: 4,
  io: 5,
  decode: 6,
  invalidConfig: 7,
  tryAgain: 11,
  notAvailable: 50,
  /** CHECK: a wire of the pod is missing or broken */
  wireBroken: 100,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
  }
}

const COMMANDS = ['ADD', 'DEL', 'CHECK', 'STATUS', 'GC'];

/** cni.dev/valid-attachments: [{"containerID": "...", "ifname": "..."}, ...] (CNI spec 1.1.0, GC). */
function parseAttachments(v: unknown): CniAttachment[] {
  if (!Array.isArray(v)) throw new CniError(CNI_ERR.invalidConfig, 'GC request lacks cni.dev/valid-attachments (an array); nothing is collected without it', 'cni.dev/valid-attachments');
  return v.map((a, i) => {
    const o = typeof a === 'object' && a !== null && !Array.isArray(a) ? (a as Record<string, unknown>) : null;
    if (!o || typeof o.containerID !== 'string' || o.containerID === '') throw new CniError(CNI_ERR.invalidConfig, `cni.dev/valid-attachments[${i}] has no containerID string`, 'cni.dev/valid-attachments');
    if (o.ifname !== undefined && typeof o.ifname !== 'string') throw new CniError(CNI_ERR.invalidConfig, `cni.dev/valid-attachments[${i}].ifname is not a string`, 'cni.dev/valid-attachments');
    return { containerId: o.containerID, ifName: (o.ifname as string | undefined) ?? '' };
  });
}

/** Parses and checks a request; a CniError names what is wrong. */
export function parseCniRequest(text: string): CniRequest {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new CniError(CNI_ERR.decode, `request is not JSON: ${(err as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new CniError(CNI_ERR.decode, 'request is not a JSON object');
  const o = v as Record<string, unknown>;
  const str = (k: string): string => {
    const x = o[k] ?? '';
    if (typeof x !== 'string') throw new CniError(CNI_ERR.decode, `request field ${k} is not a string`);
    return x;
  };
  const command = str('command');
  if (!COMMANDS.includes(command)) throw new CniError(CNI_ERR.invalidEnv, `command '${command}' is not one of ${COMMANDS.join(', ')}`, 'CNI_COMMAND');
  const req: CniRequest = {
    command: command as CniRequest['command'],
    cniVersion: str('cniVersion'),
    network: str('network'),
    containerId: str('containerId'),
    netns: str('netns'),
    ifName: str('ifName'),
    namespace: str('namespace'),
    pod: str('pod'),
    podUid: str('podUid'),
  };
  if (req.command === 'ADD' || req.command === 'CHECK') {
    const missing = (['containerId', 'netns', 'namespace', 'pod'] as const).filter((k) => req[k] === '');
    if (missing.length) throw new CniError(CNI_ERR.invalidEnv, `${req.command} request lacks ${missing.join(', ')}`);
    if (!req.netns.startsWith('/')) throw new CniError(CNI_ERR.invalidEnv, `network namespace '${req.netns}' is not an absolute path`, 'CNI_NETNS');
  }
  if (req.command === 'DEL' && req.containerId === '') throw new CniError(CNI_ERR.invalidEnv, 'DEL request lacks containerId', 'CNI_CONTAINERID');
  if (req.command === 'GC') req.validAttachments = parseAttachments(o.validAttachments);
  return req;
}
