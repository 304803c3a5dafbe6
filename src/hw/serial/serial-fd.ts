/**
 * Opens a serial device as a plain non-blocking file descriptor, configured (raw 8N1, baud rate,
 * exclusive lock) by serialport's own native open, but without the SerialPort class and its
 * native poller: that poller is what aborts the process in a worker thread, while the open and
 * close calls are ordinary async N-API work and run in any thread. The fd is then read and
 * written with fs calls by FdTransport.
 */
import { asyncClose, asyncOpen } from '@serialport/bindings-cpp/dist/load-bindings.js';
import { ResrtError } from '../../util/errors.js';
import { FdTransport } from './fd-transport.js';

/** What @serialport/bindings-cpp's native open takes (its OpenOptions with the defaults it applies itself). */
interface NativeOpenOptions {
  path: string;
  baudRate: number;
  dataBits: 8;
  stopBits: 1;
  parity: 'none';
  rtscts: false;
  xon: false;
  xoff: false;
  xany: false;
  hupcl: true;
  lock: true;
  vmin: 1;
  vtime: 0;
}

const nativeOpen = asyncOpen as (path: string, options: NativeOpenOptions) => Promise<number>;
const nativeClose = asyncClose as (fd: number) => Promise<void>;

/**
 * The device at `path` as an fd opened O_RDWR | O_NOCTTY | O_NONBLOCK, in raw mode at `baudRate`
 * and locked against a second opener (flock), as serialport opens it.
 */
export async function openSerialFd(path: string, baudRate: number): Promise<number> {
  if (process.platform === 'win32') {
    throw new ResrtError(
      `the fd serial transport needs a POSIX tty; ${path} is on Windows`,
      "use the serialport transport on Windows (SerialLink's transport: 'serialport', on the main thread)",
    );
  }
  try {
    return await nativeOpen(path, {
      path,
      baudRate,
      dataBits: 8,
      stopBits: 1,
      parity: 'none',
      rtscts: false,
      xon: false,
      xoff: false,
      xany: false,
      hupcl: true,
      lock: true,
      vmin: 1,
      vtime: 0,
    });
  } catch (err) {
    throw new ResrtError(
      `cannot open serial port ${path}: ${err instanceof Error ? err.message : String(err)}`,
      'check the device path (ls /dev/tty*), that no other program holds it, and that you may open it (dialout group)',
    );
  }
}

/** Closes an fd from openSerialFd (through the binding: fs.close warns about fds it did not open). */
export function closeSerialFd(fd: number): Promise<void> {
  return nativeClose(fd);
}

/** openSerialFd, wrapped as a FdTransport that closes through the binding. */
export async function openFdTransport(path: string, baudRate: number): Promise<FdTransport> {
  const fd = await openSerialFd(path, baudRate);
  return new FdTransport(fd, { closeFd: closeSerialFd });
}
