// "host:port" and "[v6]:port", as listen and peer addresses are written.

const HOST_PORT = /^(?:\[([^\]\s]*)\]|([^[\]\s]*)):(\d{1,5})$/;

/** The host (brackets removed; '' for all addresses) and port, or null if `addr` is not host:port. */
export function parseHostPort(addr: string): { host: string; port: number } | null {
  const m = HOST_PORT.exec(addr);
  if (!m) return null;
  const port = Number(m[3]);
  return port <= 65535 ? { host: m[1] ?? m[2]!, port } : null;
}
