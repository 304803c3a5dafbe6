/**
 * The session dashboard: one page (no frameworks) served with node:http by the learner and by each
 * actor. Live numbers stream as Server-Sent Events; buttons and keyboard teleop POST small JSON
 * commands. Bound to 127.0.0.1 by default; bound anywhere else it refuses to start without a token,
 * and then every request must carry it (?token= or Authorization: Bearer). POSTs also need the
 * X-Resrt header, which a cross-site form cannot set.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { ResrtError } from '../../util/errors.js';
import { controlSchema, type ControlCommand } from '../session/protocol.js';
import { dashboardPage } from './page.js';

export interface DashboardOptions {
  title: string;
  /** 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Required when host is not a loopback address. */
  token?: string;
  /** The live numbers, as JSON-serializable data. */
  snapshot: () => unknown;
  /** A button: robotId '' means "every robot". Returns false for an unknown robot. */
  command: (robotId: string, c: ControlCommand) => boolean;
  teleop: (robotId: string, action: number[] | null) => boolean;
  /** A robot's camera's latest frame as JPEG (GET /frame/{robot}/{camera}.jpg); null: none yet. */
  frame?: (robotId: string, camera: string) => Uint8Array | null;
  /** SSE push period. Default 250 ms. */
  intervalMs?: number;
}

export interface Dashboard {
  url: string;
  port: number;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

const controlBody = z.object({ robot: z.string().default('') }).passthrough();
const teleopBody = z.object({ robot: z.string().default(''), action: z.array(z.number()).nullable() });

function sameToken(given: string | null, token: string): boolean {
  if (given === null) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(token);
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

async function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).byteLength;
    if (size > limit) throw new Error('body too large');
    chunks.push(c as Buffer);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
}

export async function startDashboard(options: DashboardOptions): Promise<Dashboard> {
  const host = options.host ?? '127.0.0.1';
  const token = options.token;
  if (!LOOPBACK.has(host) && !token) {
    throw new ResrtError(
      `the dashboard would listen on ${host} without a token`,
      'pass --token <secret> (anyone who can reach the port could e-stop or teleoperate the robot), or bind to 127.0.0.1',
    );
  }
  if (token !== undefined && token.length < 8)
    throw new ResrtError('the dashboard token is shorter than 8 characters', 'use a longer random token');
  const streams = new Set<ServerResponse>();
  const page = dashboardPage(options.title);

  const send = (res: ServerResponse, code: number, body: unknown, type = 'application/json'): void => {
    const data = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(data);
  };

  const handler = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    if (token) {
      const auth = req.headers.authorization;
      const given = url.searchParams.get('token') ?? (auth?.startsWith('Bearer ') ? auth.slice(7) : null);
      if (!sameToken(given, token)) return send(res, 401, { error: 'token required' });
    }
    if (req.method === 'GET' && url.pathname === '/') return send(res, 200, page, 'text/html; charset=utf-8');
    if (req.method === 'GET' && url.pathname === '/api/snapshot') return send(res, 200, options.snapshot());
    const frameRoute = /^\/frame\/([^/]+)\/([^/]+)\.jpg$/.exec(url.pathname);
    if (req.method === 'GET' && frameRoute) {
      const jpeg =
        options.frame?.(decodeURIComponent(frameRoute[1]), decodeURIComponent(frameRoute[2])) ?? null;
      if (!jpeg) return send(res, 404, { error: 'no frame from this robot and camera yet' });
      res.writeHead(200, { 'content-type': 'image/jpeg', 'cache-control': 'no-store' });
      res.end(Buffer.from(jpeg.buffer, jpeg.byteOffset, jpeg.byteLength));
      return;
    }
    if (req.method === 'GET' && url.pathname === '/events') {
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-store',
        connection: 'keep-alive',
      });
      res.write(`data: ${JSON.stringify(options.snapshot())}\n\n`);
      streams.add(res);
      req.on('close', () => streams.delete(res));
      return;
    }
    if (req.method === 'POST' && (url.pathname === '/api/control' || url.pathname === '/api/teleop')) {
      if (req.headers['x-resrt'] !== '1') return send(res, 403, { error: 'missing X-Resrt header' });
      let body: unknown;
      try {
        body = await readBody(req);
      } catch (err) {
        return send(res, 400, { error: (err as Error).message });
      }
      if (url.pathname === '/api/teleop') {
        const t = teleopBody.safeParse(body);
        if (!t.success) return send(res, 400, { error: 'expected { robot, action: number[] | null }' });
        return send(res, options.teleop(t.data.robot, t.data.action) ? 200 : 404, { ok: true });
      }
      const b = controlBody.safeParse(body);
      const c = controlSchema.safeParse(body);
      if (!b.success || !c.success) return send(res, 400, { error: 'unknown command' });
      return send(res, options.command(b.data.robot, c.data) ? 200 : 404, { ok: true });
    }
    send(res, 404, { error: 'not found' });
  };

  const server = createServer((req, res) => {
    handler(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, { error: (err as Error).message });
      else res.end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new ResrtError(
          `the dashboard cannot listen on ${host}:${options.port ?? 0}: ${err.message}`,
          err.code === 'EADDRINUSE' ? 'pick another --dashboard-port' : undefined,
        ),
      ),
    );
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const timer = setInterval(() => {
    if (streams.size === 0) return;
    let data: string;
    try {
      data = `data: ${JSON.stringify(options.snapshot())}\n\n`;
    } catch {
      return;
    }
    for (const s of streams) s.write(data);
  }, options.intervalMs ?? 250);
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    url: `http://${shownHost}:${port}/${token ? `?token=${encodeURIComponent(token)}` : ''}`,
    port,
    async close() {
      clearInterval(timer);
      for (const s of streams) s.end();
      streams.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
