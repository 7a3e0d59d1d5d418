// A typed client of one daemon's ControlService (used by the CLI and tests).
import * as grpc from '@grpc/grpc-js';

import type { WireSpec } from '../dataplane/wire.js';
import { controlService } from '../proto/load.js';
import { type PbCarrierEvent, type PbWireStatus, specToPb } from './convert.js';
import type { MapEvent, MapSnapshot } from '../map/model.js';
import { DIR_TO_PB, type ImpairDir, type Impairment, impairmentToPb } from '../dataplane/impair.js';

export interface PbHealth {
  node: string;
  lab: string;
  pid: number;
  listen: string;
  wires: number;
  unknown_wire: number;
  malformed: number;
  /** frames in the batches counted in malformed */
  malformed_frames: number;
  refused_streams: number;
  tls_refused: number;
  last_tls_refusal: string;
  identity_refused: number;
  event_loop_delay_p99_ms: number;
  event_loop_delay_max_ms: number;
  refused_connections: number;
  last_connection_refusal: string;
  tls: { names: string[]; not_after: number; serial: string; rotations: number; last_rotation_error: string } | null;
  peers: Array<{ node: string; address: string; inbound: boolean; outbound: boolean; reconnects: number; frames_in: number; frames_out: number; last_error: string; queued_bytes: number }>;
  rt_priority: number;
  keeps_freed_memory: boolean;
  /** '' or what was wrong with the state file at start */
  state_file: string;
  /** wires of the state file not re-created yet */
  restoring: number;
}

export interface PbCaptureResponse {
  interfaces: Array<{ id: number; name: string; description: string }>;
  frames: Array<{ interface_id: number; timestamp_us: number; outbound: boolean; original_length: number; data: Buffer }>;
  ring_done: boolean;
  drops: number;
}

export class ControlClient {
  private readonly client: grpc.Client & Record<string, (req: unknown, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void>;

  constructor(readonly address: string) {
    const Ctor = controlService();
    // A local socket: retry it often. grpc-js's default backoff (1 s growing
    // by 1.6x to 120 s) left `up` waiting out a 20 s backoff for a daemon that
    // had been listening for seconds (it started slowly on a loaded machine).
    this.client = new Ctor(address, grpc.credentials.createInsecure(), { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 1000 }) as never;
  }

  private call<T>(method: string, req: unknown, timeoutMs = 30000): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client[method]!(req, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  }

  async addWire(spec: WireSpec): Promise<PbWireStatus> {
    const res = await this.call<{ wire: PbWireStatus }>('AddWire', { wire: specToPb(spec) });
    return res.wire;
  }

  async removeWire(uid: number): Promise<void> {
    await this.call('RemoveWire', { uid });
  }

  async setImpair(end: string, dir: ImpairDir, imp: Impairment): Promise<PbWireStatus> {
    return (await this.call<{ wire: PbWireStatus }>('SetImpair', { end, direction: DIR_TO_PB[dir], impairment: impairmentToPb(imp) })).wire;
  }

  async resetImpair(end: string, dir: ImpairDir): Promise<PbWireStatus> {
    return (await this.call<{ wire: PbWireStatus }>('ResetImpair', { end, direction: DIR_TO_PB[dir] })).wire;
  }

  async listWires(): Promise<PbWireStatus[]> {
    return (await this.call<{ wires: PbWireStatus[] }>('ListWires', {})).wires;
  }

  async setLinkCable(end: string, plugged: boolean): Promise<PbWireStatus> {
    return (await this.call<{ wire: PbWireStatus }>('SetLinkCable', { end, cable: plugged ? 'CABLE_STATE_PLUGGED' : 'CABLE_STATE_PULLED' })).wire;
  }

  async listLinkEvents(end = ''): Promise<PbCarrierEvent[]> {
    return (await this.call<{ events: PbCarrierEvent[] }>('ListLinkEvents', { end })).events;
  }

  health(timeoutMs = 30000): Promise<PbHealth> {
    return this.call<PbHealth>('Health', {}, timeoutMs);
  }

  /** Server-streaming capture of wire ends on this daemon; `token`: a lab's capture token, sent as `authorization: Bearer`. */
  capture(req: { wires: string[]; follow: boolean; count: number; duration_ms: number }, token?: string): grpc.ClientReadableStream<PbCaptureResponse> {
    const md = new grpc.Metadata();
    if (token !== undefined) md.set('authorization', `Bearer ${token}`);
    return (this.client as unknown as { Capture(r: unknown, m: grpc.Metadata): grpc.ClientReadableStream<PbCaptureResponse> }).Capture(req, md);
  }

  /** This daemon's part of the live link map (docs/map.md). */
  async getMap(): Promise<MapSnapshot> {
    return (await this.call<{ map: MapSnapshot }>('GetMap', {})).map;
  }

  /** The map as a stream: a full map first, then changes; cancel() ends it. */
  watchMap(token?: string): grpc.ClientReadableStream<MapEvent> {
    const md = new grpc.Metadata();
    if (token !== undefined) md.set('authorization', `Bearer ${token}`);
    return (this.client as unknown as { WatchMap(r: unknown, m: grpc.Metadata): grpc.ClientReadableStream<MapEvent> }).WatchMap({}, md);
  }

  close(): void {
    this.client.close();
  }
}
