/**
 * Imported for its effect, before onnxruntime-node, by every module that loads onnxruntime or
 * starts a worker thread that may.
 *
 * onnxruntime 1.29+ on Linux and macOS sends usage telemetry to Microsoft (a process event, then
 * session, model and error events), keeps a device identifier and an offline event cache under
 * ~/.cache/Microsoft/DeveloperTools/.onnxruntime, and leaves an empty mat-debug-<pid>.log in the
 * temp directory of every process that opens a session. A runtime on a robot should neither call
 * out nor fill its disk, so resrt opts out through onnxruntime's own switch, read once when it
 * creates its environment (at the first session): ORT_DISABLE_TELEMETRY=1. Whoever wants the
 * telemetry sets ORT_DISABLE_TELEMETRY=0 before starting resrt; an explicit value is kept.
 * (onnxruntime itself stays quiet where CI, GITHUB_ACTIONS or another CI service's variable is
 * set, so a CI runner never shows the traces a robot or a workstation would collect.)
 *
 * Only the main thread's process.env reaches native code (a worker's is a copy), and onnxruntime's
 * environment is one per process: hence modules that start workers import this too.
 */
import { isMainThread } from 'node:worker_threads';

const ORT_TELEMETRY_SWITCH = 'ORT_DISABLE_TELEMETRY';

if (isMainThread && process.env[ORT_TELEMETRY_SWITCH] === undefined) process.env[ORT_TELEMETRY_SWITCH] = '1';
