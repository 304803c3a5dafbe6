/**
 * Brokers on loopback: the embedded aedes (MQTT 3.1.1, always available) for single-machine
 * setups and tests, and a spawned mosquitto (MQTT 5) for tests and benchmarks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { Aedes } from 'aedes';
import { ResrtError } from './errors.js';

export interface RunningBroker {
  /** mqtt://host:port (append /robot-id for a robot URL). */
  url: string;
  port: number;
  /** Stops the broker and drops every client connection at once, as a crash would. */
  close(): Promise<void>;
}

export interface EmbeddedBrokerOptions {
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  /** Serve MQTT over TLS (mqtts://) with this PEM certificate and key. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Require this username and password from every client. */
  credentials?: { username: string; password: string };
}

export async function startEmbeddedBroker(options: EmbeddedBrokerOptions = {}): Promise<RunningBroker> {
  const host = options.host ?? '127.0.0.1';
  const broker = await Aedes.createBroker({ drainTimeout: 5_000 });
  const creds = options.credentials;
  if (creds) {
    broker.authenticate = (_client, username, password, done) => {
      const ok =
        username === creds.username && password !== undefined && password.toString() === creds.password;
      if (ok) done(null, true);
      else done(Object.assign(new Error('bad username or password'), { returnCode: 4 }), false);
    };
  }
  const sockets = new Set<Socket>();
  const onSocket = (socket: Socket): void => {
    sockets.add(socket);
    socket.setNoDelay(true); // small, latency-bound packets (see connection.ts)
    socket.on('close', () => sockets.delete(socket));
    broker.handle(socket);
  };
  const server = options.tls
    ? createTlsServer({ cert: options.tls.cert, key: options.tls.key }, onSocket)
    : createServer(onSocket);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new ResrtError(
          `embedded MQTT broker cannot listen on ${host}:${options.port ?? 0}: ${err.message}`,
          err.code === 'EADDRINUSE' ? 'pick another port or stop what is listening there' : undefined,
        ),
      ),
    );
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  return {
    url: `${options.tls ? 'mqtts' : 'mqtt'}://${host}:${port}`,
    port,
    async close() {
      if (closed) return;
      closed = true;
      const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await serverClosed;
    },
  };
}

/** Path of the mosquitto binary, or null when it is not installed (it lives in sbin on Debian). */
export function findMosquitto(): string | null {
  const dirs = [
    ...(process.env.PATH ?? '').split(delimiter),
    '/usr/sbin',
    '/usr/local/sbin',
    '/opt/homebrew/sbin',
  ];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, 'mosquitto');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

async function freePort(host: string): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export interface MosquittoOptions {
  /** 0 picks a free port. */
  port?: number;
  /** How long mosquitto may take to accept connections. */
  startTimeoutMs?: number;
}

export async function startMosquitto(options: MosquittoOptions = {}): Promise<RunningBroker> {
  const bin = findMosquitto();
  if (!bin) {
    throw new ResrtError(
      'mosquitto is not installed',
      'install it (Debian/Ubuntu: sudo apt-get install mosquitto; macOS: brew install mosquitto) or use the embedded broker',
    );
  }
  const host = '127.0.0.1';
  const port = options.port || (await freePort(host));
  const dir = mkdtempSync(join(tmpdir(), 'resrt-mosquitto-'));
  const conf = join(dir, 'mosquitto.conf');
  writeFileSync(
    conf,
    [
      `listener ${port} ${host}`,
      'allow_anonymous true',
      'set_tcp_nodelay true',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn(bin, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-4_000);
  });
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once('exit', () => {
      exited = true;
      resolve();
    }),
  );
  child.once('error', () => {
    exited = true;
  });
  const cleanup = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 2_000);
      await exit;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = performance.now() + (options.startTimeoutMs ?? 5_000);
  while (!(await canConnect(host, port))) {
    if (exited || performance.now() > deadline) {
      await cleanup();
      throw new ResrtError(
        `mosquitto did not start on ${host}:${port}: ${stderr.trim() || 'no output'}`,
        'check nothing else listens on that port and that mosquitto runs by hand (mosquitto -v)',
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  let closed = false;
  return {
    url: `mqtt://${host}:${port}`,
    port,
    async close() {
      if (closed) return;
      closed = true;
      await cleanup();
    },
  };
}
